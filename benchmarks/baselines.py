"""Classical baselines for the quality benchmark: a Gaussian filter and VST + BM3D.

- Gaussian filter: sigma chosen on a grid to maximize PSNR against the ground truth — an
  *oracle* (it peeks at the clean image), so it is an upper bound for a tuned Gaussian.
- VST + BM3D, as FMDD's own benchmark: estimate Poisson–Gaussian parameters (var = a·mean + b)
  from the noisy image itself, stabilize with the generalized Anscombe transform, BM3D at unit
  sigma, then the closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2013).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_b2u.metrics import evaluate

GAUSS_SIGMAS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5)


def gaussian_best(frames: np.ndarray, gt: np.ndarray, sigmas=GAUSS_SIGMAS):
    """Filter each frame with the sigma that gives the best mean PSNR; returns (out, sigma)."""
    best = None
    for s in sigmas:
        out = np.stack([ndimage.gaussian_filter(f.astype(np.float64), s, mode="reflect")
                        for f in frames])
        p = np.mean([evaluate(o, gt)[0] for o in out])
        if best is None or p > best[0]:
            best = (p, s, out)
    return best[2], best[1]


def estimate_poisson_gaussian(img: np.ndarray, block: int = 8, bins: int = 12):
    """Fit var = a·mean + b from one image: residuals of a 4-neighbour predictor measure the
    noise, block means the signal; per intensity bin the lower quartile of block variances
    avoids edges and texture (a simplified Foi et al. 2008). Returns (a, b), a > 0."""
    y = img.astype(np.float64)
    pred = ndimage.convolve(y, np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4.0, mode="reflect")
    r = (y - pred) / np.sqrt(1.25)  # var(r) = noise var for independent noise
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    mb = y[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3)).ravel()
    vb = r[:h, :w].reshape(h // block, block, w // block, block).var(axis=(1, 3)).ravel()
    edges = np.quantile(mb, np.linspace(0, 1, bins + 1))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mb >= lo) & (mb <= hi)
        if sel.sum() >= 4:
            xs.append(np.median(mb[sel]))
            ys.append(np.quantile(vb[sel], 0.25) / 0.85)  # lower quartile, bias-corrected
    xs, ys = np.asarray(xs), np.asarray(ys)
    a, b = np.polyfit(xs, ys, 1) if len(xs) >= 2 else (0.0, float(np.var(r)))
    a = max(float(a), 1e-3)
    b = float(b)
    return a, b


def gat(y: np.ndarray, a: float, b: float) -> np.ndarray:
    return 2.0 / a * np.sqrt(np.maximum(a * y + 3.0 / 8.0 * a**2 + b, 0.0))


def inverse_gat(d: np.ndarray, a: float, b: float) -> np.ndarray:
    d = np.maximum(d, 0.8)  # the approximation diverges near 0
    s32 = np.sqrt(1.5)
    exact = 0.25 * d**2 + 0.25 * s32 / d - 11.0 / 8.0 / d**2 + 5.0 / 8.0 * s32 / d**3 - 1.0 / 8.0
    return a * (exact - b / a**2)


def vst_bm3d(frame: np.ndarray, params=None):
    """Denoise one frame with VST + BM3D; returns (out, (a, b))."""
    import bm3d

    a, b = params if params is not None else estimate_poisson_gaussian(frame)
    z = gat(frame.astype(np.float64), a, b)
    zd = bm3d.bm3d(z, sigma_psd=1.0)
    return inverse_gat(np.asarray(zd, np.float64), a, b), (a, b)
