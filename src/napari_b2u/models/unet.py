"""The U-Net of Laine et al. 2019 / Neighbor2Neighbor used by Blind2Unblind (METHOD.md §1).

Width 48 and depth 5 give the reference network (about 1.10 M parameters): 3x3 convs with
LeakyReLU(0.1), 2x max-pool down, nearest 2x up, skip concatenation, and 1x1 convs at 96
channels before the output. ``width``/``depth`` shrink it for CPU presets and tests.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 48,
        depth: int = 5,
        head_width: int | None = None,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.width, self.depth = width, depth
        wd = 2 * width
        head = head_width if head_width is not None else wd
        self.head_width = head
        self.act = nn.LeakyReLU(0.1, inplace=True)
        # encoder: conv0, conv1+pool1, conv_k+pool_k (k = 2..depth), bottleneck conv
        self.enc0 = _conv(in_channels, width)
        self.enc = nn.ModuleList([_conv(width, width) for _ in range(depth)])
        self.bottleneck = _conv(width, width)
        # decoder levels depth..1; the deepest takes up(bottleneck)+skip = 2w, others 2w+w
        self.dec_a = nn.ModuleList()
        self.dec_b = nn.ModuleList()
        for level in range(depth, 1, -1):
            cin = 2 * width if level == depth else wd + width
            self.dec_a.append(_conv(cin, wd))
            self.dec_b.append(_conv(wd, wd))
        cin_last = (wd if depth > 1 else width) + in_channels
        self.dec1a = _conv(cin_last, head)
        self.dec1b = _conv(head, head)
        self.nin_a = _conv(head, head, 1)
        self.nin_b = _conv(head, head, 1)
        self.nin_c = _conv(head, out_channels, 1)
        self.reset_parameters()

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1)
                nn.init.zeros_(m.bias)

    def config(self) -> dict:
        return {
            "arch": "unet",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "width": self.width,
            "depth": self.depth,
            "head_width": self.head_width,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act
        skips = [x]
        h = act(self.enc0(x))
        h = F.max_pool2d(act(self.enc[0](h)), 2)
        for k in range(1, self.depth):
            skips.append(h)
            h = F.max_pool2d(act(self.enc[k](h)), 2)
        h = act(self.bottleneck(h))
        for a, b in zip(self.dec_a, self.dec_b):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            h = act(b(act(a(h))))
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = torch.cat([h, skips.pop()], dim=1)
        h = act(self.dec1b(act(self.dec1a(h))))
        h = act(self.nin_b(act(self.nin_a(h))))
        return self.nin_c(h)


def pad_to_multiple(x: torch.Tensor, multiple: int):
    """Reflect-pad the bottom/right of (B, C, H, W) to multiples of ``multiple``.

    Works for any size (reflection is repeated when the pad is larger than the image).
    Returns the padded tensor and the original (H, W) to crop back to.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    while ph or pw:
        ch, cw = x.shape[-2:]
        # torch's reflect needs pad < size; single-pixel sides can only be replicated
        sh = min(ph, ch - 1) if ch > 1 else ph
        sw = min(pw, cw - 1) if cw > 1 else pw
        mode = "reflect" if ch > 1 and cw > 1 else "replicate"
        x = F.pad(x, (0, sw, 0, sh), mode=mode)
        ph, pw = ph - sh, pw - sw
    return x, (h, w)
