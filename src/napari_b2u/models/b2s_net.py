"""Blind2Sound's networks (torch only: also written into exported bioimage.io packages)."""

from __future__ import annotations

import torch.nn as nn

from .unet import UNet


class B2SModel(nn.Module):
    """Denoiser (mean and spread per channel) plus the per-image noise estimator."""

    def __init__(self, channels: int = 1, width: int = 48, depth: int = 5, est_width: int = 16,
                 est_depth: int = 3, window: int = 1):
        super().__init__()
        self.channels = channels
        # stack context: the denoiser also sees the neighbouring frames (window frames in all);
        # the noise estimator looks at the centre frame only
        self.net = UNet(channels * window, 2 * channels, width, depth)
        self.est = UNet(channels, 3 * channels, est_width, min(est_depth, depth))

    @property
    def multiple(self) -> int:
        return self.net.multiple
