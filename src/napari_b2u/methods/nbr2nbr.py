"""Neighbor2Neighbor (Huang et al. 2021) on the same U-Net.

A random neighbour sub-sampler takes, from every 2x2 cell, two adjacent pixels into two
half-size images g1(y), g2(y) whose noise is independent; the net learns g1 -> g2 with a
regularizer that ties it to the full-resolution output.
"""

from __future__ import annotations

import torch

from ..params import Param
from .base import Method

# pairs of adjacent positions inside a 2x2 cell (0 1 / 2 3), as in the authors' code
_PAIRS = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [1, 0], [2, 0], [3, 1], [3, 2]])


def draw_pairs(y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random adjacent pair per 2x2 cell: (B, 1, H/2, W/2, 2) positions in 0..3."""
    b, _, h, w = y.shape
    pick = torch.randint(8, (b, 1, h // 2, w // 2), device=y.device, generator=generator)
    return _PAIRS.to(y.device)[pick]


def subsample(x: torch.Tensor, pairs: torch.Tensor):
    """g1(x), g2(x): (B, C, H/2, W/2) each, at the positions ``pairs`` chose."""
    b, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    cells = x[:, :, : 2 * h2, : 2 * w2].reshape(b, c, h2, 2, w2, 2)
    cells = cells.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h2, w2, 4)
    g = torch.gather(cells, 4, pairs.expand(b, c, h2, w2, 2))
    return g[..., 0], g[..., 1]


class Neighbor2Neighbor(Method):
    no_context_reason = ("its training pairs are two sub-samplings of one frame; the "
                         "neighbouring frames would have to be sub-sampled alike.")
    name = "nbr2nbr"
    title = "Neighbor2Neighbor"
    outputs = ("visible",)
    preview_names = ("visible",)
    texts = {"visible": "the network on the full image — one pass",
             "loss": "reconstruction + γ × consistency (γ ramps up)",
             "rec": "sub-image reconstruction error mean((f(g1) − g2)²)",
             "reg": "consistency regularizer"}
    loss_terms = ("loss", "rec", "reg")
    plot_term = "rec"
    schedule_name = "gamma"
    schedule_label = "γ (regularizer weight)"
    parameters = (
        # regularizer weight ramps linearly from 0 (authors' code)
        Param("gamma_end", float, 2.0, 0.0, 100.0, user=False,
              help="weight γ of the consistency regularizer at the end of training"),
    )

    def patch_multiple(self, config):
        return 2 * super().patch_multiple(config)  # the net sees half-size sub-images

    def schedule(self, p):
        return float(self.params["gamma_end"]) * min(max(p, 0.0), 1.0)

    def training_loss(self, model, y, sched):
        pairs = draw_pairs(y, self.generator)
        g1, g2 = subsample(y, pairs)
        with torch.no_grad():
            f1, f2 = subsample(self.run(model, y), pairs)  # same positions, denoised image
        diff = self.run(model, g1).float() - g2.float()
        rec = torch.mean(diff**2)
        reg = torch.mean((diff - (f1.float() - f2.float())) ** 2)
        loss = rec + (sched if sched is not None else 0.0) * reg
        return loss, {"loss": loss, "rec": rec, "reg": reg}

    def validation_error(self, model, y):
        g1, g2 = subsample(y, draw_pairs(y, self.fixed_generator(y.device)))
        return torch.mean((self.run(model, g1).float() - g2.float()) ** 2)

    def predict(self, model, y, output=None):
        self.check_output(output)
        return self.run(model, y)
