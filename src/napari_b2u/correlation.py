"""The noise's correlation between neighbouring pixels, measured from the noisy frames alone
(numpy only; :mod:`.noise` builds its report on it).

Blind-spot methods assume pixel-independent noise; point-scanning confocals and some cameras
correlate neighbours along the scan (measured 0.26–0.33 on real frames), and then a blind spot
leaks the noise. The estimate is the correlation of a high-pass residual over the flattest parts
of the image, corrected for the residual filter's own correlation (:func:`correlation_kernel`);
:func:`axis_noise_correlations` then removes the fine structure that leaks into it. Where a
quarter of the pixels or more are clipped (:data:`CLIPPED_BACKGROUND`), it is measured away from
them (:func:`exclusion_bounds`), and only what one axis reads beyond the other counts
(:func:`anisotropic_correlations`).
"""

from __future__ import annotations

import numpy as np

from .clipped import box_mean, clip_bounds, clipping, unclipped

#: side of the box whose mean the high-pass residual removes
_BOX = 7
#: side of the window around a clipped pixel whose residuals the correlation leaves out in
#: clipped data. Nearer, the noise is cut at the bound (on real iSIM frames with 9-34 % of their
#: pixels clipped 1- or 3-px windows read correlations of 0.2-0.4 where the noise has none),
#: but that reads equally along X and Y, as does the fine structure left once the background is
#: gone, and :func:`anisotropic_correlations` takes it for structure; 5-px windows left nothing to
#: measure on a real confocal frame with 55 % of its pixels at 0 (docs/benchmarks.md)
CORR_SIDE = 3
#: the fraction of clipped pixels from which the correlation is measured away from them. Below
#: it the clipped pixels are few or scattered (low photon counts reaching 0, a few saturated
#: spots) and the flattest quarter of the frame still holds noise; measured away from them
#: instead, only structure may be left to measure: 12 % of zeros in this package's sample
#: data then read 0.7, mito_20x (3.6 % clipped) read 0.11 instead of 0.08
CLIPPED_BACKGROUND = 0.25
#: the fewest flat pixels the correlation is measured on in clipped data (a standard error of
#: ~0.03); fewer measure nothing (independent noise assumed)
MIN_FLAT = 1024
#: the correlation at which a lag counts as correlated (the masks then blind it)
CORRELATED = 0.1
#: fraction of pixels at a bound that counts as heavy clipping
HEAVY_CLIPPING = 0.05


#: side of the central square the noise is measured on (plenty for a fit or a correlation;
#: keeps large frames fast)
SIDE = 768


