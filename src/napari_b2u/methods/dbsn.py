"""D-BSN + noise estimator (Wu et al. 2020, METHOD.md §3), run by the same engine.

Training first fits the blind mean μ with an L2 loss to the noisy image (valid: the network is
blind), then the likelihood of y under N(μ, σ_μ + σ_n). Outputs: the blind estimate μ
(default) and the paper's Bayes combination x̂ = (y·σ_μ + μ·σ_n) / (σ_μ + σ_n).
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..params import Param
from .b2u import MASK
from .base import Method


def dbsn_loss(mu, sigma_mu, sigma_n, y, kind: str = "likelihood"):
    if kind == "likelihood":  # what the released training scripts optimize
        var = sigma_mu + sigma_n
        return torch.mean((y - mu) ** 2 / var + torch.log(var))
    if kind == "eq8":  # the paper's Eq. 8
        return torch.mean((y - mu) ** 2 / (sigma_mu + sigma_n) + torch.log(sigma_n)
                          + sigma_mu / sigma_n)
    raise ValueError(f"unknown D-BSN loss {kind!r}; use 'likelihood' or 'eq8'")


class DBSNMethod(Method):
    no_context_reason = ("D-BSN's blind spot is built into its first convolutions, which "
                         "would hide the neighbouring frames' pixels at the blind position too "
                         "(the ones that help most).")
    name = "dbsn"
    title = "D-BSN (dilated blind-spot network)"
    # μ first: it beat the Bayes combination on every set and regime of the quality benchmark
    # (docs/benchmarks.md), so it is what a user gets without choosing
    outputs = ("mu", "bayes")
    preview_names = ("mu", "bayes", "noise_std")
    texts = {
        "mu": "μ: the blind-spot network's estimate — D-BSN's best measured output",
        "bayes": "Bayes: μ combined with the noisy pixel by the estimated noise (safer for "
                 "very short runs)",
        "noise_std": "the estimated noise standard deviation, in the input's units",
        "loss": "L2 while μ is pre-trained, then the likelihood loss (can be negative)",
        "mse": "blind-spot error mean((μ − y)²)",
    }
    spread_previews = ("noise_std",)
    #: the dilated branches can skip a line of lags, not a box (see models/dbsn.kernel_mask)
    box_masks = False
    loss_terms = ("loss", "mse")
    plot_term = "mse"
    clip_grad_norm = 5.0
    parameters = (
        # Eq. 8 by default: with the plain likelihood only σ_μ + σ_n is identified, σ_n shrinks
        # and the Bayes output falls back to the noisy input (measured: docs/benchmarks.md)
        Param("loss", str, "eq8", choices=("eq8", "likelihood"), user=False,
              help="eq8: the paper's Eq. 8; likelihood: the released scripts' plain likelihood"),
        Param("pretrain", float, 0.2, 0.0, 0.95, user=False,
              help="fraction of training that fits μ alone with an L2 loss"),
        MASK,
    )

    def model_config(self, channels, width=48, depth=5):
        # width/depth of the U-Net presets map to D-BSN's channels and residual blocks:
        # 48/5 (GPU) -> 96 channels, 8 blocks, the reference size
        spot = self.spot
        if spot.ly and spot.lx:
            raise InputError(f"D-BSN's dilated branches cannot hide a box-shaped blind spot "
                             f"({spot.spec()}); use method 'b2u' or 'n2v' for noise correlated "
                             "along both axes")
        cfg = {"arch": "dbsn", "in_channels": channels, "out_channels": channels,
               "width": 2 * width, "blocks": max(2, 2 * depth - 2)}
        if not spot.is_pixel:  # the first convs of both branches also skip the correlated lags
            cfg.update(blind_ly=spot.ly, blind_lx=spot.lx)
        return cfg

    def run(self, net, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return tuple(t.float() for t in net(x))

    schedule_name = "stage"
    schedule_label = "stage (−1: μ pre-training, +1: likelihood)"

    def schedule(self, p):
        # -1 while μ is pre-trained with L2, then +1 (likelihood): a 0-d tensor in the loss,
        # selected with torch.where so the step never synchronizes or recompiles
        return -1.0 if p < float(self.params["pretrain"]) else 1.0

    def training_loss(self, model, y, sched):
        mu, s_mu, s_n = self.run(model, y)
        y = y.float()
        mse = torch.mean((mu - y) ** 2)
        nll = dbsn_loss(mu, s_mu, s_n, y, self.params["loss"])
        loss = nll if sched is None else torch.where(sched < 0, mse, nll)
        return loss, {"loss": loss, "mse": mse.detach()}

    def blind_prediction(self, model, y):
        return self.run(model, y)[0]

    def validation_error(self, model, y):
        return torch.mean((self.blind_prediction(model, y).float() - y.float()) ** 2)

    def predict(self, model, y, output=None):
        output = self.check_output(output)
        mu, s_mu, s_n = self.run(model, y)
        if output == "mu":
            return mu
        return (y.float() * s_mu + mu * s_n) / (s_mu + s_n)

    def previews(self, model, y, sched):
        mu, s_mu, s_n = self.run(model, y)
        return {"mu": mu, "bayes": (y.float() * s_mu + mu * s_n) / (s_mu + s_n),
                "noise_std": s_n.sqrt()}

    # No Poisson–Gaussian readout (unlike B2S): measured at the CPU preset, the σ_n head stays
    # nearly flat (0.0034 everywhere on a set whose true variance runs 0.002–0.015, normalized
    # units), so a gain fitted from it would be wrong; docs/benchmarks.md. The σ_n map is still
    # shown as a preview and used by the Bayes output.
