"""Whether an image lies in the range a model was trained on, and the normalization it is
denoised with: the model's stored one (``normalize="model"``, the default: later stacks from the
same microscope are scaled as the training data was) or one fitted on the image itself
(``normalize="image"``).

The rule. The stored normalization maps the training data's 0.1 and 99.9 percentiles (8-bit
data: 0 and 255) to 0 and 1, so the network saw inputs in [0, 1] — one *training range* — and
almost nothing outside. An image is refused (:class:`~napari_b2u.errors.RangeMismatch`) when,
after that map, in some channel

- **most of its pixels lie more than one whole training range outside [0, 1]** (below -1 or
  above 2; more than :data:`OUTSIDE_SHARE` of them), or
- **its own spread is below** :data:`MIN_SPREAD` **of the training range** (its 0.1–99.9
  percentile span, else its full span; a constant image is not refused for this).

Why these bounds: a brighter or dimmer acquisition of the same sample stays within a range of
the training data for most of its pixels, and bright spots, saturated areas or an offset
background are a minority — the margin and the majority leave both alone. An image whose typical
pixel is a whole range beyond anything the network saw is on another scale (a model trained on
float data near 1e12 given an 8-bit image, a model for 8-bit data given 16-bit counts in the
thousands): the network extrapolates, and its output — cast back to the input's type — was one
constant value. The spread bound: the network computes in float32 (about 7 significant digits)
with activations of the order of the training range, so an image spanning less than 1e-4 of it
keeps at most ~3 digits of its variation through the network, and far less in practice (the
constant output came with a spread of 1e-9); an image that faint on the training scale has
noise far below anything the model learned from.

The sample: the central crops (:data:`SAMPLE_SIDE` px) of up to :data:`SAMPLE_FRAMES` evenly
spaced frames — a lazy stack reads no more than that, and the in-memory and OME-Zarr paths fit
``normalize="image"`` on the same pixels, so their outputs stay equal.
"""

from __future__ import annotations

import numpy as np

from ..data import Normalization, fit_normalization
from ..errors import InputError, RangeMismatch
from .predict import read_frames

#: how a stack is scaled before the network: the model's stored normalization, or its own
NORMALIZE = ("model", "image")
#: an image is out of range when more than this share of a channel's pixels lie more than
#: :data:`MARGIN` training ranges outside the training range
OUTSIDE_SHARE = 0.5
MARGIN = 1.0
#: ... or when its spread is below this fraction of the training range
MIN_SPREAD = 1e-4
SAMPLE_FRAMES, SAMPLE_SIDE = 16, 512
_PERCENTILES = (0.1, 99.9)  # those of the training normalization (data.fit_normalization)


def check_normalize(normalize) -> str:
    if normalize not in NORMALIZE:
        raise InputError(f"unknown normalize={normalize!r}: use 'model' (the scaling of the "
                         "model's training data) or 'image' (this image on its own)")
    return normalize


def sample_frames(raw) -> np.ndarray:
    """(k, C, h, w) raw pixels of ``raw`` ((N, C, Y, X): an array or a lazy frame reader): the
    central crops of up to :data:`SAMPLE_FRAMES` evenly spaced frames."""
    n, _, h, w = raw.shape
    pick = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_FRAMES)).round().astype(int))
    ch, cw = min(SAMPLE_SIDE, h), min(SAMPLE_SIDE, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    region = (y0, y0 + ch, x0, x0 + cw)
    return np.concatenate([read_frames(raw, [f], region) for f in pick])  # a frame per read


def _span(v: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(x) for x in np.percentile(v, _PERCENTILES))
    return (lo, hi) if hi > lo else (float(v.min()), float(v.max()))


def check_range(norm: Normalization, sample: np.ndarray) -> None:
    """Raise :class:`~napari_b2u.errors.RangeMismatch` when ``sample`` (k, C, h, w raw pixels)
    lies far outside the range of the data ``norm`` was fitted on (the module's rule)."""
    off, sc = norm.as_arrays(sample.shape[1], np.float64)
    for c in range(sample.shape[1]):
        v = sample[:, c].reshape(-1)
        v = v[::max(1, v.size // 1_000_000)].astype(np.float64)  # a strided million at most
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        z = (v - off.flat[c]) / sc.flat[c]
        outside = float(np.mean((z < -MARGIN) | (z > 1 + MARGIN)))
        lo, hi = _span(v)
        spread = (hi - lo) / float(sc.flat[c])
        if outside <= OUTSIDE_SHARE and not 0 < spread < MIN_SPREAD:
            continue
        where = f" in channel {c}" if sample.shape[1] > 1 else ""
        t0, t1 = float(off.flat[c]), float(off.flat[c] + sc.flat[c])
        why = (f"{outside:.0%} of its pixels lie more than a whole training range outside it"
               if outside > OUTSIDE_SHARE else
               f"its values vary over only {spread:.2g} of the training range")
        raise RangeMismatch(
            f"the image's values do not fit the range this model was trained on{where} "
            f"(the image: {lo:.4g} to {hi:.4g}; the training data: {t0:.4g} to {t1:.4g}): "
            f"{why}, so the network would return a near-constant image. Denoise it with "
            "normalize='image' (CLI: --normalize image) to scale the image on its own values, "
            "or use a model trained on data like it",
            channel=c, outside=outside, spread=spread, image=(lo, hi), training=(t0, t1))


def normalization_for(model, raw, normalize: str = "model") -> Normalization:
    """The normalization to denoise ``raw`` ((N, C, Y, X): an array or a lazy frame reader)
    with: the model's, once :func:`check_range` passes; or (``"image"``) one fitted on the
    image's sample as training would fit it (8-bit: /255, else its 0.1–99.9 percentiles)."""
    sample = sample_frames(raw)
    if check_normalize(normalize) == "image":
        return fit_normalization(sample, "auto")
    check_range(model.normalization, sample)
    return model.normalization
