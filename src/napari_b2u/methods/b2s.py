"""Blind2Sound (Liu, Wang, Chen, Han): B2U with an adaptive re-visible loss (METHOD.md §2).

The U-Net predicts a mean and a spread per pixel for the blind and the visible branch; a small
noise estimator fits a Poisson–Gaussian model (variance α·μ + σ²) per image; the loss is the
Gaussian negative log-likelihood of the λ-mixture of both branches.
"""

from __future__ import annotations

import math

import torch

from ..losses import lambda_schedule, weighted_mean
from ..masking import global_mask, mask_mapper
from ..models.b2s_net import B2SModel
from ..params import Param
from .b2u import CELLS, COPIES, MASK, lambda_params, step_copies
from .base import Method


def noise_scalars(est):
    """Per-image (σ1, σ2, α) from the estimator's raw output map (B, 3C, h, w): |·| + 1e-5 at
    every pixel, then the image average (METHOD.md §2) -> (B, 3C, 1, 1), all positive."""
    return (est.abs() + 1e-5).mean(dim=(2, 3), keepdim=True)


def b2s_loss(mu_m, a_m, mu_v, a_v, y, est, lam, weight=None):
    """The adaptive re-visible loss. ``est``: the estimator's raw output map (B, 3C, h, w),
    channels (σ1, σ2, α) per image channel.

    Returns (loss, σ_n map); ``weight`` (0/1) keeps the pixels a step's copies covered. The
    visible branch and α·μ_y's μ_y carry no gradient.
    """
    c = y.shape[1]
    mu_v, a_v = mu_v.detach(), a_v.detach()
    sig_m, sig_v = a_m**2, a_v**2
    e = noise_scalars(est)
    s1, s2, alpha = e[:, :c], e[:, c:2 * c], e[:, 2 * c:]
    k = 1.0 + lam
    mu_y = (mu_m + lam * mu_v) / k
    sig_model = (sig_m + lam**2 * sig_v) / k**2
    sig_n = (s1 + lam**2 * s2) / k**2 + alpha * mu_y.detach().clamp(min=1e-3)
    var = sig_model + sig_n
    loss = weighted_mean((y - mu_y) ** 2 / var + torch.log(var), weight)
    return loss, sig_n


