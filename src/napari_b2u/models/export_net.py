"""The network of a bioimage.io package: normalized (B, C, H, W) in, one method output out.

A bioimage.io package runs one network on one input, so it holds the output a method computes
in a single pass: B2U's, Neighbor2Neighbor's and Noise2Void's visible f(y), Blind2Sound's
visible mean, D-BSN's μ or its Bayes combination (μ, σ_μ and σ_n come from one pass). The
normalization is not in here: the package states it as pre- and postprocessing.

The state dict is the method's own under ``model.`` (Blind2Sound keeps its noise estimator,
which this forward pass does not use), so napari-b2u opens an exported package as the full
model. This file, :mod:`.unet`, :mod:`.b2s_net` and :mod:`.dbsn` import nothing but torch: the
export writes them into one file, the package's architecture source, which runs without
napari-b2u installed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .b2s_net import B2SModel
from .dbsn import DBSN
from .unet import UNet

#: the single-pass outputs a package can hold, by the ``arch`` of a model config
HEADS = {"unet": ("visible",), "b2s": ("visible",), "dbsn": ("mu", "bayes")}


class ExportNet(nn.Module):
    """``arch`` and the other keyword arguments are a napari-b2u model config; ``output`` the
    single-pass output computed (see ``HEADS``)."""

    def __init__(self, arch: str = "unet", output: str = "visible", **config):
        super().__init__()
        if output not in HEADS.get(arch, ()):
            raise ValueError(f"no single-pass output {output!r} for a {arch!r} network")
        self.arch, self.output = arch, output
        if arch == "unet":
            self.model = UNet(**config)
        elif arch == "b2s":
            self.model = B2SModel(**config)
        else:
            self.model = DBSN(**config)
        self.channels = int(config.get("in_channels", config.get("channels", 1)))

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        if self.arch == "unet":
            return self.model.multiple
        if self.arch == "b2s":
            return self.model.net.multiple
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "unet":
            return self.model(x)
        if self.arch == "b2s":
            return self.model.net(x)[:, :self.channels]
        mu, sigma_mu, sigma_n = self.model(x)
        if self.output == "mu":
            return mu
        return (x * sigma_mu + mu * sigma_n) / (sigma_mu + sigma_n)
