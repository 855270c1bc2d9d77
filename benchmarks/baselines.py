"""Classical baselines for the quality benchmark: a Gaussian filter and VST + BM3D.

- Gaussian filter: sigma chosen on a grid to maximize PSNR against the ground truth — an
  *oracle* (it peeks at the clean image), so it is an upper bound for a tuned Gaussian.
- VST + BM3D, as FMDD's own benchmark: estimate Poisson–Gaussian parameters (var = a·mean + b)
  from the noisy image itself, stabilize with the generalized Anscombe transform, BM3D at unit
  sigma, then the closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2013).
  The implementation is the package's (napari_b2u.noise, napari_b2u.methods.classical): the
  `bm3d` method of the engine and this baseline are one code.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_b2u.methods.classical import gat, inverse_gat  # noqa: F401 - re-exported
from napari_b2u.methods.classical import vst_bm3d as _vst_bm3d
from napari_b2u.metrics import evaluate
from napari_b2u.noise import estimate_poisson_gaussian

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


def vst_bm3d(frame: np.ndarray, params=None):
    """Denoise one frame with VST + BM3D; returns (out, (a, b))."""
    a, b = params if params is not None else estimate_poisson_gaussian(frame)
    return _vst_bm3d(frame, a, b), (a, b)
