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


def _paths(rng, shape, count, steps, turn_sd, blur, gain, angle=None, spread=0.0):
    """Random walks of ``steps`` unit steps, drawn and blurred: filaments, worms, bundles."""
    h, w = shape
    img = np.zeros(shape)
    for _ in range(count):
        n = int(rng.integers(*steps))
        pos = rng.uniform([0, 0], [h, w])
        ang = rng.uniform(0, 2 * np.pi) if angle is None else angle + rng.normal(0, spread)
        turn = rng.normal(0, turn_sd, n).cumsum()
        ys = pos[0] + np.cumsum(np.sin(ang + turn))
        xs = pos[1] + np.cumsum(np.cos(ang + turn))
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        np.add.at(img, (ys[ok].astype(int), xs[ok].astype(int)), rng.uniform(0.3, 1.0))
    return _gauss_fft(img, blur) * gain


def _ellipses(rng, shape, count, size, profile):
    """Random ellipses; ``profile(r)`` maps the normalized radius to brightness."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros(shape)
    for _ in range(count):
        cy, cx = rng.uniform([0, 0], [h, w])
        ry, rx = rng.uniform(*size) * min(h, w) * rng.uniform(0.7, 1.3, 2)
        th = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(th) + dx * np.sin(th)) / ry
        v = (-dy * np.sin(th) + dx * np.cos(th)) / rx
        img += rng.uniform(0.4, 1.0) * profile(np.sqrt(u**2 + v**2))
    return img


def random_scene(shape=(128, 128), rng=None) -> np.ndarray:
    """A varied clean fluorescence-like scene in about [0, 1] (for pretraining): a random mix of
    cells, filaments, dense actin-like bundles, mitochondria-like worms, membranes, nuclei,
    puncta and smooth textures, at a random density, optionally inside a cell-body mask,
    blurred by a random PSF, on a random uneven background."""
    rng = np.random.default_rng(rng)
    h, w = shape
    pad = 24
    big = (h + 2 * pad, w + 2 * pad)
    area = h * w / 256**2
    dens = float(np.exp(rng.uniform(np.log(0.5), np.log(5))))

    def n(base, cap=None):
        return max(1, int(base * area * (min(dens, cap) if cap else dens)))

    makers = [
        (0.45, lambda: _cells(rng, big, n(6, 2))),
        (0.40, lambda: _filaments(rng, big, n(25))),
        (0.30, lambda: _puncta(rng, big, n(60))),
        (0.25, lambda: _ellipses(rng, big, n(8), (0.06, 0.2), lambda r, wd=rng.uniform(
            0.03, 0.12): np.exp(-((r - 1) / wd) ** 2))),  # membranes
        (0.40, lambda: _paths(rng, big, n(60), (15, 60), 0.15, rng.uniform(1.0, 2.2), 6)),
        (0.25, lambda: _ellipses(rng, big, n(8, 2), (0.03, 0.1), lambda r, k=rng.uniform(
            6, 20): 1 / (1 + np.exp(np.clip((r - 1) * k, -50, 50))))),  # nuclei
        (0.30, lambda: np.clip(_smooth_noise(rng, big, rng.uniform(1.5, 12))
                               - rng.uniform(-0.5, 1), 0, None)),  # textures
        (0.25, lambda: _paths(rng, big, n(40), (80, 400), 0.02, rng.uniform(0.6, 1.5), 3,
                              angle=rng.uniform(0, 2 * np.pi), spread=0.15)),  # bundles
    ]
    chosen = [make for p, make in makers if rng.random() < p]
    if not chosen:
        chosen = [makers[int(rng.integers(len(makers)))][1]]
    scene = sum(c / (np.percentile(c, 99.9) + 1e-9) * rng.uniform(0.3, 1.0)
                for c in (make() for make in chosen))
    if rng.random() < 0.4:  # structures inside a smooth cell-body mask
        mask = 1 / (1 + np.exp(-_smooth_noise(rng, big, rng.uniform(20, 60))
                               * rng.uniform(2, 8)))
        scene = scene * (0.15 + 0.85 * mask)
    scene = _gauss_fft(scene, rng.uniform(0.3, 1.8))
    background = rng.uniform(0, 0.25) * (1 + 0.5 * _smooth_noise(rng, big, 40))
    scene = np.clip(scene / (np.percentile(scene, 99.9) + 1e-9) + background, 0, None)
    return scene[pad:pad + h, pad:pad + w].astype(np.float32)


def random_noisy_batch(clean: np.ndarray, rng, correlated: float = 0.15):
    """A batch of clean scenes (B, Y, X) in [0, 1] -> (noisy, target), both (B, Y, X) float32
    in the normalized units the network sees for 8-bit data (raw / 255), each sample with its
    own acquisition: photons at full scale log-uniform in 1.5…300, Gaussian read noise, an
    8-bit export stretched to a random range with a random offset (so some pixels clip at 0 and
    255), and — for a fraction ``correlated`` of the samples — noise correlated between
    neighbours along X or Y. The target is the clean scene under the same export."""
    b = clean.shape[0]
    photons = np.exp(rng.uniform(np.log(1.5), np.log(300), (b, 1, 1)))
    read = rng.uniform(0, 0.06, (b, 1, 1)) * (rng.random((b, 1, 1)) < 0.8)
    counts = rng.poisson(np.clip(clean, 0, None) * photons) / photons
    noise = counts - clean + rng.normal(0, 1, clean.shape) * read
    for i in np.flatnonzero(rng.random(b) < correlated):
        rho = rng.uniform(0.1, 0.45)
        noise[i] = correlate(noise[i], *((rho, 0.0) if rng.random() < 0.5 else (0.0, rho)))
    noisy = clean + noise
    peak = np.percentile(noisy.reshape(b, -1), 99.9, axis=1).reshape(b, 1, 1) + 1e-9
    scale = rng.uniform(150, 300, (b, 1, 1)) / peak
    offset = rng.uniform(-15, 15, (b, 1, 1)) * (rng.random((b, 1, 1)) < 0.5)
    y8 = np.clip(np.rint(noisy * scale + offset), 0, 255)
    target = np.clip(clean * scale + offset, 0, 255)
    return (y8 / 255).astype(np.float32), (target / 255).astype(np.float32)


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


def correlate(noise: np.ndarray, corr_x: float = 0.0, corr_y: float = 0.0) -> np.ndarray:
    """White noise (…, Y, X) -> noise whose lag-1 correlation along X and Y is ``corr_x`` /
    ``corr_y`` (|corr| <= 0.5), variance unchanged: a separable two-tap kernel [1, c] per axis,
    as a scanning detector's bandwidth or a camera's readout correlates neighbours."""
    out = np.asarray(noise, np.float64)
    for axis, rho in ((-1, corr_x), (-2, corr_y)):
        if rho:
            if not abs(rho) <= 0.5:
                raise ValueError("a two-tap kernel reaches a lag-1 correlation of at most 0.5")
            c = (1 - np.sqrt(1 - 4 * rho * rho)) / (2 * rho)  # c / (1 + c²) = rho
            out = (out + c * np.roll(out, 1, axis)) / np.sqrt(1 + c * c)
    return out


def add_poisson_gaussian(clean: np.ndarray, photons: float, read_noise: float, rng,
                         corr_x: float = 0.0, corr_y: float = 0.0) -> np.ndarray:
    """``clean`` in [0, 1]: Poisson with ``photons`` at 1.0, plus Gaussian read noise (same
    scale). ``corr_x``/``corr_y``: lag-1 correlation of the noise along X/Y (0: independent)."""
    counts = rng.poisson(clean * photons) / photons
    noisy = counts + rng.normal(0.0, read_noise, clean.shape)
    if corr_x or corr_y:
        noisy = clean + correlate(noisy - clean, corr_x, corr_y)
    return noisy


def fmdd_like_stack(n_frames: int = 50, shape=(256, 256), photons: float = 40.0,
                    read_noise: float = 0.02, seed: int = 0, dtype=np.uint8,
                    corr_x: float = 0.0, corr_y: float = 0.0, offset: float = 0.0,
                    gain: float = 255.0, saturation: float = 255.0):
    """Noisy 8-bit frames of one static scene, and its clean image.

    Returns ``(noisy, clean)``: ``noisy`` of shape (n_frames, Y, X) and ``dtype`` (uint8 by
    default, values 0..255 like FMDD's raw PNGs), ``clean`` float32 (Y, X) on the same 0..255
    scale. At the defaults a single frame has a PSNR of about 24-25 dB.

    For tests and benchmarks of what real data does: ``corr_x``/``corr_y`` correlate the noise
    of neighbours (point-scanning confocals: ~0.3 along X); ``offset`` (raw units, e.g. a
    background subtraction when negative) and ``gain`` (raw units at clean 1.0) make integer
    outputs clip at 0 and at ``saturation`` (raw units; FMDD's 8-bit range by default, for
    every integer dtype).
    """
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    clean = clean_scene(tuple(shape), seed)
    rng = np.random.default_rng(seed + 1)
    frames = np.stack([add_poisson_gaussian(clean, photons, read_noise, rng, corr_x, corr_y)
                       for _ in range(n_frames)])
    noisy = frames * gain + offset
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        noisy = np.clip(np.rint(noisy), max(info.min, 0), min(info.max, saturation))
        noisy = noisy.astype(dtype)
    else:
        noisy = noisy.astype(dtype)
    return noisy, (clean * gain + offset).astype(np.float32)


def napari_sample():
    """napari sample-data hook: the noisy stack and its clean version as two layers."""
    noisy, clean = fmdd_like_stack(n_frames=20, shape=(256, 256))
    return [
        (noisy, {"name": "FMDD-like noisy stack", "metadata": {"axes": "TYX"}}, "image"),
        (clean, {"name": "FMDD-like clean", "contrast_limits": (0, 255)}, "image"),
    ]
