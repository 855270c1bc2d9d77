"""Stein's unbiased risk estimate (SURE) of denoised outputs, without ground truth.

For noise of variance v = a·signal + b (per channel) independent between pixels,
E‖out − x‖² + Σv = E‖out − y‖² + 2 Σ v_i ∂out_i/∂y_i: the divergence term is what an output that
sees its noisy pixel gains by passing that pixel's noise, which a plain residual rewards. Training
uses it twice (:mod:`.keep`, :mod:`.floor`): to choose between the checkpoint the blind-spot
validation kept and the last weights, and to weigh the classical floor's blend. Both compare
outputs on the same crops with the same probes, so their difference is estimated with much less
noise than either risk alone.

That is exact for Gaussian noise. Photon noise is not Gaussian, and at a few photons per pixel
(widefield W2S frames: ~2) an output that is nonlinear in its own pixel gets a second term: for
y = a·Poisson(x/a) + Gaussian, E[n_i out_i] = v_i E[∂out_i/∂y_i] + (a p_i / 2) E[∂²out_i/∂y_i²]
+ O(a³), p_i the Poisson part of v_i (Le Montagner et al., "An unbiased risk estimator for image
denoising in the presence of mixed Poisson–Gaussian noise", IEEE TIP 2014, to second order).
Without it the network's risk on the W2S stack was 1.7·10⁻⁵ too high, enough to hand half the
weight to a Gaussian filter 0.7 dB worse (docs/benchmarks.md). A linear filter has no second
derivative, so only networks carry the term; it vanishes as the photon step a does.

Noise correlated between neighbours (point-scanning confocals, some cameras) has covariance
C = S R S (S the deviations, R the correlation at each lag, as the noise check models it:
:meth:`~napari_b2u.noise.NoiseReport.noise_kernel`), and the first term becomes
tr(C ∂out/∂y): an output that passes a neighbour's correlated noise gains by it too, which
Σ v ∂out_i/∂y_i does not see. On a synthetic
frame correlated at 0.27 along X (clean image known), the fine-tuned network's term was 0.58
of the truth with the independent form, and 0.93–1.07 with this one and a variance fit that
knows the correlation, both measured from that frame (docs/benchmarks.md).

Clipped pixels (a background subtracted to 0, saturation) break the noise model: there y is
not x + noise but the bound, and next to them the noise is cut off. Where the noise check
measures away from them (:func:`~napari_b2u.noise.exclusion_bounds`: a quarter of the pixels
or more at a bound), the risk does too: every sum runs over the pixels with no clipped pixel
within :data:`CLIP_SIDE` (``where``). Stein's identity holds pixel by pixel,
so the risk of those pixels stays unbiased whatever the network does with the clipped ones
(within 3 % of the truth on synthetic frames half clipped at 0); over all pixels it charged
noise to pixels that hold none and ranked a Gaussian filter twice too wide above the best one,
and one of 3 px above the noise passed through (tests/test_sure_clipped.py). Where clipping is
so dense that fewer than :data:`MIN_MEASURED` pixels are that far from it (instant-SIM frames
with 20 % of their pixels at 0 and 20 % saturated have none), the risk is measured on the
pixels not clipped themselves: their noise is cut only where the bound is within its reach,
and charging none to the clipped ones removes the larger bias.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..clipped import unclipped
from ..denoise.predict import predict_view
from ..noise import exclusion_bounds, frames_report, measured_frames, variance_fit
from .crops import crop_spots, take_crops

#: the divergence probe's step, in units of the noise's standard deviation (0.01 and 0.05 gave
#: the same blend weights on real frames)
PROBE_EPS = 0.01
#: the smoothing that stands for the signal in the noise variance a·signal + b
SIGNAL_SIGMA = 1.5
#: crops per network pass
BATCH = 4
#: the second-derivative probe: standardized Bernoulli(q) values, skewed (third moment
#: (1 − 2q)/√(q(1 − q)) ≈ 2.7), so that p_i × the second difference of out_i along p estimates
#: ∂²out_i/∂y_i²; its step is one photon (a), at least ``CURVE_MIN_STEP``
CURVE_Q = 0.1
CURVE_MIN_STEP = 1e-3
#: the fewest pixels a risk is measured on away from clipped ones: 1.6 % of the 16 crops of
#: 128² it usually has (below, its sums rest on a few spots of the frame). Fewer: it is
#: measured on the pixels not clipped themselves; fewer still: no risk, the blind-spot error
#: decides (:func:`_measured_pixels`). Set, not tuned: no benchmark case sits near it.
MIN_MEASURED = 4096
#: side of the window around each measured pixel that must hold no clipped pixel: nearer, the
#: noise is cut at the bound (on real iSIM frames with 9-34 % of their pixels clipped, the noise
#: check read correlations of 0.2-0.4 where the noise has none with 1- or 3-px windows, ≤ 0.07
#: with 5). Wider than the check's window (:data:`~napari_b2u.correlation.CORR_SIDE`), which
#: sets that reading aside by a rule the risk has no counterpart of
CLIP_SIDE = 5


class Risk:
    """SURE of outputs on ``crops`` (B, C, H, W, normalized) for noise fitted as ``fits``:
    [(a, b)] per channel (:func:`~napari_b2u.noise.variance_fit`) for every crop, or one such
    list per crop (the law of the frame each crop came from). ``signal`` (default: a
    Gaussian smoothing of the crops) stands for the clean signal in the variance; the two
    Monte-Carlo probes (divergence, photon term), drawn once from ``seed``, serve every output
    compared. ``corr``: the noise's correlation between neighbours (a (2L + 1)² kernel, lag 0
    in the centre; None: independent). ``context``: with stack context, the crops'
    neighbouring frames (B, 2k·C, H, W), given to every output unperturbed (their noise is
    independent of the crops': they add nothing to Stein's term). ``where``: the pixels
    measured (B, C, H, W, bool; None: all), e.g. those away from clipped ones. Risks are on
    the scale of mean squared error + mean noise variance, per pixel measured."""

    def __init__(self, crops: torch.Tensor, fits, seed: int = 0,
                 signal: torch.Tensor | None = None, corr: np.ndarray | None = None,
                 context: torch.Tensor | None = None, where: torch.Tensor | None = None):
        from ..methods.classical import gaussian_filter

        self.y = crops.float()
        self.context = context
        dev = self.y.device
        fits = torch.tensor(np.asarray(fits, np.float64), dtype=torch.float32, device=dev)
        fits = fits.expand(self.y.shape[0], -1, -1) if fits.ndim == 2 else fits  # (B, C, 2)
        a, b = fits[..., 0, None, None], fits[..., 1, None, None]
        if signal is None:
            signal = gaussian_filter(self.y, SIGNAL_SIGMA)
        self.var = (a * signal.float() + b).clamp(min=0.0)
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        white = torch.randn(self.y.shape, generator=gen, device=dev)
        self.probe = self.var.sqrt() * white
        # correlated noise (covariance C = S R S, S the deviations, R the correlation between
        # lags): Stein's term is tr(C J) = E[(S R z)ᵀ J S z] for white z, so the network's
        # response to the probe S z is read against S (R ∗ z) instead of S z
        self.corr, self.dual = None, self.probe
        if corr is not None:
            self.corr = np.asarray(corr, np.float64)
            k = torch.tensor(self.corr, dtype=torch.float32, device=dev)
            c = self.y.shape[1]
            mixed = torch.nn.functional.conv2d(white, k.expand(c, 1, *k.shape),
                                               padding=k.shape[-1] // 2, groups=c)
            self.dual = self.var.sqrt() * mixed
        # the second-order (photon) term: coefficient a/2 × the Poisson part of the variance (a
        # positive b is read noise; a negative one an offset below the signal's zero)
        self.curve = a.clamp(min=0.0) / 2 * (self.var - b.clamp(min=0.0)).clamp(min=0.0)
        q = CURVE_Q
        bern = (torch.rand(self.y.shape, generator=gen, device=dev) < q).float()
        self.curve_probe = (bern - q) / math.sqrt(q * (1 - q))
        self.curve_moment = (1 - 2 * q) / math.sqrt(q * (1 - q))
        self.curve_step = a.clamp(min=CURVE_MIN_STEP)  # (B, C, 1, 1)
        # every sum is weighted by the pixels measured (1 everywhere without clipping)
        self.where = (torch.ones_like(self.y) if where is None else
                      torch.as_tensor(where, device=dev).to(self.y.dtype).expand_as(self.y))
        self.count = float(self.where.sum())
        #: the fraction of the crops' pixels measured
        self.measured = self.count / self.y.numel()

    def usable(self) -> bool:
        """False when the noise fit gave nothing to measure with (e.g. flat frames)."""
        return (bool(torch.isfinite(self.var).all()) and float(self.var.sum()) > 0
                and self.count >= min(MIN_MEASURED, self.y.numel()))

    @torch.no_grad()
    def output(self, predict) -> tuple[torch.Tensor, float]:
        """``predict`` (a function of normalized crops) on the crops, and its divergence term
        Σ v ∂out/∂y (tr(C ∂out/∂y) for correlated noise) + Σ (a p / 2) ∂²out/∂y² (one probe
        each: four passes)."""
        outs, div = [], 0.0
        for i in range(0, self.y.shape[0], BATCH):
            sl = slice(i, i + BATCH)
            y, probe, where = self.y[sl], self.probe[sl], self.where[sl]
            run = (predict if self.context is None
                   else _with_context(predict, self.context[sl]))
            g = run(y).float()
            div += float((where * self.dual[sl] * (run(y + PROBE_EPS * probe).float() - g)
                          ).sum()) / PROBE_EPS
            step = self.curve_step[sl] * self.curve_probe[sl]
            second = (run(y + step).float() + run(y - step).float() - 2 * g) / (
                self.curve_step[sl] ** 2)
            div += float((where * self.curve[sl] * self.curve_probe[sl] * second).sum()) / (
                self.curve_moment)
            outs.append(g)
        return torch.cat(outs), div

    def error(self, out: torch.Tensor, div: float) -> float:
        """The estimated mean squared error (+ mean noise variance) of an :meth:`output`."""
        return (float((self.where * (out - self.y) ** 2).sum()) + 2 * div) / self.count

    @torch.no_grad()
    def blend_sums(self, out: torch.Tensor, div: float, filt):
        """For w × ``out`` + (1 − w) × ``filt`` (a GaussModel: the full filter), with
        r = filter − y and e = out − filter: (Σr², Σr·e, Σe², D_out, D_filter, count). The
        blend's risk is (Σr² + 2wΣre + w²Σe² + 2(w D_out + (1 − w) D_filter)) / count,
        quadratic in w. The filter's divergence is exact for independent noise: its centre
        tap × Σv; for correlated noise Σ_d R(d) g(d) × Σv (:meth:`_filter_trace`), which takes
        the variance as locally constant over the filter's reach."""
        from ..methods.classical import gaussian_kernel1d

        f = filt(self.y).float()
        trace = torch.tensor([self._filter_trace(gaussian_kernel1d(float(s)))
                              for s in filt.sigma], device=self.y.device).view(1, -1, 1, 1)
        r, e, w = f - self.y, out - f, self.where
        sums = [float((w * r * r).sum()), float((w * r * e).sum()), float((w * e * e).sum()),
                div, float((w * trace * self.var).sum())]
        return (*sums, self.count) if np.all(np.isfinite(sums)) else None

    def _filter_trace(self, g1: np.ndarray) -> float:
        """Σ_d R(d) g(d) of the separable filter g = g1 ⊗ g1: its Stein term per unit of noise
        variance (the centre tap g(0) when the noise is independent)."""
        g1 = np.asarray(g1, np.float64)
        if self.corr is None:
            return float(g1.max()) ** 2
        g = np.outer(g1, g1)
        r, h = self.corr.shape[0] // 2, g.shape[0] // 2
        n = min(r, h)
        return float((self.corr[r - n:r + n + 1, r - n:r + n + 1]
                      * g[h - n:h + n + 1, h - n:h + n + 1]).sum())


