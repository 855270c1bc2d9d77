"""The plan of a denoising pass, and how a run fits the memory budget
(:func:`~napari_b2u.io.memory.memory_budget`, ``NAPARI_B2U_MEMORY_BUDGET``): the budget bounds
what the run itself holds on top of the process (interpreter, torch, dask, the model) — one
network pass (a batch of tiles: inputs, activations, outputs) and the blocks in flight out of
core (each: its raw pixels, the normalized batch, the float output and its cast).

A pass's memory per pixel is measured once per network (:func:`pass_bytes`: the tensors a pass
over a small probe holds at its peak, seen through torch's dispatcher), so that a wide network
gets smaller tiles than a narrow one; the rest is counted from the dtypes.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..io.memory import memory_budget
from .predict import PIXEL_BUDGET, TILE_SIZE, ensemble_views, predict_view

#: the share of the memory budget one network pass may take; the rest is for the blocks in
#: flight (out of core) or the batch's frames (in memory)
PASS_SHARE = 0.5
#: the smallest tile the memory budget may choose (a 256-px tile keeps 128² of its 256² px)
MIN_PLAN_TILE = 256
#: side of the probe a network's memory per pixel is measured on (a multiple of every
#: network's size multiple; the U-Nets' memory per pixel is the same from 128² to 1024²)
PROBE_SIDE = 128
#: what a pass takes per pixel and network input when there is no network to measure (the
#: CPU preset U-Net, 24 wide: 580 B measured)
FALLBACK_PASS_BYTES = 640
#: blocks a run out of core computes at once in this process (one computes while another is
#: read or written); fewer when the budget holds only one
MAX_IN_FLIGHT = 2

#: measured bytes per pixel of a pass, by (method, network, window, output, device type)
_PASS_BYTES: dict = {}


def _live_peak(fn) -> int:
    """The most bytes the tensors made while ``fn()`` runs hold at any one time, seen through
    torch's dispatcher (what a pass allocates, on any device and allocator)."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live, self.now, self.peak = {}, 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                self.now -= self.live.pop(key)[1]
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    st = t.untyped_storage()
                    if st.data_ptr() not in self.live:  # views and in-place ops share storage
                        self.live[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
                        self.now += st.nbytes()
            self.peak = max(self.peak, self.now)
            return out

    with torch.no_grad(), Live() as live:
        fn()
    return live.peak


def pass_bytes(model, output: str, dev) -> int:
    """Host memory of a network pass per pixel of one frame's tile, in bytes: the method's pass
    in one dihedral view (its copies, the network's activations, the rotation), measured once
    per network on a :data:`PROBE_SIDE`² probe, plus the tile's normalized input, the
    ensemble's sum and the conversion to raw units. On CUDA the activations live in the GPU's
    memory (its out-of-memory rule sizes those): only the host copies count. ``model``: a
    Denoiser; a bare Method (no network to measure) counts :data:`FALLBACK_PASS_BYTES` per
    network input."""
    import torch

    method = getattr(model, "method", model)
    norm = getattr(model, "normalization", None)
    c = len(norm.offset) if norm is not None else 1
    host = 4 * c * method.window + 32 * c  # the input; the sum, float64 raw units, the cast
    if dev.type == "cuda":
        return host
    if not hasattr(model, "model_config"):
        return host + FALLBACK_PASS_BYTES * method.copies_per_image(output) * method.window
    key = (model.method_name, json.dumps(model.model_config, sort_keys=True, default=str),
           method.window, output, dev.type)
    if key not in _PASS_BYTES:
        net = model.model(dev)
        g = torch.Generator().manual_seed(0)
        x = torch.randn((1, c * method.window, PROBE_SIDE, PROBE_SIDE), generator=g).to(dev)
        peak = _live_peak(lambda: predict_view(method, net, x, output, 5))
        _PASS_BYTES[key] = math.ceil(peak / PROBE_SIDE**2 / 8) * 8
    return host + _PASS_BYTES[key]


def fit_tile(h: int, w: int, tile: int, per_px: int, room: float) -> int:
    """The largest tile (in steps of 64 px, down to :data:`MIN_PLAN_TILE`) whose pass over one
    frame's tile fits ``room`` bytes at ``per_px`` bytes per pixel."""
    while tile > MIN_PLAN_TILE and min(tile, h) * min(tile, w) * per_px > room:
        tile -= 64
    return tile


@dataclass
class BlockBudget:
    """Blocks out of core under the memory budget: ``pixels`` the most (frames × channels ×
    Y × X) one block holds, ``in_flight`` how many compute at once, ``bytes`` the budget."""

    pixels: int
    in_flight: int
    bytes: int

    def describe(self, tile: int, batch: int) -> str:
        return (f"memory budget {self.bytes / 2**20:.0f} MB: tiles of {tile} px, batch "
                f"{batch}, {self.in_flight} block(s) of ≤ {self.pixels / 1e6:.1f} Mpx at once")


def block_bytes(window: int, in_dtype, out_dtype) -> float:
    """Bytes a block holds per output pixel: its raw input (the neighbouring frames too, with
    stack context; +10 % for the tiles' margins), the normalized batch of frames (float32, its
    frames' neighbours too), the prediction and its float64 conversion, the float output
    buffer and its cast to the output dtype."""
    from ..data import output_float

    raw = np.dtype(in_dtype).itemsize * window * 1.1
    out = np.dtype(out_dtype)
    return raw + 4 * window + 4 + 8 + np.dtype(output_float(out)).itemsize + out.itemsize


def plan_blocks_budget(max_pixels: int, tile_px: int, batch: int, pass_px: int, per_px: int,
                       window: int, in_dtype, out_dtype, budget: int | None = None
                       ) -> BlockBudget:
    """Block size and blocks in flight so that the blocks and one pass (``batch`` tiles of
    ``tile_px`` pixels at ``per_px`` bytes: one pass at a time per process) fit the budget;
    a block holds at least one batch of tiles (``pass_px``), at most ``max_pixels``."""
    budget = memory_budget() if budget is None else int(budget)
    room = max(0.0, budget - batch * tile_px * per_px)
    per = block_bytes(window, in_dtype, out_dtype)
    for in_flight in range(MAX_IN_FLIGHT, 0, -1):
        pixels = int(room / (in_flight * per))
        if pixels >= pass_px or in_flight == 1:
            return BlockBudget(max(pass_px, min(max_pixels, pixels)), in_flight, budget)
    raise AssertionError("unreachable")


def pass_plan(model, shape, output: str, dev, batch_size=None, tile_size=None, tta="auto"):
    """``(tile, batch_size, views)`` for denoising (N, C, Y, X) frames of ``shape``: one plan
    for the in-memory and the out-of-core paths (same tiles, same batches), from one frame's
    shape, the device and the memory budget: a pass (``batch`` tiles at
    :func:`pass_bytes` per pixel) takes at most :data:`PASS_SHARE` of
    :func:`~napari_b2u.io.memory.memory_budget` (tiles shrink to
    :data:`MIN_PLAN_TILE` px at the least, then a warning says the budget is too
    small). ``model``: a Denoiser (its network is measured) or its Method."""
    method = getattr(model, "method", model)
    _, _, h, w = shape
    copies = method.copies_per_image(output)
    views = ensemble_views(method, shape, output, dev, tta)
    per_px = pass_bytes(model, output, dev)
    room = PASS_SHARE * memory_budget()
    tile = int(tile_size or TILE_SIZE.get(dev.type, 1024))
    if tile_size is None:
        if dev.type == "cpu" and copies > 1 and max(h, w) > tile:
            # frames tiled anyway: one tile is what a cancel waits for, so keep a tile's
            # network input within the batch budget (weighted, 5 copies: 448-px tiles,
            # ~1.5 s each on 2 cores instead of ~11 s for 1024 px; ~20 % more overlap)
            fit = int(math.sqrt(PIXEL_BUDGET["cpu"] / copies)) // 64 * 64
            tile = max(256, min(tile, fit))
        tile = fit_tile(h, w, tile, per_px, room)
    th, tw = min(h, tile), min(w, tile)
    if th * tw * per_px > room:
        warnings.warn(f"the memory budget ({memory_budget() / 2**20:.0f} MB) is small for this "
                      f"network: one pass over a {th}×{tw} tile takes about "
                      f"{th * tw * per_px / 2**20:.0f} MB; set NAPARI_B2U_MEMORY_BUDGET to "
                      f"{2 * th * tw * per_px / 2**20:.0f}MB or more", stacklevel=3)
    if batch_size is None:
        budget = PIXEL_BUDGET.get(dev.type, PIXEL_BUDGET["cpu"])
        batch_size = max(1, min(budget // (th * tw * copies), int(room // (th * tw * per_px))))
    return tile, int(batch_size), views
