"""Blind2Sound's networks (torch only: also written into exported bioimage.io packages)."""

from __future__ import annotations

import torch.nn as nn

from .unet import UNet


class B2SModel(nn.Module):
    """Denoiser (mean and spread per channel) plus the per-image noise estimator."""

    def __init__(self, channels: int = 1, width: int = 48, depth: int = 5, est_width: int = 16,
                 est_depth: int = 3):
        super().__init__()
        self.channels = channels
        self.net = UNet(channels, 2 * channels, width, depth)
        self.est = UNet(channels, 3 * channels, est_width, min(est_depth, depth))

    @property
    def multiple(self) -> int:
        return self.net.multiple
