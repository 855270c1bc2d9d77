"""Stein's unbiased risk estimate (SURE) of denoised outputs, without ground truth.

For noise of variance v = a·signal + b (per channel) independent between pixels,
E‖out − x‖² + Σv = E‖out − y‖² + 2 Σ v_i ∂out_i/∂y_i: the divergence term is what an output that
sees its noisy pixel gains by passing that pixel's noise, which a plain residual rewards. Training
uses it twice (:mod:`~napari_b2u.results`): to choose between the checkpoint the blind-spot
validation kept and the last weights, and to weigh the classical floor's blend. Both compare
outputs on the same crops with the same probe, so their difference is estimated with much less
noise than either risk alone.
"""

from __future__ import annotations

import numpy as np
import torch

#: the divergence probe's step, in units of the noise's standard deviation (0.01 and 0.05 gave
#: the same blend weights on real frames)
PROBE_EPS = 0.01
#: the smoothing that stands for the signal in the noise variance a·signal + b
SIGNAL_SIGMA = 1.5
#: crops per network pass
BATCH = 4


class Risk:
    """SURE of outputs on ``crops`` (B, C, H, W, normalized) for noise fitted as ``fits``
    ([(a, b)] per channel, :func:`~napari_b2u.noise.variance_fit`). ``signal`` (default: a
    Gaussian smoothing of the crops) stands for the clean signal in the variance; one Monte-Carlo
    probe, drawn once from ``seed``, serves every output compared. Risks are on the scale of
    mean squared error + mean noise variance."""

    def __init__(self, crops: torch.Tensor, fits, seed: int = 0,
                 signal: torch.Tensor | None = None):
        from .methods.classical import gaussian_filter

        self.y = crops.float()
        dev = self.y.device
        fits = torch.tensor(fits, dtype=torch.float32, device=dev)
        a, b = fits[:, 0].view(1, -1, 1, 1), fits[:, 1].view(1, -1, 1, 1)
        if signal is None:
            signal = gaussian_filter(self.y, SIGNAL_SIGMA)
        self.var = (a * signal.float() + b).clamp(min=0.0)
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        self.probe = self.var.sqrt() * torch.randn(self.y.shape, generator=gen, device=dev)
        self.count = self.y.numel()

    def usable(self) -> bool:
        """False when the noise fit gave nothing to measure with (e.g. flat frames)."""
        return bool(torch.isfinite(self.var).all()) and float(self.var.sum()) > 0

    @torch.no_grad()
    def output(self, predict) -> tuple[torch.Tensor, float]:
        """``predict`` (a function of normalized crops) on the crops, and its divergence term
        Σ v ∂out/∂y (one probe)."""
        outs, div = [], 0.0
        for i in range(0, self.y.shape[0], BATCH):
            y, probe = self.y[i:i + BATCH], self.probe[i:i + BATCH]
            g = predict(y).float()
            div += float((probe * (predict(y + PROBE_EPS * probe).float() - g)).sum()) / PROBE_EPS
            outs.append(g)
        return torch.cat(outs), div

    def error(self, out: torch.Tensor, div: float) -> float:
        """The estimated mean squared error (+ mean noise variance) of an :meth:`output`."""
        return (float(((out - self.y) ** 2).sum()) + 2 * div) / self.count

    @torch.no_grad()
    def blend_sums(self, out: torch.Tensor, div: float, filt):
        """For w × ``out`` + (1 − w) × ``filt`` (a GaussModel: the full filter), with
        r = filter − y and e = out − filter: (Σr², Σr·e, Σe², D_out, D_filter, count). The
        blend's risk is (Σr² + 2wΣre + w²Σe² + 2(w D_out + (1 − w) D_filter)) / count,
        quadratic in w. The filter's divergence is exact: its centre tap × Σv."""
        from .methods.classical import gaussian_kernel1d

        f = filt(self.y).float()
        centre = torch.tensor([float(gaussian_kernel1d(float(s)).max()) ** 2
                               for s in filt.sigma], device=self.y.device).view(1, -1, 1, 1)
        r, e = f - self.y, out - f
        sums = [float((r * r).sum()), float((r * e).sum()), float((e * e).sum()), div,
                float((centre * self.var).sum())]
        return (*sums, self.count) if np.all(np.isfinite(sums)) else None

