"""Image quality metrics with the FMDD/B2U evaluation convention (METHOD.md §1).

PSNR: data range 255 on 8-bit-rounded images. SSIM: MATLAB style — 11x11 Gaussian window,
σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)², computed on the 'valid' part of the filtering,
which crops a 5-pixel border.
"""

from __future__ import annotations

import numpy as np


def to_uint8(img: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Values on a 0..``scale`` scale -> rounded 8-bit (clamp to [0, 1] of the scale first)."""
    x = np.clip(np.asarray(img, np.float64) / scale, 0.0, 1.0)
    return np.rint(x * 255.0).astype(np.uint8)


def psnr(img: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> float:
    a = np.asarray(img, np.float64)
    b = np.asarray(ref, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def _gauss_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation with a symmetric 1-D kernel along both axes."""
    k = g.size
    h, w = img.shape
    tmp = sum(g[i] * img[i:h - k + 1 + i, :] for i in range(k))
    return sum(g[i] * tmp[:, i:w - k + 1 + i] for i in range(k))


def ssim(img: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> float:
    a = np.asarray(img, np.float64)
    b = np.asarray(ref, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2D images of one shape, got {a.shape} and {b.shape}")
    g = _gauss_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a**2
    sbb = _filter_valid(b * b, g) - mu_b**2
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def evaluate(img: np.ndarray, ref: np.ndarray, scale: float = 255.0) -> tuple[float, float]:
    """(PSNR, SSIM) of an image against a reference, both on a 0..``scale`` scale, after the
    FMDD convention: clamp, round to 8 bits, data range 255."""
    a, b = to_uint8(img, scale), to_uint8(ref, scale)
    return psnr(a, b), ssim(a, b)