def _central(shape) -> tuple[slice, slice]:
    """Rows and columns of the central ``SIDE`` × ``SIDE`` pixels of frames of ``shape``."""
    h, w = shape[-2:]
    y0, x0 = max(0, (h - SIDE) // 2), max(0, (w - SIDE) // 2)
    return slice(y0, y0 + SIDE), slice(x0, x0 + SIDE)


def _frames(stack) -> np.ndarray:
    """(…, Y, X) -> float64 (N, Y, X): at most 16 frames spread over the stack, each cut to its
    central :data:`SIDE` pixels."""
    a = np.asarray(stack)
    a = a.reshape((-1,) + a.shape[-2:])
    if a.shape[0] > 16:
        a = a[np.linspace(0, a.shape[0] - 1, 16).round().astype(int)]
    return a[(slice(None), *_central(a.shape))].astype(np.float64)


def _flat_mask(img: np.ndarray, valid: np.ndarray, quantile: float = 0.25) -> np.ndarray:
    """The flattest of the ``valid`` pixels: low local variation of the smoothed image (edges
    and texture would otherwise pass into the residual and look like correlated noise)."""
    if not valid.any():
        return valid
    sm = box_mean(img, 5)
    gy, gx = np.gradient(sm)
    g = np.hypot(gy, gx)
    return valid & (g <= np.quantile(g[valid], quantile))


def _residual_autocorr(k: int) -> np.ndarray:
    """Autocorrelation (2k-1)² of the residual filter δ - box_k: how the residual mixes the
    noise's own correlations (its centre is at [k-1, k-1])."""
    h = -np.ones((k, k)) / (k * k)
    h[k // 2, k // 2] += 1.0
    r = np.zeros((2 * k - 1, 2 * k - 1))
    for dy in range(-(k - 1), k):
        for dx in range(-(k - 1), k):
            a = h[max(0, dy):k + min(0, dy), max(0, dx):k + min(0, dx)]
            b = h[max(0, -dy):k + min(0, -dy), max(0, -dx):k + min(0, -dx)]
            r[dy + k - 1, dx + k - 1] = np.sum(a * b)
    return r


def _unmix(rho: dict, k: int, lags: int) -> dict:
    """The noise's correlation at every lag (|dy|, |dx| <= lags) from the residual's measured
    correlation ``rho``: the residual's autocorrelation is the noise's convolved with the
    residual filter's (zero beyond ``lags`` assumed); a small linear system, solved once."""
    rh = _residual_autocorr(k)
    c = k - 1
    half = [(dy, dx) for dy in range(0, lags + 1) for dx in range(-lags, lags + 1)
            if (dy, dx) > (0, 0)]  # one of each ± pair
    full = [(0, 0)] + half + [(-dy, -dx) for dy, dx in half]

    def rh_at(dy, dx):
        return rh[dy + c, dx + c] if abs(dy) <= c and abs(dx) <= c else 0.0

    # unknowns u(e) for e in half (u(-e) = u(e), u(0) = 1); one equation per measured lag d:
    # sum_e [Rh(d - e) - rho(d) Rh(-e)] u(e) = 0
    a = np.zeros((len(half), len(half)))
    rhs = np.zeros(len(half))
    for i, d in enumerate(half):
        for e in full:
            coef = rh_at(d[0] - e[0], d[1] - e[1]) - rho[d] * rh_at(-e[0], -e[1])
            if e == (0, 0):
                rhs[i] -= coef
            else:
                j = half.index(e) if e in half else half.index((-e[0], -e[1]))
                a[i, j] += coef
    u = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return {d: float(v) for d, v in zip(half, u)}


def noise_correlation(stack, lags: int = 3) -> tuple[list[float], list[float]]:
    """Correlation of the noise with its neighbours at lags 1..``lags`` along X and along Y,
    from the noisy frames (…, Y, X) alone; ≈ 0 for pixel-independent noise.

    The residual x - box_7(x) over the flattest quarter of each frame (normalized by its local
    level, as Poisson noise varies) is correlated at every lag up to ``lags`` in both directions
    (diagonals too); the residual filter's own mixing is then undone (:func:`_unmix`), so
    correlations along both axes at once are measured as well as along one. Fine structure
    leaks into these values; :func:`axis_noise_correlations` is what the noise check uses."""
    return axis_correlations(correlation_kernel(stack, lags))


def axis_correlations(kernel: np.ndarray) -> tuple[list[float], list[float]]:
    """The lags along X and along Y of a :func:`correlation_kernel`."""
    r = kernel.shape[0] // 2
    return ([float(kernel[r, r + d]) for d in range(1, r + 1)],
            [float(kernel[r + d, r]) for d in range(1, r + 1)])


def axis_noise_correlations(kernel: np.ndarray) -> tuple[list[float], list[float]]:
    """The correlations along X and Y of a :func:`correlation_kernel` that are the noise's.

    Structure finer than the residual's 7-px box (a PSF of a few pixels, dense filaments) leaks
    into the measured correlation, and it leaks in every direction: on the real GigaDB
    actin_60x and mito_20x frames the kernel read 0.13–0.18 at lag 1 along both axes and
    0.11–0.13 on the diagonals, where their noise measured against the ground truth is
    correlated by 0.02 at most (docs/benchmarks.md). Noise correlated by a detector along an
    axis reaches the diagonal (d, d) only as the product ρx·ρy (separable) — so what the
    diagonals share beyond that product is taken for signal and removed from each axis."""
    r = kernel.shape[0] // 2
    cx, cy = axis_correlations(kernel)
    out_x, out_y = [], []
    for d in range(1, r + 1):
        diagonal = (kernel[r + d, r + d] + kernel[r + d, r - d]) / 2
        signal = max(0.0, float(diagonal) - cx[d - 1] * cy[d - 1])
        out_x.append(cx[d - 1] - signal)
        out_y.append(cy[d - 1] - signal)
    return out_x, out_y


def anisotropic_correlations(cx: list[float], cy: list[float],
                              threshold: float = CORRELATED) -> tuple[list[float], list[float]]:
    """The correlations of clipped data that are the noise's: at each lag, what one axis reads
    beyond the other by ``threshold`` or more is kept, the rest is set to 0.

    Once a clipped background is left out, what is left to measure is the cells and their fine
    structure, and the noise next to the bound is cut: both read as correlation in every
    direction. On real frames with half their pixels clipped (instant-SIM ER, actin,
    lysosomes; GigaDB mito; independent noise) the axes read 0.2-0.6 and within 0.07 of each
    other, and a blind box of up to 7 px was chosen; a scanner correlates along one axis (the
    real confocal frame: X 0.34, Y 0.19 with the same clipping, 0.36 / 0.09 unclipped). Noise
    correlated equally along both axes in clipped data is therefore not seen: give the mask.
    A detector's correlation fades with the lag, so an axis keeps only its lags from 1 up to
    the first that fails (a lone lag 3 of 0.1 along Y was structure on the frame 61 % clipped)."""
    out = ([], [])
    for axis, (mine, other) in enumerate(((cx, cy), (cy, cx))):
        going = True
        for a, b in zip(mine, other):
            going = going and a - b >= threshold
            out[axis].append(a if going else 0.0)
    return out


def correlation_kernel(stack, lags: int = 3) -> np.ndarray:
    """The noise's correlation at every lag (dy, dx), |dy|, |dx| <= ``lags``, as a
    (2·lags + 1)² array centred on lag 0 (which is 1): what :func:`noise_correlation`
    measures, diagonals included."""
    return _kernel(stack, lags, exclusion_bounds(stack))[0]


def exclusion_bounds(stack, bounds=None, fractions=None):
    """The clip bounds the noise is measured away from (:func:`~.clipped.clip_bounds`), or
    None where fewer than :data:`CLIPPED_BACKGROUND` of the pixels are clipped; ``bounds``
    and ``fractions`` (:func:`~.clipped.clipping`) when the caller has them. A bound that
    clips fewer than :data:`HEAVY_CLIPPING` of the pixels (a few saturated spots beside a
    clipped background) is left out of it: -inf / None. Its spots sit in the bright structure
    where, the background gone, the noise is left to measure, and a margin around each left
    too few pixels: a confocal frame with half its pixels at 0 and 1 % saturated read
    independent noise in training (its saturation, 212 after the background subtraction, is a
    plateau of a float) and X 0.31 in `napari-b2u check` (its uint8 saturation, 255, held
    no pixel)."""
    bounds = clip_bounds(stack) if bounds is None else bounds
    fractions = clipping(stack, bounds) if fractions is None else fractions
    if sum(fractions) < CLIPPED_BACKGROUND:  # see CLIPPED_BACKGROUND
        return None
    (lo, hi), (low, high) = bounds, fractions
    return (lo if low >= HEAVY_CLIPPING else -np.inf,
            hi if high >= HEAVY_CLIPPING else None)


def _kernel(stack, lags: int, exclude) -> tuple[np.ndarray, float]:
    """:func:`correlation_kernel` and the fraction of pixels it could use (0 when too few to
    measure: the kernel is then independent noise's); ``exclude``: :func:`exclusion_bounds`."""
    noise, usable = _noise_lags(stack, lags, exclude)
    k = np.zeros((2 * lags + 1, 2 * lags + 1))
    k[lags, lags] = 1.0
    if noise is None:
        return k, 0.0
    for (dy, dx), v in noise.items():
        k[lags + dy, lags + dx] = k[lags - dy, lags - dx] = float(np.clip(v, -1, 1))
    return k, usable


def _noise_lags(stack, lags: int, bounds) -> tuple[dict | None, float]:
    """``({(dy, dx): correlation} for one lag of each ± pair (dy >= 0) or None when too few
    pixels could be used, the fraction of pixels usable)``: with clip ``bounds``
    (:func:`exclusion_bounds`), residuals with a clipped pixel within :data:`CORR_SIDE` are left
    out (and fewer than :data:`MIN_FLAT` flat pixels left measure nothing: None)."""
    frames = _frames(stack)
    half = [(dy, dx) for dy in range(0, lags + 1) for dx in range(-lags, lags + 1)
            if (dy, dx) > (0, 0)]
    num = dict.fromkeys(half, 0.0)
    den = dict.fromkeys(half, 0.0)
    used = total = flat = 0
    for img in frames:
        if min(img.shape) < 2 * _BOX:
            continue
        r = img - box_mean(img, _BOX)
        # (the box sums' rounding can dip below 0 where r is 0: no sqrt of a negative)
        scale = np.sqrt(np.maximum(box_mean(r * r, 9), 0.0)) + 1e-12
        valid = (np.ones(img.shape, bool) if bounds is None else
                 unclipped(img, bounds, CORR_SIDE))
        keep = _flat_mask(img, valid)
        used, total = used + int(valid.sum()), total + valid.size
        flat += int(keep.sum())
        z = np.where(keep, r / scale, 0.0)
        h, w = z.shape
        for dy, dx in half:
            ya, yb = slice(0, h - dy), slice(dy, h)
            xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w),
                                                                        slice(0, w + dx))
            both = keep[ya, xa] & keep[yb, xb]
            p, q = z[ya, xa], z[yb, xb]
            num[(dy, dx)] += float(np.sum((p * q)[both]))
            den[(dy, dx)] += float(np.sum(((p * p + q * q) / 2)[both]))
    if bounds is not None and flat < MIN_FLAT:
        return None, (used / total if total else 0.0)
    rho = {d: (num[d] / den[d] if den[d] > 0 else 0.0) for d in half}
    return _unmix(rho, _BOX, lags), (used / total if total else 1.0)
