"""D-BSN (Wu et al., ECCV 2020): a dilated blind-spot network plus per-pixel noise estimator.

A centrally masked 3x3 (5x5) conv followed only by 1x1 convs and convs of dilation 2 (3) can
never reach its own centre: offsets of the masked kernel have an odd component (one not a
multiple of 3), which multiples of the dilation cannot cancel. Zero padding keeps this true at
the borders (reflect padding would mirror the pixel back in).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def kernel_mask(k: int, dilation: int, ly: int = 0, lx: int = 0) -> torch.Tensor:
    """(1, 1, k, k) mask of the first conv of a branch whose later convs are dilated by
    ``dilation``: an offset o is kept only if no o + dilation·m (m integer) falls inside the
    hidden extent |dy| <= ly, |dx| <= lx — so no output ever sees its own pixel or a correlated
    neighbour. With ly = lx = 0 this is the paper's centre mask."""
    mask = torch.ones(1, 1, k, k, device="cpu")  # also when a model is built on "meta"
    for oy in range(-(k // 2), k // 2 + 1):
        for ox in range(-(k // 2), k // 2 + 1):
            if any((sy - oy) % dilation == 0 and (sx - ox) % dilation == 0
                   for sy in range(-ly, ly + 1) for sx in range(-lx, lx + 1)):
                mask[..., oy + k // 2, ox + k // 2] = 0
    return mask


class CentreMaskedConv2d(nn.Conv2d):
    def __init__(self, cin, cout, k, dilation: int = 1, ly: int = 0, lx: int = 0):
        super().__init__(cin, cout, k, padding=k // 2)
        mask = (kernel_mask(k, dilation, ly, lx) if (ly or lx) else
                torch.ones(1, 1, k, k, device="cpu"))
        if not (ly or lx):
            mask[..., k // 2, k // 2] = 0
        if not mask.any():
            raise ValueError(f"a {k}x{k} kernel before convs of dilation {dilation} cannot "
                             f"hide the extent {2 * ly + 1}x{2 * lx + 1}")
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class DilatedResidual(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.pw = nn.Conv2d(width, width, 1)

    def forward(self, x):
        return x + self.pw(F.relu(self.conv(x)))


class Branch(nn.Module):
    def __init__(self, width: int, kernel: int, dilation: int, blocks: int, ly: int = 0,
                 lx: int = 0):
        super().__init__()
        self.masked = CentreMaskedConv2d(width, width, kernel, dilation, ly, lx)
        self.pw1 = nn.Conv2d(width, width, 1)
        self.pw2 = nn.Conv2d(width, width, 1)
        self.blocks = nn.Sequential(*[DilatedResidual(width, dilation) for _ in range(blocks)])
        self.out = nn.Conv2d(width, width, 1)

    def forward(self, x):
        x = F.relu(self.masked(x))
        x = F.relu(self.pw2(F.relu(self.pw1(x))))
        return F.relu(self.out(self.blocks(x)))


class DBSN(nn.Module):
    """Returns (μ, σ_μ, σ_n): blind mean, its variance, and the noise variance, per pixel."""

    multiple = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 96,
                 blocks: int = 8, est_width: int = 32, blind_ly: int = 0, blind_lx: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.width, self.blocks, self.est_width = width, blocks, est_width
        self.blind_ly, self.blind_lx = blind_ly, blind_lx
        self.head = nn.Conv2d(in_channels, width, 1)
        self.b1 = Branch(width, 3, 2, blocks, blind_ly, blind_lx)
        self.b2 = Branch(width, 5, 3, blocks, blind_ly, blind_lx)
        self.fuse = nn.Conv2d(2 * width, width, 1)
        self.tail = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 1), nn.ReLU(inplace=True))
        self.mu = nn.Conv2d(width, out_channels, 1)
        self.sigma_mu = nn.Sequential(nn.Conv2d(width, width // 2, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(width // 2, out_channels, 1))
        e = est_width
        self.noise = nn.Sequential(  # five 1x1 convs on μ: a per-pixel, signal-dependent σ_n
            nn.Conv2d(out_channels, e // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(e // 2, e, 1), nn.ReLU(inplace=True),
            nn.Conv2d(e, e, 1), nn.ReLU(inplace=True),
            nn.Conv2d(e, e // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(e // 2, out_channels, 1))

    def config(self) -> dict:
        return {"arch": "dbsn", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "width": self.width, "blocks": self.blocks,
                "est_width": self.est_width, "blind_ly": self.blind_ly,
                "blind_lx": self.blind_lx}

    def forward(self, x):
        h = F.relu(self.head(x))
        h = F.relu(self.fuse(torch.cat([self.b1(h), self.b2(h)], dim=1)))
        h = self.tail(h)
        mu = self.mu(h)
        sigma_mu = self.sigma_mu(h) ** 2
        std = F.softplus(self.noise(mu) - 4.0) + 1e-3
        return mu, sigma_mu, std**2