class Blind2Sound(Method):
    name = "b2s"
    title = "Blind2Sound"
    takes_context = True
    outputs = ("visible", "weighted")
    preview_names = ("blind", "visible", "weighted", "noise_std")
    default_preview = "weighted"
    texts = {
        "visible": "visible μ_v: the network's mean on the unmasked image — fast, one pass",
        "weighted": "weighted (μ_m + λ·μ_v)/(λ + 1): blind and visible means combined — "
                    "s² + 1 passes",
        "blind": "blind μ_m: the mean predicted by the copy in which each pixel was masked",
        "noise_std": "the fitted Poisson–Gaussian noise standard deviation, in the input's "
                     "units",
        "loss": "negative log-likelihood of the λ-mixture (can be negative)",
        "blind_mse": "blind-spot error mean((μ_m − y)²): independent of λ",
    }
    spread_previews = ("noise_std",)
    schedule_name = "lambda"
    schedule_label = "λ (visible weight)"
    loss_terms = ("loss", "blind_mse")
    plot_term = "blind_mse"
    clip_grad_norm = 5.0
    parameters = (
        CELLS,
        MASK,
        COPIES,
        *lambda_params(3.0, 11.0),
        # authors: lr 4e-4, estimator 2e-4
        Param("est_lr_scale", float, 0.5, 0.0, 10.0, user=False,
              help="learning rate of the noise estimator relative to the denoiser's"),
    )

    @property
    def cells(self) -> int:
        return self.spot.cells(int(self.params["cells"]))

    def model_config(self, channels, width=48, depth=5):
        cfg = {"arch": "b2s", "channels": channels, "width": width, "depth": depth}
        if self.context:  # (only then: model files without context stay as they were)
            cfg["window"] = self.window
        return cfg

    def build(self, config):
        cfg = dict(config)
        cfg.pop("arch", None)
        return B2SModel(**cfg)

    def patch_multiple(self, config):
        return 2 ** int(config["depth"])

    def modules_to_compile(self, model):
        return [model.net, model.est]

    def param_groups(self, model):
        return [{"params": list(model.net.parameters()), "lr_scale": 1.0},
                {"params": list(model.est.parameters()),
                 "lr_scale": float(self.params["est_lr_scale"])}]

    def schedule(self, p):
        pr = self.params
        return lambda_schedule(p, pr["lambda_start"], pr["lambda_end"], pr["lambda_hold"])

    def _split(self, out):
        c = out.shape[1] // 2
        return out[:, :c].float(), out[:, c:].float()

    def _blind(self, model, y, grad_blind=True, copies=None):
        """The blind branch's network output (mean and spread channels), mapped back."""
        s = self.cells
        y, ctx = self.split(y)  # the centre frame is masked, its neighbours are not
        with torch.set_grad_enabled(grad_blind and torch.is_grad_enabled()):
            return mask_mapper(self.run(model.net, global_mask(y, s, self.spot, copies), ctx),
                               s, copies)

    def _branches(self, model, y, grad_blind=True, copies=None):
        blind = self._blind(model, y, grad_blind, copies)
        with torch.no_grad():
            visible = self.run(model.net, y)
        return self._split(blind), self._split(visible)

    def _est(self, model, y):
        return self.run(model.est, self.split(y)[0]).float()  # the centre frame's noise

    def training_loss(self, model, y, sched):
        copies, weight = step_copies(self, y)
        (mu_m, a_m), (mu_v, a_v) = self._branches(model, y, copies=copies)
        centre = self.split(y)[0].float()
        loss, _ = b2s_loss(mu_m, a_m, mu_v, a_v, centre, self._est(model, y), sched, weight)
        mse = weighted_mean((mu_m.detach() - centre) ** 2, weight)
        return loss, {"loss": loss, "blind_mse": mse}

    def blind_prediction(self, model, y):
        return self._split(self._blind(model, y, grad_blind=False))[0]  # no visible pass

    def validation_error(self, model, y):
        return torch.mean((self.blind_prediction(model, y) - self.split(y)[0].float()) ** 2)

    def predict(self, model, y, output=None):
        output = self.check_output(output)
        if output == "visible":
            return self._split(self.run(model.net, y))[0]
        (mu_m, _), (mu_v, _) = self._branches(model, y, grad_blind=False)
        lam = float(self.params["lambda_end"])
        return (mu_m + lam * mu_v) / (1 + lam)

    def previews(self, model, y, sched):
        (mu_m, a_m), (mu_v, a_v) = self._branches(model, y, grad_blind=False)
        lam = float(sched if sched is not None else self.params["lambda_end"])
        _, sig_n = b2s_loss(mu_m, a_m, mu_v, a_v, self.split(y)[0].float(),
                            self._est(model, y), lam)
        return {"blind": mu_m, "visible": mu_v, "weighted": (mu_m + lam * mu_v) / (1 + lam),
                "noise_std": sig_n.sqrt()}

    def copies_per_image(self, output):
        return 1 if output == "visible" else self.cells**2 + 1

    def readout(self, model, y, offset, scale):
        """Fitted Poisson–Gaussian noise: var(raw) = gain·(mean − offset) + sigma²."""
        e = noise_scalars(self._est(model, y))
        c = self.split(y)[0].shape[1]
        lam = float(self.params["lambda_end"])
        s1, s2, alpha = (e[:, i * c:(i + 1) * c].mean().item() for i in range(3))
        gauss = (s1 + lam**2 * s2) / (1 + lam) ** 2
        return {
            "noise_gain": alpha * scale,
            "noise_sigma": math.sqrt(gauss) * scale,
            "noise_model": "variance = noise_gain * (mean - offset) + noise_sigma**2",
            "offset": offset,
        }
