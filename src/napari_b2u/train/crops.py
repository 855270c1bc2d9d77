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
    with ``flip_gen`` each crop gets a random dihedral flip (drawn from that generator)."""
    batch, c, dev = frame.shape[0], data.shape[1], data.device
    ar = torch.arange(patch, device=dev)
    rows = (y0[:, None] + ar).view(batch, 1, patch, 1)
    cols = (x0[:, None] + ar).view(batch, 1, 1, patch)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    out = data[frame.view(batch, 1, 1, 1), ch, rows, cols]
    if flip_gen is not None:
        flips = torch.randint(2, (3, batch, 1, 1, 1), device=dev, generator=flip_gen).bool()
        out = torch.where(flips[0], out.flip(-1), out)
        out = torch.where(flips[1], out.flip(-2), out)
        out = torch.where(flips[2], out.transpose(-1, -2), out)
    return out


class CropSampler:
    """Random square crops with random dihedral flips, drawn on the device in a few tensor ops."""

    def __init__(self, frames: np.ndarray, device: torch.device, seed: int, augment: bool = True,
                 keep_on_device: bool | None = None):
        self.device = device
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

    def sample(self, batch: int, patch: int) -> torch.Tensor:
        d = self.data
        n, _, h, w = d.shape
        dev, g = d.device, self.gen
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
