"""Training on a stack larger than memory: normalized frames read on demand, and training crops
drawn from a bounded in-memory buffer of random blocks that is refreshed as training goes.

When a lazy input (zarr / OME-Zarr, big TIFF, dask) would not fit the memory budget in memory
(:func:`~napari_b2u.io.sources.needs_lazy`), :func:`~.data.prepare_data` holds
:class:`LazyFrames` where it would hold arrays (previews, validation and calibration crops read
just the crops they need), with the normalization fitted on a sample; the checks, the hold-out
plan and the split are the in-memory ones.

**How the crops stay uniform.** The in-memory sampler picks a frame uniformly and a crop origin
uniformly in it. Here the origins of every training frame are cut into blocks of ``core`` ×
``core`` origins; a block is read with the ``patch − 1`` pixels after it, so every crop starting
in it lies inside what was read. The buffer holds ``K`` slots, each a block drawn at random
with probability proportional to its number of origins (edge blocks have fewer), independently
of everything else; a crop picks a slot uniformly, then an origin uniformly within the slot's
block. The probability of an origin o in block B is then Σ_slots 1/K · P(slot holds B) · 1/|B|
= (|B| / total) / |B| = 1 / total: exactly uniform, like the in-memory sampler. What differs is
only the correlation in time: crops come from K blocks at a time, and every ``refresh_every``
steps ``K / 8`` slots get new blocks (read in a background thread while training runs), so the
buffer turns over every 8 × ``refresh_every`` steps, like a shuffle buffer.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..data import Normalization, fit_normalization
from ..io.frames import FrameReader
from ..io.memory import bound_heap, memory_budget
from .crops import gather_crops

#: the most bytes of the crop buffer, and its share of the memory budget (a 512 MB budget: a
#: 128 MB buffer); origins per block side, steps between refreshes
BUFFER_BYTES = 256 * 2**20
BUFFER_SHARE = 0.25
CORE = 192
REFRESH_EVERY = 8
#: the normalization is fitted on the central crop (this side) of up to this many frames
NORM_FRAMES, NORM_SIDE = 16, 512


class LazyFrames:
    """Normalized float32 frames (N, C, Y, X) of a :class:`~napari_b2u.io.frames.FrameReader`:
    frames ``index`` of it, rows/columns ``region`` (y0, y1, x0, x1). Indexing reads only what
    it returns (ints and step-1 slices)."""

    def __init__(self, reader: FrameReader, norm: Normalization, index, region=None):
        self.reader, self.norm = reader, norm
        self.index = np.asarray(index, dtype=np.int64)
        _, c, h, w = reader.shape
        self.region = tuple(region) if region is not None else (0, h, 0, w)
        y0, y1, x0, x1 = self.region
        self.shape = (len(self.index), c, y1 - y0, x1 - x0)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, j: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Frame ``j`` (of this view), rows y0..y1-1, columns x0..x1-1: (C, ny, nx)."""
        f = int(self.index[j])
        ry, rx = self.region[0], self.region[2]
        raw = self.reader.read(f, f + 1, ry + y0, ry + y1, rx + x0, rx + x1)
        return self.norm.apply(raw)[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        fk, ck, yk, xk = key
        spans = []
        for k, size in ((yk, self.shape[2]), (xk, self.shape[3])):
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise TypeError("lazy frames are indexed with ints and step-1 slices")
            spans.append(k.indices(size)[:2])
        if isinstance(fk, slice):
            frames = range(*fk.indices(self.shape[0]))
        else:
            frames = [int(fk) + (self.shape[0] if int(fk) < 0 else 0)]
        (y0, y1), (x0, x1) = spans
        out = np.stack([self.read(j, y0, y1, x0, max(x1, x0)) for j in frames])[:, ck]
        return out[0] if not isinstance(fk, slice) else out

    def in_memory_sample(self, frames: int = 8, side: int = 256) -> np.ndarray:
        """Central crops of up to ``side`` px of up to ``frames`` evenly spaced frames (what the
        noise report measures)."""
        n, _, h, w = self.shape
        pick = np.unique(np.linspace(0, n - 1, min(n, frames)).round().astype(int))
        ch, cw = min(side, h), min(side, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return np.stack([self.read(int(j), y0, y0 + ch, x0, x0 + cw) for j in pick])

    def buffered_sampler(self, device, seed: int, augment: bool = True):
        return BufferedCropSampler(self, device, seed, augment)

    def subset(self, index, region=None) -> LazyFrames:
        """Frames ``index`` of this view, rows/columns ``region`` (y0, y1, x0, x1) of it."""
        y0, y1, x0, x1 = region if region is not None else (0, self.shape[2], 0, self.shape[3])
        ry, rx = self.region[0], self.region[2]
        return LazyFrames(self.reader, self.norm, self.index[np.asarray(index, np.int64)],
                          (ry + y0, ry + y1, rx + x0, rx + x1))

    def informative(self, side: int = 64) -> np.ndarray:
        """Which frames are not constant: a central crop of each is read, and only a frame
        whose crop is constant is read whole to be sure (dropped frames are rare)."""
        _, _, h, w = self.shape
        ch, cw = min(side, h), min(side, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        keep = np.ones(self.shape[0], bool)
        for j in range(self.shape[0]):
            crop = self.read(j, y0, y0 + ch, x0, x0 + cw)
            if crop.max() == crop.min():
                whole = self.read(j, 0, h, 0, w)
                keep[j] = whole.max() > whole.min()
        return keep


def fit_lazy_normalization(reader: FrameReader, mode: str = "auto") -> tuple[Normalization,
                                                                           np.ndarray]:
    """The normalization fitted on the central crops of up to :data:`NORM_FRAMES` evenly spaced
    frames (8-bit data needs none: /255), and that raw sample."""
    n, _, h, w = reader.shape
    pick = np.unique(np.linspace(0, n - 1, min(n, NORM_FRAMES)).round().astype(int))
    ch, cw = min(NORM_SIDE, h), min(NORM_SIDE, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    sample = np.concatenate([reader.read(int(f), int(f) + 1, y0, y0 + ch, x0, x0 + cw)
                             for f in pick])
    return fit_normalization(sample, mode), sample


class BufferedCropSampler:
    """Random crops (with random dihedral flips) from a refreshed buffer of blocks of
    :class:`LazyFrames` — the sampler of the module docstring. Same interface as
    :class:`~.crops.CropSampler`."""

    def __init__(self, frames: LazyFrames, device, seed: int, augment: bool = True,
                 buffer_bytes: int | None = None, refresh_every: int = REFRESH_EVERY,
                 core: int = CORE):
        if buffer_bytes is None:
            buffer_bytes = min(BUFFER_BYTES, int(BUFFER_SHARE * memory_budget()))
        bound_heap()  # a stack larger than the budget: freed blocks' memory goes back
        self.frames, self.device, self.augment = frames, torch.device(device), augment
        self.buffer_bytes, self.refresh_every, self.core = buffer_bytes, refresh_every, core
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed))
        self.rng = np.random.default_rng(int(seed))
        self.on_device = True
        self._patch = None
        self._calls = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="napari-b2u buffer")
        self._pending = None

    # ---- blocks --------------------------------------------------------------------------------
    def _setup(self, patch: int) -> None:
        n, c, h, w = self.frames.shape
        self._patch = patch
        self._oy, self._ox = h - patch + 1, w - patch + 1  # crop origins per frame side
        self._nby, self._nbx = math.ceil(self._oy / self.core), math.ceil(self._ox / self.core)
        side = self.core + patch - 1
        slot = c * side * side * 4
        blocks = n * self._nby * self._nbx
        self.slots = int(max(2, min(self.buffer_bytes // slot, blocks)))
        self.per_refresh = max(1, self.slots // 8)
        self.data = torch.zeros((self.slots, c, side, side), device=self.device)
        self.counts = torch.zeros((self.slots, 2), dtype=torch.int64, device=self.device)
        data, counts = self._read(self._draw(self.slots))
        self.data.copy_(torch.from_numpy(data))
        self.counts.copy_(torch.from_numpy(counts))
        self._next = 0
        self._pending = self._pool.submit(self._read, self._draw(self.per_refresh))

    def _weights(self, n_blocks: int, origins: int) -> np.ndarray:
        size = np.full(n_blocks, self.core, dtype=np.float64)
        size[-1] = origins - self.core * (n_blocks - 1)
        return size / size.sum()

    def _draw(self, k: int) -> list[tuple[int, int, int]]:
        """``k`` blocks (frame, block row, block column), each with probability proportional to
        its number of origins (frames all have the same size)."""
        n = self.frames.shape[0]
        js = self.rng.integers(0, n, k)
        bys = self.rng.choice(self._nby, size=k, p=self._weights(self._nby, self._oy))
        bxs = self.rng.choice(self._nbx, size=k, p=self._weights(self._nbx, self._ox))
        return [(int(j), int(by), int(bx)) for j, by, bx in zip(js, bys, bxs)]

    def _read(self, blocks) -> tuple[np.ndarray, np.ndarray]:
        _, c, h, w = self.frames.shape
        side = self.core + self._patch - 1
        data = np.zeros((len(blocks), c, side, side), np.float32)
        counts = np.zeros((len(blocks), 2), np.int64)
        for i, (j, by, bx) in enumerate(blocks):
            y0, x0 = by * self.core, bx * self.core
            ny, nx = min(self.core, self._oy - y0), min(self.core, self._ox - x0)
            crop = self.frames.read(j, y0, y0 + ny + self._patch - 1, x0,
                                    x0 + nx + self._patch - 1)
            data[i, :, :crop.shape[1], :crop.shape[2]] = crop
            counts[i] = ny, nx
        return data, counts

    def _refresh(self) -> None:
        data, counts = self._pending.result()
        k = data.shape[0]
        idx = (self._next + np.arange(k)) % self.slots
        self.data[torch.from_numpy(idx)] = torch.from_numpy(data).to(self.device)
        self.counts[torch.from_numpy(idx)] = torch.from_numpy(counts).to(self.device)
        self._next = int((self._next + k) % self.slots)
        self._pending = self._pool.submit(self._read, self._draw(self.per_refresh))

    # ---- crops ---------------------------------------------------------------------------------
    def sample(self, batch: int, patch: int) -> torch.Tensor:
        if patch != self._patch:
            self._setup(patch)
        self._calls += 1
        if self._calls % self.refresh_every == 0:
            self._refresh()
        d, g, dev = self.data, self.gen, self.device
        slot = torch.randint(self.slots, (batch,), device=dev, generator=g)
        n = self.counts[slot]
        y0 = (torch.rand(batch, device=dev, generator=g) * n[:, 0]).long()
        x0 = (torch.rand(batch, device=dev, generator=g) * n[:, 1]).long()
        y0, x0 = torch.minimum(y0, n[:, 0] - 1), torch.minimum(x0, n[:, 1] - 1)
        return gather_crops(d, slot, y0, x0, patch, g if self.augment else None).contiguous()
