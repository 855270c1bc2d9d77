"""Stack context: a frame denoised with its neighbours along the stack's T or Z axis.

A z-stack or a time-lapse shows the same structure again one slice or one time point away,
with noise independent of the frame's own; a network that sees the neighbours as extra input
channels (the centre frame's blind spot untouched: their noise does not reveal the centre's)
can use that redundancy. This module is the rule for which frames are neighbours
(:func:`context_index`: reflected at the stack's ends), which axis (:func:`context_axis`) and
how many (:func:`measure_context`: from the noisy data alone). numpy only.

How ``context="auto"`` decides: a linear predictor of each pixel from the ring of its 8
neighbours in its own frame (never the pixel itself: a J-invariant predictor, so its error is
the signal's misprediction plus the noise variance, which no predictor removes) is compared with
the same predictor given, for j = 1 … k, the pixel and its ring in the frames j before and j
after. Where the neighbours show the same structure (a static field, fine z-steps) they
predict the pixel better and the error falls; unrelated frames (W2S fields of view) or frames
that moved gain nothing, and k stays 0. Both fits are least squares on half of up to 200 000
sampled pixels and scored on the other half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .data import SAMPLE_AXES, Layout
from .errors import InputError

#: the largest context a setting may ask for (frames on each side)
MAX_CONTEXT = 8
#: auto: the largest k it measures
AUTO_MAX = 4
#: auto: a context is used only when it lowers the predictor's error by this fraction at least
#: (of the k = 0 error, noise included) ...
MIN_GAIN = 0.01
#: ... and each further pair of frames must lower it by this much more
MIN_STEP = 0.005
#: pixels sampled for the auto fit
SAMPLES = 200_000


def context_axis(layout: Layout, axis: str | None = "auto") -> str | None:
    """The stack axis the neighbours are taken along: ``axis`` when given (it must be one of
    the layout's T, Z, S, I, Q axes), else Z when there is one (the z-steps of a confocal
    stack are the finer redundancy), else T, else the only other sample axis; None when the
    layout has no stack axis (a single 2D image)."""
    samples = [a for a in layout.axes if a in SAMPLE_AXES]
    if axis not in (None, "auto"):
        a = str(axis).upper()
        if a not in samples:
            raise InputError(f"context_axis={axis!r}: the stack's axes are {layout.axes!r}; "
                             f"neighbours can be taken along {', '.join(samples) or 'none'}")
        return a
    for a in ("Z", "T"):
        if a in samples:
            return a
    return samples[0] if len(samples) == 1 else None


def axis_length(layout: Layout, axis: str) -> int:
    return layout.shape[layout.axes.index(axis)]


def context_index(layout: Layout, axis: str, k: int) -> np.ndarray:
    """(N, 2k + 1) indices into the (N, C, Y, X) frames of ``layout``: each frame itself, then
    its neighbours j = 1 … k before and after it along ``axis`` (-1, +1, -2, +2, …), reflected
    at the stack's ends (frame 0's neighbour -1 is frame 1). Needs k < the axis length."""
    samples = [(a, s) for a, s in zip(layout.axes, layout.shape) if a in SAMPLE_AXES]
    sizes = [s for _, s in samples]
    n = layout.n_frames
    if k == 0 or not samples:
        return np.arange(n)[:, None]
    pos = [a for a, _ in samples].index(axis)
    length = sizes[pos]
    if k >= length:
        raise InputError(f"a context of {k} frames on each side needs at least {k + 1} frames "
                         f"along {axis}; the stack has {length}")
    coords = list(np.unravel_index(np.arange(n), sizes))
    out = [np.arange(n)]
    for j in range(1, k + 1):
        for d in (-j, j):
            c = coords[pos] + d
            c = np.where(c < 0, -c, c)
            c = np.where(c >= length, 2 * (length - 1) - c, c)
            moved = coords.copy()
            moved[pos] = c
            out.append(np.ravel_multi_index(moved, sizes))
    return np.stack(out, axis=1)


@dataclass
class ContextReport:
    """What ``context="auto"`` measured and chose (also for ``napari-b2u check``)."""

    axis: str | None  # the stack axis measured along (None: no stack axis)
    length: int  # frames along it
    gains: list = field(default_factory=list)  # error reduction for k = 1 … AUTO_MAX
    chosen: int = 0
    reason: str = ""

    def describe(self) -> str:
        if self.axis is None or not self.gains:
            return f"stack context: none ({self.reason})"
        g = ", ".join(f"k={k} {100 * v:+.1f} %" for k, v in enumerate(self.gains, 1))
        return (f"stack context along {self.axis}: {self.chosen} frame(s) on each side "
                f"({self.reason}; predictor error change {g})")

    def to_dict(self) -> dict:
        return asdict(self)


def _ring(planes: np.ndarray) -> np.ndarray:
    """The mean of each pixel's 8 neighbours (reflected at the border), per plane."""
    p = np.pad(planes, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = planes.shape[-2:]
    total = sum(p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return total / 8.0


def measure_context(frames: np.ndarray, layout: Layout, axis: str | None,
                    max_k: int = AUTO_MAX, seed: int = 0) -> ContextReport:
    """How many neighbours on each side help, from the normalized (N, C, Y, X) ``frames``
    alone (see the module docstring); channels are measured together."""
    if axis is None:
        return ContextReport(None, 1, reason="a single image: no stack axis")
    length = axis_length(layout, axis)
    max_k = min(max_k, length - 1)
    if max_k < 1:
        return ContextReport(axis, length, reason=f"{length} frame along {axis}")
    index = context_index(layout, axis, max_k)
    n, c, h, w = frames.shape
    rng = np.random.default_rng(seed)
    m = min(SAMPLES, n * c * h * w)
    f = rng.integers(0, n, m)
    ch = rng.integers(0, c, m)
    y = rng.integers(0, h, m)
    x = rng.integers(0, w, m)
    used = np.unique(index[np.unique(f)])
    data = np.asarray(frames[used] if used.size < n else frames, np.float64)
    where = np.full(n, -1)
    where[used] = np.arange(used.size)
    ring = _ring(data.reshape(-1, h, w)).reshape(data.shape)

    def at(arr, frame):
        return arr[where[frame], ch, y, x]

    target = at(data, f)
    half = rng.permutation(m) < m // 2  # one split for every k: the gains are compared
    feats = [np.ones(m), at(ring, f)]
    errors = [_held_out_error(np.stack(feats, 1), target, half)]
    for j in range(1, max_k + 1):
        before, after = index[f, 2 * j - 1], index[f, 2 * j]
        feats += [at(data, before) + at(data, after), at(ring, before) + at(ring, after)]
        errors.append(_held_out_error(np.stack(feats, 1), target, half))
    base = errors[0]
    gains = [float(1.0 - e / base) if base > 0 else 0.0 for e in errors[1:]]
    chosen = 0
    if gains and gains[0] >= MIN_GAIN:
        chosen = 1
        while chosen < len(gains) and gains[chosen] - gains[chosen - 1] >= MIN_STEP:
            chosen += 1
    if chosen:
        reason = (f"neighbours lower a pixel predictor's error by {100 * gains[chosen - 1]:.1f} "
                  f"% (each further pair by < {100 * MIN_STEP:.1f} %)")
    else:
        reason = (f"neighbouring frames predict a frame no better (by "
                  f"{100 * max(gains, default=0.0):.1f} %, < {100 * MIN_GAIN:.0f} %): unrelated "
                  "or moving frames")
    return ContextReport(axis, length, [round(g, 4) for g in gains], chosen, reason)


def _held_out_error(a: np.ndarray, t: np.ndarray, half: np.ndarray) -> float:
    """Least squares on the samples in ``half``, mean squared error on the others."""
    coef, *_ = np.linalg.lstsq(a[half], t[half], rcond=None)
    r = a[~half] @ coef - t[~half]
    return float(np.mean(r * r))


def decide_context(setting, axis_setting, frames, layout: Layout, takes_context: bool,
                   method: str = "") -> ContextReport:
    """The context a run uses: ``setting`` 'auto' (measured, :func:`measure_context`) or a
    number of frames on each side; reduced where the stack is too short (its ends are
    reflected, so at least k + 1 frames along the axis), 0 for methods that cannot take it and
    for frames that are not in memory (``frames`` not an array)."""
    axis = context_axis(layout, axis_setting)
    auto = setting in (None, "auto")
    k = AUTO_MAX if auto else int(setting)
    if axis is None or k == 0:
        why = "a single image: no stack axis" if axis is None else "context=0: each frame alone"
        return ContextReport(axis, axis_length(layout, axis) if axis else 1, reason=why)
    length = axis_length(layout, axis)
    if not takes_context:
        if not auto:
            return ContextReport(axis, length, chosen=k, reason="asked for")  # set_context says
        return ContextReport(axis, length, reason=f"method {method!r} cannot take context")
    if not isinstance(frames, np.ndarray):
        return ContextReport(axis, length, reason="the stack is larger than memory: stack "
                             "context needs its frames in memory; each frame alone")
    if auto:
        return measure_context(frames, layout, axis, k)
    if k >= length:
        fit = max(0, (length - 1) // 2)
        return ContextReport(axis, length, chosen=fit, reason=(
            f"{k} frames on each side asked for, but the stack has {length} along {axis}: "
            f"{fit} used"))
    return ContextReport(axis, length, chosen=k, reason="asked for")


def context_report(stack, axes: str | None = None, axis: str | None = "auto") -> ContextReport:
    """What ``context="auto"`` would choose for ``stack`` (any layout), measured from the stack
    alone (the predictor's errors are relative: raw units do)."""
    from .data import validate_stack

    arr, ax = validate_stack(stack, axes)
    layout = Layout(ax, arr.shape)
    return decide_context("auto", axis, layout.to_frames(arr), layout, True)
