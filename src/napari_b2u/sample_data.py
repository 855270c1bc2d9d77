"""Built-in FMDD-like sample data: fluorescent structures under Poisson–Gaussian noise.

FMDD (Zhang et al. 2019) holds 50 noisy 8-bit frames of one static field of view per sample and
uses their average as ground truth. ``fmdd_like_stack`` does the same with a synthetic scene —
filaments, cells with textured cytoplasm and nuclei, and puncta — at a confocal-like photon level,
and also returns the clean image, so quality can be measured exactly.
"""

from __future__ import annotations

import numpy as np


def _gauss_fft(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur through the FFT (periodic borders; the scene is padded by the caller)."""
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    tf = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(img) * tf, s=(h, w))


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    n = _gauss_fft(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-12)


def _filaments(rng, shape, count: int) -> np.ndarray:
    h, w = shape
    img = np.zeros(shape)
    for _ in range(count):
        n = int(rng.integers(150, 600))
        pos = rng.uniform([0, 0], [h, w])
        ang = rng.uniform(0, 2 * np.pi)
        turn = rng.normal(0, 0.08, n).cumsum() * rng.uniform(0.3, 1.0)
        ys = pos[0] + np.cumsum(np.sin(ang + turn))
        xs = pos[1] + np.cumsum(np.cos(ang + turn))
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        np.add.at(img, (ys[ok].astype(int), xs[ok].astype(int)), rng.uniform(0.5, 1.0))
    return _gauss_fft(img, 0.9) * 2.2


def _cells(rng, shape, count: int) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros(shape)
    texture = 0.75 + 0.25 * _smooth_noise(rng, shape, 3.0)
    for _ in range(count):
        cy, cx = rng.uniform([0, 0], [h, w])
        ry, rx = rng.uniform(0.05, 0.12) * min(h, w) * rng.uniform(0.7, 1.3, 2)
        th = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(th) + dx * np.sin(th)) / ry
        v = (-dy * np.sin(th) + dx * np.cos(th)) / rx
        r = np.sqrt(u**2 + v**2)
        body = 1 / (1 + np.exp((r - 1) * 12))  # soft membrane edge
        nucleus = 1 / (1 + np.exp((r / 0.45 - 1) * 10))
        img += rng.uniform(0.25, 0.5) * body * texture + rng.uniform(-0.15, 0.35) * nucleus
    return np.clip(img, 0, None)


def _puncta(rng, shape, count: int) -> np.ndarray:
    img = np.zeros(shape)
    ys = rng.integers(0, shape[0], count)
    xs = rng.integers(0, shape[1], count)
    np.add.at(img, (ys, xs), rng.uniform(0.5, 1.0, count))
    return _gauss_fft(img, 1.3) * 2 * np.pi * 1.3**2 * 0.9


def clean_scene(shape=(256, 256), seed: int = 0) -> np.ndarray:
    """A clean fluorescence-like image with values in about [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pad = 16  # blur wraps around; render larger and crop
    big = (h + 2 * pad, w + 2 * pad)
    area = h * w / 256**2
    scene = (
        _cells(rng, big, max(1, int(round(6 * area))))
        + _filaments(rng, big, max(2, int(round(25 * area))))
        + _puncta(rng, big, max(3, int(round(60 * area))))
    )
    scene = 0.04 + scene * (0.85 / np.percentile(scene, 99.9))
    return np.clip(scene[pad:pad + h, pad:pad + w], 0, 1.0).astype(np.float32)


def add_poisson_gaussian(clean: np.ndarray, photons: float, read_noise: float, rng) -> np.ndarray:
    """``clean`` in [0, 1]: Poisson with ``photons`` at 1.0, plus Gaussian read noise (same scale)."""
    counts = rng.poisson(clean * photons) / photons
    return counts + rng.normal(0.0, read_noise, clean.shape)


def fmdd_like_stack(n_frames: int = 50, shape=(256, 256), photons: float = 40.0,
                    read_noise: float = 0.02, seed: int = 0, dtype=np.uint8):
    """Noisy 8-bit frames of one static scene, and its clean image.

    Returns ``(noisy, clean)``: ``noisy`` of shape (n_frames, Y, X) and ``dtype`` (uint8 by
    default, values 0..255 like FMDD's raw PNGs), ``clean`` float32 (Y, X) on the same 0..255
    scale. At the defaults a single frame has a PSNR of about 24-25 dB.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    clean = clean_scene(tuple(shape), seed)
    rng = np.random.default_rng(seed + 1)
    frames = np.stack([add_poisson_gaussian(clean, photons, read_noise, rng)
                       for _ in range(n_frames)])
    scale = 255.0
    noisy = frames * scale
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        noisy = np.clip(np.rint(noisy), max(info.min, 0), min(info.max, 255)).astype(dtype)
    else:
        noisy = noisy.astype(dtype)
    return noisy, (clean * scale).astype(np.float32)


def napari_sample():
    """napari sample-data hook: the noisy stack and its clean version as two layers."""
    noisy, clean = fmdd_like_stack(n_frames=20, shape=(256, 256))
    return [
        (noisy, {"name": "FMDD-like noisy stack", "metadata": {"axes": "TYX"}}, "image"),
        (clean, {"name": "FMDD-like clean", "contrast_limits": (0, 255)}, "image"),
    ]
