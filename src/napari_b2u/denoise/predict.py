"""Predicting with a trained network: the views of the test-time ensemble, the tiles and
batches a pass is cut into, and the one loop that denoises frames batch by batch and tile by
tile — for a whole stack in memory and for a block of an out-of-core run alike (the same
tiles, batches and order, so both give identical pixels).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..device import retry_on_oom
from ..errors import InputError
from .tiling import keep, tiles_meeting

#: pixels per network input batch (frames x copies x H x W), by device type. On CPU, batching
#: gains little and a batch is what a cancel waits for: 1 MP is ~3 s on 2 cores (CPU preset net)
PIXEL_BUDGET = {"cuda": 16 * 2**20, "mps": 4 * 2**20, "cpu": 2**20}
#: frames larger than this (per side) are tiled
TILE_SIZE = {"cuda": 2048, "mps": 1024, "cpu": 1024}
TILE_OVERLAP = 64
#: the smallest tile an out-of-memory retry goes down to
MIN_TILE = 128

#: network pixels of ONE frame (channels × H × W × copies, summed over the views) that
#: ``tta="auto"`` may spend, by device type — a frame's views never depend on the frames it is
#: denoised with (alone, in a stack, a crop or an out-of-core block: the same pixels). On 2 CPU
#: cores 8 Mpx take ~14 s with the CPU preset network: the 4 rotations up to 2 Mpx frames
#: (1448²), 2 views up to 4 Mpx, one beyond; a GPU ensembles any ordinary frame.
TTA_AUTO_FRAME_PIXELS = {"cuda": 2**31, "mps": 2**26, "cpu": 2**23}
#: the most views ``tta="auto"`` takes, by device type: on real stacks of 20 × 512² the 4
#: rotations gained +0.16 dB over one view and all 8 only 0.02 more, for twice the time
#: (docs/benchmarks.md); a GPU has the time
TTA_AUTO_MAX_VIEWS = {"cuda": 8, "mps": 4, "cpu": 4}
#: the view counts an ensemble takes: the 8 flips/rotations, the 4 rotations, two, one
VIEW_COUNTS = (8, 4, 2, 1)

#: the ensembling choices a front end offers: (value of ``tta``, description)
TTA_CHOICES = (
    ("auto", "auto: as many views as stay fast for one frame on the device"),
    (False, "off: one pass"),
    (2, "2 views (2× the time)"),
    (4, "4 rotations (4× the time)"),
    (True, "all 8 flips and rotations (8× the time)"),
)


def ensemble_views(method, shape, output: str, dev, tta="auto") -> int:
    """How many dihedral views inference averages for frames of ``shape`` ((C, Y, X), or a
    stack's (N, C, Y, X) of which only one frame counts). ``tta``: True (8), False (1), a count
    of 1, 2, 4 or 8, or 'auto': the most views, up to :data:`TTA_AUTO_MAX_VIEWS`, whose passes
    over ONE frame fit :data:`TTA_AUTO_FRAME_PIXELS` — so a frame gets the same views, and the
    same pixels, alone, in a stack, in a crop or in a block out of core."""
    if isinstance(tta, bool):
        return 8 if tta else 1
    if tta == "auto":
        c, h, w = shape[-3:]
        pixels = c * h * w * method.copies_per_image(output)
        budget = TTA_AUTO_FRAME_PIXELS.get(dev.type, TTA_AUTO_FRAME_PIXELS["cpu"])
        most = TTA_AUTO_MAX_VIEWS.get(dev.type, TTA_AUTO_MAX_VIEWS["cpu"])
        return next(v for v in VIEW_COUNTS if v <= most and (v * pixels <= budget or v == 1))
    if isinstance(tta, (int, np.integer)) and int(tta) in VIEW_COUNTS:
        return int(tta)
    raise InputError(f"tta={tta!r}: use True (8 views), False (1), 'auto', or a number of "
                     f"views: {', '.join(map(str, sorted(VIEW_COUNTS)))}")


def dihedral(t: torch.Tensor, view: int, inverse: bool = False) -> torch.Tensor:
    """View ``view`` (0..7) of the 8 flips/rotations of (…, H, W), or its inverse."""
    k, flip = view % 4, view >= 4
    if not inverse:
        t = torch.rot90(t, k, (-2, -1)) if k else t
        return t.flip(-1) if flip else t
    t = t.flip(-1) if flip else t
    return torch.rot90(t, -k, (-2, -1)) if k else t


def predict_view(method, net, t: torch.Tensor, output: str, view: int) -> torch.Tensor:
    """``method``'s prediction of ``t`` seen in dihedral view ``view``, mapped back (float32):
    one term of the test-time ensemble."""
    return dihedral(method.predict(net, dihedral(t, view), output).float(), view, inverse=True)


def predict_tile(model, net, x: np.ndarray, output: str, dev, views: int = 1):
    """Generator: the prediction of one tile ``x`` (B, C, h, w, normalized) by ``model`` (a
    :class:`~.model.TrainedModel`, ``net`` its network) as the mean over ``views`` dihedral
    views, blended with its Gaussian filter when the floor chose a blend; yields between
    views, returns numpy."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    acc = None
    for v in range(views):
        with torch.no_grad():
            pred = predict_view(model.method, net, t, output, v)
        acc = pred if acc is None else acc + pred
        if v < views - 1:
            yield
    acc = acc / views
    if model.blend:
        from ..methods.classical import gaussian_filter

        w = float(model.blend["weight"])
        filt = torch.cat([gaussian_filter(t[:, i:i + 1].float(), float(s))
                          for i, s in enumerate(model.blend["gauss_sigma"])], 1)
        acc = w * acc + (1.0 - w) * filt
    return acc.cpu().numpy()


def predict_region(model, net, x: np.ndarray, output: str, dev, views: int, tile: int,
                   overlap: int, size: tuple[int, int], region=None, origin=(0, 0)):
    """Generator: the prediction of rows/columns ``region`` (y0, y1, x0, x1; default: all) of
    frames of ``size`` (h, w), from ``x``: the normalized frames' pixels from ``origin`` (the
    top-left of what was read) on. Every tile of the whole frame whose kept part meets the
    region is computed, in order, and its kept part written (later tiles win where two meet),
    so a region gets the very pixels the whole frame gets. Yields after every pass but the
    last; returns (B, C, y1 - y0, x1 - x0) float32."""
    h, w = size
    y0, y1, x0, x1 = region or (0, h, 0, w)
    oy, ox = origin
    th, tw = min(tile, h), min(tile, w)
    # the centre frame's channels (with stack context, x also holds its neighbours')
    out = np.empty((x.shape[0], x.shape[1] // model.method.window, y1 - y0, x1 - x0),
                   np.float32)
    starts = [(ty, tx) for ty in tiles_meeting(y0, y1, h, tile, overlap)
              for tx in tiles_meeting(x0, x1, w, tile, overlap)]
    for k, (ty, tx) in enumerate(starts):
        part = x[:, :, ty - oy:ty - oy + th, tx - ox:tx - ox + tw]
        pred = yield from predict_tile(model, net, part, output, dev, views)
        ky0, ky1 = keep(ty, th, h, overlap)
        kx0, kx1 = keep(tx, tw, w, overlap)
        ky0, ky1, kx0, kx1 = max(ky0, y0), min(ky1, y1), max(kx0, x0), min(kx1, x1)
        out[:, :, ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0] = \
            pred[:, :, ky0 - ty:ky1 - ty, kx0 - tx:kx1 - tx]
        if k < len(starts) - 1:
            yield
    return out


def read_frames(raw, ids, region=None) -> np.ndarray:
    """Frames ``ids`` (sorted) of ``raw`` (an array or a lazy frame reader), rows/columns
    ``region`` (y0, y1, x0, x1): each run of consecutive frames read at once."""
    y0, y1, x0, x1 = region if region is not None else (0, None, 0, None)
    if isinstance(raw, np.ndarray):
        return raw[np.asarray(ids)][:, :, y0:y1, x0:x1]
    runs = np.split(np.asarray(ids), np.flatnonzero(np.diff(ids) != 1) + 1)
    return np.concatenate([raw.read(int(r[0]), int(r[-1]) + 1, y0, y1, x0, x1) for r in runs])


def network_inputs(norm, raw, rows, region=None) -> np.ndarray:
    """The normalized network input of the frames whose stack context is ``rows`` (B, W):
    each frame (``rows[:, 0]``) and its neighbours, read once each, channels stacked."""
    ids, where = np.unique(rows, return_inverse=True)
    frames = norm.apply(read_frames(raw, ids, region))
    b, w = rows.shape
    return frames[where.reshape(-1)].reshape((b, w * frames.shape[1]) + frames.shape[2:])


def denoise_frames(model, raw, out: np.ndarray, output: str, dev, tile: int, overlap: int,
                   batch: int, views: int, size: tuple[int, int], region=None, origin=(0, 0),
                   shrink_tile: bool = True, rows=None, read_region=None):
    """Generator: denoise frames ``raw`` (N, C, …: an array or a lazy frame reader, raw units,
    holding the rows/columns from ``origin`` on of frames of ``size``) into ``out`` (N, C, rows,
    columns of ``region``, the output's float type), ``batch`` frames at a time, tile by tile
    (:func:`predict_region`). With stack context, ``rows`` (N, 2k + 1) names each output
    frame's frame and neighbours in ``raw``, read with rows/columns ``read_region``. Yields the
    frames done after every pass (unchanged within a batch): a consumer can cancel between any
    two. Out of memory: the batch is halved, then (``shrink_tile``) the tile, down to
    :data:`MIN_TILE` px; a warning says so."""
    norm, net = model.normalization, model.model(dev)
    n, i = (raw.shape[0] if rows is None else rows.shape[0]), 0
    plan = {"batch": int(batch), "tile": int(tile)}

    def attempt():
        b = plan["batch"]
        x = (norm.apply(raw[i:i + b]) if rows is None else
             network_inputs(norm, raw, rows[i:i + b], read_region))
        return (yield from predict_region(model, net, x, output, dev, views, plan["tile"],
                                          overlap, size, region, origin))

    def shrink() -> bool:
        if plan["batch"] > 1:
            plan["batch"] = max(1, plan["batch"] // 2)
        elif shrink_tile and plan["tile"] > MIN_TILE:
            plan["tile"] = max(MIN_TILE, plan["tile"] // 2)
        else:
            return False
        warnings.warn(f"out of memory: retrying with batch {plan['batch']}, tile "
                      f"{plan['tile']}", stacklevel=4)
        return True

    def give_up():
        tiles = f" and {plan['tile']}-pixel tiles" if shrink_tile else ""
        raise MemoryError(f"out of memory even with one frame{tiles}; use device='cpu'")

    while i < n:
        gen = retry_on_oom(dev, attempt, shrink, give_up)
        try:
            while True:
                next(gen)
                yield i
        except StopIteration as stop:
            pred = stop.value
        finally:
            gen.close()
        out[i:i + pred.shape[0]] = norm.invert(pred, out.dtype)
        i += pred.shape[0]
        yield i
