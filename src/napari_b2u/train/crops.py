"""Random training crops drawn on the device, and the fixed crops validation, the risk estimate
and the floor measure on."""

from __future__ import annotations

import numpy as np
import torch

from ..device import free_memory


def crop_sampler(frames, device: torch.device, seed: int, augment: bool = True):
    """The sampler of training crops: :class:`CropSampler` over frames in memory, the buffered
    sampler of :mod:`.lazydata` over frames larger than memory."""
    if hasattr(frames, "buffered_sampler"):
        return frames.buffered_sampler(device, seed, augment)
    return CropSampler(frames, device, seed, augment)


def gather_crops(data: torch.Tensor, frame, y0, x0, patch: int, flip_gen=None) -> torch.Tensor:
    """The patch×patch crops of ``data`` (N, C, H, W) at (frame, y0, x0), one tensor index;
    with ``flip_gen`` each crop gets a random dihedral flip (drawn from that generator).
    ``frame`` (B,) or, for stack context, (B, W): each crop's frame and its neighbours, whose
    channels are stacked (B, W·C, patch, patch) and flipped alike."""
    batch, c, dev = frame.shape[0], data.shape[1], data.device
    ar = torch.arange(patch, device=dev)
    rows = (y0[:, None] + ar).view(batch, 1, patch, 1)
    cols = (x0[:, None] + ar).view(batch, 1, 1, patch)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    if frame.dim() == 2:
        w = frame.shape[1]
        out = data[frame.view(batch, w, 1, 1, 1), ch.unsqueeze(0), rows.unsqueeze(1),
                   cols.unsqueeze(1)].reshape(batch, w * c, patch, patch)
    else:
        out = data[frame.view(batch, 1, 1, 1), ch, rows, cols]
    if flip_gen is not None:
        flips = torch.randint(2, (3, batch, 1, 1, 1), device=dev, generator=flip_gen).bool()
        out = torch.where(flips[0], out.flip(-1), out)
        out = torch.where(flips[1], out.flip(-2), out)
        out = torch.where(flips[2], out.transpose(-1, -2), out)
    return out


class ContextFrames:
    """The network's inputs under stack context, without copying frames: item i is frame
    ``rows[i, 0]`` of ``frames`` (N, C, Y, X) and its neighbours ``rows[i, 1:]``, their channels
    stacked — an array-like of shape (M, W·C, Y, X) that reads only what it is indexed with."""

    def __init__(self, frames: np.ndarray, rows: np.ndarray):
        self.frames, self.rows = frames, np.asarray(rows, np.int64)
        _, c, h, w = frames.shape
        self.shape = (self.rows.shape[0], self.rows.shape[1] * c, h, w)
        self.dtype, self.ndim = frames.dtype, 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        fk, rest = key[0], key[1:]
        if len(rest) > 0 and rest[0] != slice(None):
            raise IndexError("ContextFrames: index all channels (:)")
        spatial = tuple(rest[1:])
        one = isinstance(fk, (int, np.integer))
        rows = self.rows[[fk] if one else fk]
        out = np.stack([self.frames[(r, slice(None)) + spatial].reshape(
            (-1,) + self.frames[(r[0], 0) + spatial].shape) for r in rows])
        return out[0] if one else out


class CropSampler:
    """Random square crops with random dihedral flips, drawn on the device in a few tensor ops.
    ``frames``: an array (N, C, Y, X), or :class:`ContextFrames` (each crop then stacks its
    frame's neighbours, cut at the same place)."""

    def __init__(self, frames, device: torch.device, seed: int, augment: bool = True,
                 keep_on_device: bool | None = None):
        self.device = device
        self.rows = None
        if isinstance(frames, ContextFrames):
            self.rows = torch.from_numpy(frames.rows).to(device)
            frames = np.ascontiguousarray(frames.frames)
        nbytes = frames.nbytes
        if keep_on_device is None:
            free = free_memory(device)
            keep_on_device = device.type == "cpu" or free is None or nbytes < 0.3 * free
        self.on_device = keep_on_device
        t = torch.from_numpy(frames)
        if keep_on_device:
            self.data = t.to(device)
        else:
            self.data = t.pin_memory() if device.type == "cuda" else t
        src = self.data.device
        self.gen = torch.Generator(device=src)
        self.gen.manual_seed(int(seed))
        self.augment = augment
        if self.rows is not None:
            self.rows = self.rows.to(src)

    def sample(self, batch: int, patch: int) -> torch.Tensor:
        d = self.data
        n, _, h, w = d.shape
        dev, g = d.device, self.gen
        if self.rows is not None:  # a training frame, then its neighbours
            i = self.rows[torch.randint(self.rows.shape[0], (batch,), device=dev, generator=g)]
        else:
            i = torch.randint(n, (batch,), device=dev, generator=g)
        y0 = torch.randint(h - patch + 1, (batch,), device=dev, generator=g)
        x0 = torch.randint(w - patch + 1, (batch,), device=dev, generator=g)
        out = gather_crops(d, i, y0, x0, patch, g if self.augment else None)
        if out.device != self.device:
            out = out.to(self.device, non_blocking=True)
        return out.contiguous()


def crop_spots(shape, size: int, count: int) -> list[tuple[int, int, int]]:
    """(frame, y0, x0) of up to ``count`` crops of up to size x size, spread evenly over
    frames of ``shape`` (N, C, Y, X)."""
    n, _, h, w = shape
    ch, cw = min(size, h), min(size, w)
    ys = np.unique(np.linspace(0, h - ch, max(1, h // ch)).round().astype(int))
    xs = np.unique(np.linspace(0, w - cw, max(1, w // cw)).round().astype(int))
    spots = [(f, int(y), int(x)) for f in range(n) for y in ys for x in xs]
    if len(spots) > count:
        pick = np.linspace(0, len(spots) - 1, count).round().astype(int)
        spots = [spots[i] for i in pick]
    return spots


def take_crops(frames, size: int, spots) -> np.ndarray:
    """The crops of up to size x size at ``spots`` ((frame, y0, x0), :func:`crop_spots`)."""
    _, _, h, w = frames.shape
    ch, cw = min(size, h), min(size, w)
    return np.stack([frames[f, :, y:y + ch, x:x + cw] for f, y, x in spots])


def validation_crops(val: np.ndarray, size: int, count: int) -> np.ndarray:
    """Up to ``count`` crops of up to size x size, spread evenly over the held-out data."""
    return take_crops(val, size, crop_spots(val.shape, size, count))
