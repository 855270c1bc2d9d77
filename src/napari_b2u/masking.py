"""The global masker Ω and the mask mapper h of Blind2Unblind (METHOD.md §1).

Both are single vectorized tensor ops: no Python loop over the s² cell positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def global_mask(x: torch.Tensor, cells: int) -> torch.Tensor:
    """Ω: (B, C, H, W) -> (B·s², C, H, W) masked copies.

    Copy k of image b sits at row b·s² + k; in it every pixel at cell position k is replaced by
    the 3x3 interpolation of its neighbours (taken from the unmasked image).
    """
    b, c, h, w = x.shape
    n = cells * cells
    masks = cell_masks(h, w, cells, device=x.device)  # (n, 1, H, W)
    interp = interpolate_neighbours(x)
    out = torch.where(masks.unsqueeze(0), interp.unsqueeze(1), x.unsqueeze(1))  # (B, n, C, H, W)
    return out.reshape(b * n, c, h, w)


def mask_mapper(y: torch.Tensor, cells: int) -> torch.Tensor:
    """h: (B·s², C, H, W) network outputs -> (B, C, H, W), each pixel from the copy it was blind in."""
    bn, c, h, w = y.shape
    n = cells * cells
    y = y.reshape(bn // n, n, c, h, w)
    idx = cell_index(h, w, cells, device=y.device).view(1, 1, 1, h, w)
    idx = idx.expand(y.shape[0], 1, c, h, w)
    return torch.gather(y, 1, idx).squeeze(1)
