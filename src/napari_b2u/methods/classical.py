"""Classical denoisers as methods of the engine: a self-calibrated Gaussian filter and VST+BM3D.

Neither learns weights; each *calibrates* on the training data (the engine calls ``fit`` instead
of gradient steps) and is validated with the same kind of self-supervised error as the learned
methods — the error of its J-invariant version (Batson & Royer 2019, Noise2Self): the output at
a pixel computed without that pixel. For pixel-independent noise this error is the true error
of the J-invariant denoiser plus the noise variance, exactly like B2U's blind-spot error, so the
widget, the API and the default's fallback can compare a Gaussian filter with B2U on one scale.

- ``gauss``: σ per channel chosen on a grid by the J-invariant error of the filter with its
  centre tap removed (renormalized); the output is the ordinary filter with that σ. Seconds.
- ``bm3d``: the generalized Anscombe transform with Poisson–Gaussian parameters estimated from
  the data (numpy, :mod:`napari_b2u.noise`), BM3D at unit σ (the optional ``bm3d`` package:
  ``pip install 'napari-b2u[bm3d]'``), the closed-form unbiased inverse (Mäkitalo & Foi 2013);
  the σ multiplier is calibrated by the J-invariant error over masked copies.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..masking import PIXEL, BlindSpot, global_mask, mask_mapper
from ..params import Param
from .b2u import MASK
from .base import Method

#: σ candidates of the Gaussian filter (pixels): 0.3 … 6, ratio ≈ 1.17
GAUSS_SIGMAS = tuple(float(v) for v in np.geomspace(0.3, 6.0, 20))


#: the largest share of a Gaussian's weight its J-invariant version may drop (GaussMethod)
MAX_HIDDEN = 0.9


def hidden_weight(sigma: float, spot: BlindSpot = PIXEL) -> float:
    """The share of the 2-D Gaussian's weight inside the blind ``spot`` (centre included)."""
    g = gaussian_kernel1d(sigma, dtype=torch.float64)
    r = g.numel() // 2
    return float(g[r - spot.lx:r + spot.lx + 1].sum() * g[r - spot.ly:r + spot.ly + 1].sum())


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    r = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _separable(y: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Convolve (B, C, H, W) with the 1-D kernels ``gx`` along X, ``gy`` along Y (odd lengths,
    reflect padding, kernels cut to the image where it is smaller)."""
    c = y.shape[1]
    out = y
    for dim, g in ((-1, gx), (-2, gy)):
        r = g.numel() // 2
        pad = min(r, y.shape[dim] - 1)
        k = g if pad == r else g[r - pad:r + pad + 1]
        shape = (c, 1, 1, k.numel()) if dim == -1 else (c, 1, k.numel(), 1)
        pads = (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad)
        view = (1, 1, 1, k.numel()) if dim == -1 else (1, 1, k.numel(), 1)
        out = F.conv2d(F.pad(out, pads, mode="reflect") if pad else out,
                       k.view(view).expand(shape).contiguous(), groups=c)
    return out


def gaussian_filter(y: torch.Tensor, sigma: float, j_invariant: bool = False,
                    spot: BlindSpot = PIXEL) -> torch.Tensor:
    """Separable Gaussian filter of (B, C, H, W) with reflect padding; ``j_invariant``: without
    each pixel's own contribution and that of the blind ``spot`` around it (the pixels whose
    noise is correlated with it): those taps removed, the weights renormalized. The removed
    rectangle is separable, so this is two separable filters."""
    g = gaussian_kernel1d(sigma, y.device, y.dtype)
    r = g.numel() // 2

    def cut(n):  # the kernel cut to n taps each side (an image smaller than the kernel)
        pad = min(r, n - 1)
        k = g[r - pad:r + pad + 1]
        return k / k.sum()

    gx, gy = cut(y.shape[-1]), cut(y.shape[-2])
    out = _separable(y, gx, gy)
    if j_invariant:
        def inner(k, extent):  # the taps within ``extent`` of the centre, zero elsewhere
            rr = k.numel() // 2
            keep = (torch.arange(-rr, rr + 1, device=k.device).abs() <= extent).to(k.dtype)
            return k * keep

        ix, iy = inner(gx, spot.lx), inner(gy, spot.ly)
        mass = float(ix.sum() * iy.sum())
        if spot.is_pixel:  # the centre tap alone: no second filter needed
            out = (out - mass * y) / (1.0 - mass)
        else:
            out = (out - _separable(y, ix, iy)) / (1.0 - mass)
    return out


class GaussModel(nn.Module):
    """No weights to learn: σ per channel, calibrated by ``GaussMethod.fit``."""

    multiple = 1

    def __init__(self, channels: int = 1):
        super().__init__()
        self.register_buffer("sigma", torch.ones(channels))

    def forward(self, y):
        return torch.cat([gaussian_filter(y[:, i:i + 1], float(s))
                          for i, s in enumerate(self.sigma)], 1)


class _Classical(Method):
    no_context_reason = "a classical filter has no network to give the neighbouring frames to."
    trainable = False

    def model_config(self, channels, width=48, depth=5):
        return {"arch": self.name, "channels": channels}

    def patch_multiple(self, config):
        return 1

    def training_loss(self, model, y, sched):  # never called: the engine fits instead
        raise RuntimeError(f"{self.name} is calibrated, not trained")

    def validation_error(self, model, y):
        return torch.mean((self.j_invariant(model, y) - y.float()) ** 2)

    def previews(self, model, y, sched):
        return {"visible": self.predict(model, y)}


class GaussMethod(_Classical):
    name = "gauss"
    title = "Gaussian filter (self-calibrated)"
    outputs = ("visible",)
    preview_names = ("visible",)
    texts = {"visible": "Gaussian filter with the σ the self-supervised error chose — seconds",
             "loss": "J-invariant error of the candidate σ"}
    #: the blind spot of the J-invariant error that chooses σ (correlated noise: the extent)
    parameters = (MASK,)

    def build(self, config):
        return GaussModel(int(config["channels"]))

    def j_invariant(self, model, y):
        return torch.cat([gaussian_filter(y[:, i:i + 1].float(), float(s), True, self.spot)
                          for i, s in enumerate(model.sigma)], 1)

    def candidates(self) -> list[float]:
        """The σ grid, without the filters whose blind spot holds more than ``MAX_HIDDEN`` of
        their weight: their J-invariant version (whose error is measured) is then a ring
        average of the pixels beyond the spot, not the filter returned — with a 3x3 box that
        picked σ = 0.3, an identity, on real correlated frames."""
        spot = self.spot
        return [s for s in GAUSS_SIGMAS if hidden_weight(s, spot) <= MAX_HIDDEN]

    @torch.no_grad()
    def fit(self, model, crops: torch.Tensor):
        """σ per channel minimizing the J-invariant error on ``crops``; yields (done, total)."""
        y = crops.float()
        sigmas = self.candidates()
        errs = np.zeros((len(sigmas), y.shape[1]))
        for k, s in enumerate(sigmas):
            f = gaussian_filter(y, s, j_invariant=True, spot=self.spot)
            errs[k] = ((f - y) ** 2).mean(dim=(0, 2, 3)).cpu().numpy()
            yield k + 1, len(sigmas)
        model.sigma.copy_(torch.tensor([sigmas[i] for i in errs.argmin(0)]))

    def predict(self, model, y, output=None):
        self.check_output(output)
        return model(y.float())

    def readout(self, model, y, offset, scale):
        return {"gauss_sigma": [round(float(s), 3) for s in model.sigma]}


# ---- VST + BM3D ---------------------------------------------------------------------------------
def gat(y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Generalized Anscombe transform: Poisson–Gaussian (var = a·y + b) to unit variance."""
    return 2.0 / a * np.sqrt(np.maximum(a * y + 3.0 / 8.0 * a**2 + b, 0.0))


