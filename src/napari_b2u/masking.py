"""The global masker Ω and the mask mapper h of Blind2Unblind (METHOD.md §1), and the blind
spot's shape.

Both are single vectorized tensor ops: no Python loop over the s² cell positions.

For pixel-independent noise the blind spot is one pixel. When neighbouring pixels' noise is
correlated (point-scanning confocals along X, some cameras), a neighbour shows the blind pixel's
noise and the network learns part of the identity; a :class:`BlindSpot` then covers the
correlated extent (a line along X or Y, or a box): in copy k every pixel within that extent of a
blind pixel is replaced too, by a normalized convolution of the pixels outside every extent (so
no replacement carries a blind pixel's noise either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError

#: the blind-spot shapes a ``mask`` setting may name
MASK_HELP = ("'pixel' (independent noise), 'x-line:L' / 'y-line:L' (L odd: the pixel and its "
             "(L-1)/2 neighbours each side along X / Y), 'box:Lx,Ly', or 'auto' (measured "
             "from the data)")
MASK_PATTERN = r"auto|pixel|[xy]-line:\d+|box:\d+,\d+"


@dataclass(frozen=True)
class BlindSpot:
    """The pixels hidden with each blind pixel: offsets |dy| <= ly, |dx| <= lx."""

    ly: int = 0
    lx: int = 0

    @classmethod
    def parse(cls, spec: str) -> BlindSpot:
        """'pixel', 'x-line:3', 'y-line:5', 'box:3,3' -> a BlindSpot ('auto' is resolved
        elsewhere, from the data)."""
        s = str(spec).strip().lower()
        m = re.fullmatch(r"(x|y)-line:(\d+)|box:(\d+),(\d+)|pixel", s)
        if not m:
            raise InputError(f"mask {spec!r} is not a blind-spot shape: use {MASK_HELP}")
        if s == "pixel":
            return cls()
        lengths = [int(v) for v in m.groups() if v and v.isdigit()]
        if any(v < 1 or v % 2 == 0 or v > 15 for v in lengths):
            raise InputError(f"mask {spec!r}: lengths must be odd, 1 to 15 (the pixel and as "
                             "many neighbours on each side)")
        if m.group(1) == "x":
            return cls(0, lengths[0] // 2)
        if m.group(1) == "y":
            return cls(lengths[0] // 2, 0)
        return cls(lengths[1] // 2, lengths[0] // 2)

    @property
    def is_pixel(self) -> bool:
        return self.ly == 0 and self.lx == 0

    def spec(self) -> str:
        if self.is_pixel:
            return "pixel"
        if self.ly == 0:
            return f"x-line:{2 * self.lx + 1}"
        if self.lx == 0:
            return f"y-line:{2 * self.ly + 1}"
        return f"box:{2 * self.lx + 1},{2 * self.ly + 1}"

    def cells(self, cells: int) -> int:
        """The cell size s to use: at least ``cells``, and large enough that the hidden
        extents of one copy leave pixels in between to interpolate from."""
        return max(int(cells), 2 * min(self.ly, self.lx) + 2)

    def offsets(self) -> list[tuple[int, int]]:
        return [(dy, dx) for dy in range(-self.ly, self.ly + 1)
                for dx in range(-self.lx, self.lx + 1)]


PIXEL = BlindSpot()

#: 3x3 interpolation weights for a blind pixel: its 8 neighbours, centre excluded.
INTERP_KERNEL = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]]) / 6.0


def interpolate_neighbours(x: torch.Tensor) -> torch.Tensor:
    """Weighted mean of each pixel's 3x3 neighbourhood without the pixel itself.

    Reflect padding (not the reference code's zeros) keeps border pixels at the image's level;
    reflection never copies the centre pixel into its own neighbourhood.
    """
    c = x.shape[1]
    k = INTERP_KERNEL.to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
    if min(x.shape[-2:]) >= 2:
        xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    else:
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, k, groups=c)


def cell_index(h: int, w: int, cells: int, device=None) -> torch.Tensor:
    """(H, W) long tensor: which of the s² copies makes each pixel blind (row-major in a cell)."""
    iy = torch.arange(h, device=device) % cells
    ix = torch.arange(w, device=device) % cells
    return iy[:, None] * cells + ix[None, :]


def cell_masks(h: int, w: int, cells: int, device=None, dtype=torch.bool) -> torch.Tensor:
    """(s², 1, H, W) masks; mask k is True at the pixels blind in copy k."""
    idx = cell_index(h, w, cells, device)
    k = torch.arange(cells * cells, device=device).view(-1, 1, 1, 1)
    return (idx[None, None] == k).to(dtype)


def pick_copies(cells: int, limit: int, generator: torch.Generator | None = None):
    """The copies one training step runs: all s² (``None``) when ``limit`` covers them (or is
    0), else ``limit`` of them drawn at random (a 1-D long tensor).

    Wide blind spots need larger cells (16 copies for a 3x3 box instead of 4), which made every
    step that many network passes dearer; a random subset keeps a step's cost that of the pixel
    mask while every copy is still drawn equally often over training.
    """
    n = cells * cells
    if limit <= 0 or n <= limit:
        return None
    device = generator.device if generator is not None else "cpu"
    return torch.randperm(n, generator=generator, device=device)[:limit]


def covered(h: int, w: int, cells: int, copies: torch.Tensor | None, device=None):
    """(1, 1, H, W) float: 1 at the pixels blind in one of ``copies`` (all pixels if None)."""
    if copies is None:
        return torch.ones(1, 1, h, w, device=device)
    idx = cell_index(h, w, cells, device=device)
    return torch.isin(idx, copies.to(idx.device)).float().view(1, 1, h, w)


def global_mask(x: torch.Tensor, cells: int, spot: BlindSpot = PIXEL,
                copies: torch.Tensor | None = None) -> torch.Tensor:
    """Ω: (B, C, H, W) -> (B·s², C, H, W) masked copies (B·len(copies) with ``copies``).

    Copy k of image b sits at row b·s² + k; in it every pixel at cell position k is replaced by
    the 3x3 interpolation of its neighbours (taken from the unmasked image). With a wider
    ``spot``, the pixels within its extent of each blind pixel are replaced as well, by the
    normalized convolution of the pixels that copy leaves untouched (none of which carries a
    blind pixel's correlated noise). ``copies`` (indices into the s²) builds only those.
    """
    if spot.is_pixel:
        b, c, h, w = x.shape
        masks = cell_masks(h, w, cells, device=x.device)  # (s², 1, H, W)
        if copies is not None:
            masks = masks[copies.to(x.device)]
        n = masks.shape[0]
        interp = interpolate_neighbours(x)
        out = torch.where(masks.unsqueeze(0), interp.unsqueeze(1), x.unsqueeze(1))
        return out.reshape(b * n, c, h, w)
    return _extended_mask(x, cells, spot, copies)


def hidden_masks(h: int, w: int, cells: int, spot: BlindSpot, device=None) -> torch.Tensor:
    """(s², 1, H, W) bool: the pixels copy k replaces — its blind pixels and their extent."""
    blind = cell_masks(h, w, cells, device=device, dtype=torch.float32)
    k = (2 * spot.ly + 1, 2 * spot.lx + 1)
    return F.max_pool2d(blind, k, stride=1, padding=(spot.ly, spot.lx)) > 0


def _extended_mask(x: torch.Tensor, cells: int, spot: BlindSpot, copies=None) -> torch.Tensor:
    b, c, h, w = x.shape
    hidden = hidden_masks(h, w, cells, spot, device=x.device)  # (s², 1, H, W)
    if copies is not None:
        hidden = hidden[copies.to(x.device)]
    n = hidden.shape[0]
    free = (~hidden).to(x.dtype)
    r = max(spot.ly, spot.lx) + 1
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    d2 = (yy**2 + xx**2).to(x.dtype)
    kern = torch.where(d2 > 0, 1.0 / d2.clamp(min=1), torch.zeros_like(d2)).to(x.device)
    kern = kern.view(1, 1, 2 * r + 1, 2 * r + 1)
    # normalized convolution, per copy and channel: sum of free neighbours / sum of weights
    xf = (x.unsqueeze(1) * free.unsqueeze(0)).reshape(b * n * c, 1, h, w)
    num = F.conv2d(xf, kern, padding=r).reshape(b, n, c, h, w)
    den = F.conv2d(free, kern, padding=r).reshape(1, n, 1, h, w)
    interp = num / den.clamp(min=1e-12)
    out = torch.where(hidden.unsqueeze(0), interp, x.unsqueeze(1))
    return out.reshape(b * n, c, h, w)


def mask_mapper(y: torch.Tensor, cells: int, copies: torch.Tensor | None = None) -> torch.Tensor:
    """h: (B·s², C, H, W) network outputs -> (B, C, H, W), each pixel from the copy in which it
    was blind. With ``copies`` (the outputs of those copies only) the pixels blind in none of
    them hold arbitrary values: weigh them out with :func:`covered`."""
    bn, c, h, w = y.shape
    n = cells * cells if copies is None else int(copies.numel())
    y = y.reshape(bn // n, n, c, h, w)
    idx = cell_index(h, w, cells, device=y.device)
    if copies is not None:
        slot = torch.zeros(cells * cells, dtype=torch.long, device=y.device)
        slot[copies.to(y.device)] = torch.arange(n, device=y.device)
        idx = slot[idx]
    idx = idx.view(1, 1, 1, h, w)
    idx = idx.expand(y.shape[0], 1, c, h, w)
    return torch.gather(y, 1, idx).squeeze(1)
