"""Noise2Void-style random blind-spot training (Krull et al. 2019) on the same U-Net.

In every g x g cell of a patch one random pixel is replaced by a random pixel of its 5x5
neighbourhood (never itself); the loss is the squared error at those pixels only.
"""

from __future__ import annotations

import torch

from ..params import Param
from .b2u import MASK
from .base import Method


def n2v_mask(y: torch.Tensor, grid: int, generator: torch.Generator | None, spot=None):
    """Return (masked input, boolean mask of the blind pixels), vectorized over the batch.

    In every grid × grid cell one random pixel is blind: it takes the value of a random
    neighbour outside the blind spot's extent (within 5x5, or wider for a wide spot). With a
    wider ``spot`` (structN2V), the pixels of its extent around each blind pixel take values
    from random places of the patch, so none of them shows the blind pixel's correlated noise.
    """
    from ..masking import PIXEL

    spot = spot or PIXEL
    b, c, h, w = y.shape
    gh, gw = max(1, h // grid), max(1, w // grid)
    dev = y.device
    oy = torch.randint(min(grid, h), (b, gh, gw), device=dev, generator=generator)
    ox = torch.randint(min(grid, w), (b, gh, gw), device=dev, generator=generator)
    py = (torch.arange(gh, device=dev).view(1, -1, 1) * grid + oy).clamp_(max=h - 1)
    px = (torch.arange(gw, device=dev).view(1, 1, -1) * grid + ox).clamp_(max=w - 1)
    r = max(2, spot.ly + 1, spot.lx + 1)
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
               if abs(dy) > spot.ly or abs(dx) > spot.lx]
    offs = torch.tensor(offsets, device=dev)
    pick = torch.randint(len(offsets), (b, gh, gw), device=dev, generator=generator)

    # a neighbour outside the image is taken on the opposite side instead (reflecting the
    # position could land on the pixel itself: row 1 - 2 -> row 1)
    def neighbour(p, d, size):
        q = p + d
        q = torch.where((q < 0) | (q >= size), p - d, q)
        return q.clamp(0, size - 1)

    ny = neighbour(py, offs[pick, 0], h)
    nx = neighbour(px, offs[pick, 1], w)
    bi = torch.arange(b, device=dev).view(-1, 1, 1).expand_as(py)
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=dev)
    mask[bi, 0, py, px] = True
    masked = y.clone()
    for dy, dx in spot.offsets():  # structN2V: the extent takes values from elsewhere
        if (dy, dx) == (0, 0):
            continue
        ry = torch.randint(h, py.shape, device=dev, generator=generator)
        rx = torch.randint(w, px.shape, device=dev, generator=generator)
        masked[bi, :, (py + dy).clamp(0, h - 1), (px + dx).clamp(0, w - 1)] = y[bi, :, ry, rx]
    masked[bi, :, py, px] = y[bi, :, ny, nx]
    return masked, mask


class Noise2Void(Method):
    name = "n2v"
    title = "Noise2Void (random blind spots)"
    outputs = ("visible",)
    preview_names = ("visible",)
    takes_context = True
    texts = {"visible": "the network on the unmasked image — one pass",
             "loss": "error at the blind pixels, mean((f(masked) − y)²) there"}
    parameters = (
        # one masked pixel per 8x8 cell: about 1.6 % of pixels, as N2V
        Param("grid", int, 8, 2, 64, user=False,
              help="one blind pixel per grid × grid cell of each patch"),
        MASK,
    )

    def _masked_error(self, model, y, generator):
        y, ctx = self.split(y)  # the centre frame is masked, its neighbours are not
        masked, mask = n2v_mask(y, int(self.params["grid"]), generator, self.spot)
        out = self.run(model, masked, ctx).float()
        m = mask.expand_as(out)
        return ((out - y.float())[m] ** 2).mean()

    def training_loss(self, model, y, sched):
        loss = self._masked_error(model, y, self.generator)
        return loss, {"loss": loss}

    def validation_error(self, model, y):
        # one draw masks only ~1.6 % of the held-out pixels: too noisy to pick a model (measured:
        # it chose a step 1.8 dB worse than the last on a single frame); average 8 fixed draws
        errs = [self._masked_error(model, y, self.fixed_generator(y.device, seed=1234 + k))
                for k in range(8)]
        return torch.stack(errs).mean()

    def predict(self, model, y, output=None):
        self.check_output(output)
        return self.run(model, y)