def sure_risk(trainer, count: int = 16):
    """The risk estimate on ``count`` training crops (those the floor calibrates on; fewer
    when the end phase's share of a short time budget pays for fewer), each with the
    noise law of its own frame and, where the noise is correlated between neighbours, its
    measured correlation; None when the noise fit gives nothing to measure with. Where the
    noise check measures away from clipped pixels, so does the risk (the module's text)."""
    train, inputs = trainer.data.train, trainer.data.train_inputs
    size = max(trainer.patch_size, 128)
    spots = crop_spots(train.shape, size, count)
    taken = take_crops(train, size, spots)
    crops = torch.from_numpy(taken).to(trainer.device)
    context = None
    if inputs is not train:  # stack context: the same crops of the neighbouring frames
        context = torch.from_numpy(take_crops(inputs, size, spots)[:, taken.shape[1]:]).to(
            trainer.device)
    # the noise check of training (mask="auto"), else one of these crops (a given mask)
    report = trainer.noise if trainer.noise is not None else frames_report(taken)
    corr = report.noise_kernel()
    laws = {f: variance_fit(train, f, corr) for f in sorted({f for f, _, _ in spots})}
    # the clip bounds of what the noise check measured (a sample of lazy frames, not all of
    # them), with its clipped fractions when it measured the training frames
    fractions = (None if trainer.noise is None else
                 (trainer.noise.clipped_low, trainer.noise.clipped_high))
    where = _measured_pixels(taken, exclusion_bounds(measured_frames(train),
                                                     fractions=fractions))
    risk = Risk(crops, [laws[f] for f, _, _ in spots], trainer.config.seed, corr=corr,
                context=context, where=None if where is None else torch.from_numpy(where))
    return risk if risk.usable() else None