def inverse_gat(d: np.ndarray, a: float, b: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2013)."""
    d = np.maximum(d, 0.8)  # the approximation diverges near 0
    s32 = np.sqrt(1.5)
    exact = 0.25 * d**2 + 0.25 * s32 / d - 11.0 / 8.0 / d**2 + 5.0 / 8.0 * s32 / d**3 - 1.0 / 8.0
    return a * (exact - b / a**2)


def _bm3d():
    try:
        import bm3d
    except ImportError:
        raise InputError("method 'bm3d' needs the optional bm3d package: pip install "
                         "'napari-b2u[bm3d]'") from None
    return bm3d


def vst_bm3d(img: np.ndarray, a: float, b: float, sigma: float | np.ndarray = 1.0) -> np.ndarray:
    """Denoise one 2D image (any units) whose noise variance is a·mean + b. ``sigma``: BM3D's
    noise σ after the transform, or the noise's power spectrum there (an array of the image's
    shape, for correlated noise)."""
    z = gat(np.asarray(img, np.float64), a, b)
    zd = _bm3d().bm3d(z, sigma_psd=sigma)
    return inverse_gat(np.asarray(zd, np.float64), a, b)


class BM3DModel(nn.Module):
    """Noise parameters (a, b) per channel in normalized units and the σ multiplier."""

    multiple = 1

    def __init__(self, channels: int = 1):
        super().__init__()
        self.register_buffer("noise", torch.tensor([[1e-2, 0.0]] * channels))
        self.register_buffer("sigma", torch.ones(()))

    def forward(self, y):
        out = np.empty(tuple(y.shape), np.float32)
        arr = y.detach().float().cpu().numpy()
        # BM3D works best on values of order 1..255; scale normalized data up and back
        for i in range(arr.shape[0]):
            for c in range(arr.shape[1]):
                a, b = (float(v) for v in self.noise[c])
                s = 255.0
                out[i, c] = vst_bm3d(arr[i, c] * s, a * s, b * s * s, float(self.sigma)) / s
        return torch.from_numpy(out).to(y.device)


class BM3DMethod(_Classical):
    name = "bm3d"
    title = "VST + BM3D (estimated noise)"
    outputs = ("visible",)
    preview_names = ("visible",)
    texts = {"visible": "BM3D after a variance-stabilizing transform with the noise fitted to "
                        "the data — a strong classical denoiser, about a second per megapixel",
             "loss": "J-invariant error of the candidate σ multiplier"}
    parameters = (
        Param("cells", int, 2, 2, 4, user=False,
              help="masked copies (s²) used to compute BM3D's J-invariant error"),
        MASK,
    )
    #: σ multipliers tried by the calibration
    SCALES = (0.8, 1.0, 1.25)

    def build(self, config):
        return BM3DModel(int(config["channels"]))

    def j_invariant(self, model, y):
        spot = self.spot
        s = spot.cells(int(self.params["cells"]))
        return mask_mapper(model(global_mask(y.float(), s, spot)), s)

    @torch.no_grad()
    def fit(self, model, crops: torch.Tensor):
        _bm3d()
        from ..noise import estimate_poisson_gaussian

        y = crops.float()
        arr = y.cpu().numpy()
        for c in range(arr.shape[1]):
            fits = [estimate_poisson_gaussian(img[c]) for img in arr[:8]]
            a, b = (float(np.median(v)) for v in zip(*fits))
            model.noise[c] = torch.tensor([max(a, 1e-6), b])
        small = y[:2]  # the J-invariant error costs s² BM3D runs per crop
        best = (math.inf, 1.0)
        for k, scale in enumerate(self.SCALES):
            model.sigma.fill_(scale)
            err = float(self.validation_error(model, small))
            best = min(best, (err, scale))
            yield k + 1, len(self.SCALES)
        model.sigma.fill_(best[1])

    def predict(self, model, y, output=None):
        self.check_output(output)
        return model(y)

    def readout(self, model, y, offset, scale):
        a, b = (float(v) for v in model.noise[0])
        return {"noise_gain": a * scale, "noise_sigma": math.sqrt(max(b, 0.0)) * scale,
                "noise_model": "variance = noise_gain * (mean - offset) + noise_sigma**2",
                "offset": offset, "bm3d_sigma_scale": float(model.sigma)}