def _measured_pixels(crops: np.ndarray, bounds) -> np.ndarray | None:
    """Which of ``crops``' pixels (B, C, H, W) the risk sums over: with clip ``bounds``
    (:func:`~napari_b2u.noise.exclusion_bounds`; None: all pixels) those with no clipped pixel
    within :data:`CLIP_SIDE`, or, when fewer than :data:`MIN_MEASURED` are,
    those not clipped themselves (the module's text)."""
    if bounds is None:
        return None
    for side in (CLIP_SIDE, 1):
        where = np.stack([[unclipped(plane, bounds, side) for plane in crop] for crop in crops])
        if where.sum() >= MIN_MEASURED:
            break
    return where


def network_output(trainer, views: int):
    """The trained network's prediction as the user gets it, as a function of normalized
    crops: the method's default output averaged over ``views`` dihedral views (inference's
    count, or fewer when a time budget is short); in float32 (the risk probe's differences are
    below half precision)."""
    method, model = trainer.method, trainer.model
    output = method.check_output(None)

    def predict(y):
        return sum(predict_view(method, model, y, output, v) for v in range(views)) / views
    return predict


def _with_context(predict, context: torch.Tensor):
    """``predict`` of crops given their neighbouring frames' channels as well."""
    def inner(y):
        return predict(torch.cat([y, context.to(y.dtype)], 1))
    return inner
