"""What the noise of a stack looks like, measured from the noisy stack alone (numpy only).

- :func:`estimate_poisson_gaussian`: variance = a · mean + b (a photon-transfer fit), for the
  VST of the BM3D method, the floor's risk estimate (:func:`variance_fit`) and for reports.
- :func:`noise_correlation`: the noise's spatial autocorrelation at lags 1–3 along X and Y.
  Blind-spot methods assume pixel-independent noise; point-scanning confocals and some cameras
  correlate neighbours along the scan (measured 0.26–0.33 on real frames), and then a
  blind spot leaks the noise. The estimate is the correlation of a high-pass residual over the
  flattest parts of the image, corrected for the residual filter's own correlation;
  :func:`axis_noise_correlations` then removes the fine structure that leaks into it (what the
  report and the mask use), and :meth:`NoiseReport.noise_kernel` is the noise's correlation
  the risk estimate takes.
- :func:`~.clipped.clipping`: the fraction of pixels at the dtype's bounds or at zero.
- :func:`noise_report`: all of it, with a recommended blind-spot mask.

Clipped pixels (a background offset set so that it reads 0, saturation) carry no noise: where
a quarter of the pixels or more are clipped (:data:`CLIPPED_BACKGROUND`), the correlation and
the variance law are measured only where no pixel of the measurement's window is at a bound
(:mod:`.clipped`), and the report says how many pixels that left (:attr:`NoiseReport.usable`).
On a confocal frame with half its pixels at 0 the clipped background was the "flattest"
quarter the correlation was read on: noise correlated by 0.3 along X read as +0.03.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .clipped import at_bounds, box_mean, clip_bounds, clipping, unclipped
from .errors import InputError

#: side of the box whose mean the high-pass residual removes
_BOX = 7
#: side of the window around a clipped pixel whose residuals the correlation leaves out (nearer,
#: the noise is cut at the bound: on real iSIM frames with 9-34 % of their pixels clipped a
#: 1- or 3-px margin read correlations of 0.2-0.4 where the noise has none, 5 px read ≤ 0.07)
CLIP_SIDE = 5
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


@dataclass
class NoiseReport:
    """What :func:`noise_report` found. Correlations are along X (rows' neighbours) and Y."""

    corr_x: list[float]  # lags 1, 2, 3 (the noise's: :func:`axis_noise_correlations`)
    corr_y: list[float]
    gain: float | None = None  # variance = gain * (mean - 0) + read_var, raw units
    read_var: float | None = None
    clipped_low: float = 0.0  # fraction of pixels at the lower bound
    clipped_high: float = 0.0  # fraction at the upper bound
    mask: str = "pixel"  # the blind-spot mask recommended for these data
    notes: list[str] = field(default_factory=list)
    #: the fraction of the measured pixels the correlation could use (the rest are clipped or
    #: next to a clipped pixel)
    usable: float = 1.0

    def noise_kernel(self) -> np.ndarray | None:
        """The noise's correlation between neighbours as the risk estimate takes it: None
        (independent) where the mask is a pixel; elsewhere the separable kernel
        R(dy, dx) = ρy(|dy|)·ρx(|dx|) of the axis correlations the mask was chosen from
        (:attr:`corr_x`, :attr:`corr_y`) — the measured kernel itself also holds the fine
        structure they leave out (:func:`axis_noise_correlations`)."""
        if self.mask == "pixel":
            return None
        rx = np.array([1.0] + list(self.corr_x))
        ry = np.array([1.0] + list(self.corr_y))
        lags = np.abs(np.arange(-len(self.corr_x), len(self.corr_x) + 1))
        return np.outer(ry[lags], rx[lags])

    def describe(self) -> str:
        """One or two lines for people (CLI, widget)."""
        parts = [f"noise correlation X {self.corr_x[0]:+.2f}/{self.corr_x[1]:+.2f}/"
                 f"{self.corr_x[2]:+.2f}, Y {self.corr_y[0]:+.2f}/{self.corr_y[1]:+.2f}/"
                 f"{self.corr_y[2]:+.2f} (lags 1/2/3)"]
        parts.append(f"mask: {self.mask}")
        if self.usable < 0.995:
            parts.append(f"measured on the {100 * self.usable:.0f} % of pixels away from "
                         "clipped ones")
        return "; ".join(parts + self.notes)

    def to_dict(self) -> dict:
        return {"corr_x": list(self.corr_x), "corr_y": list(self.corr_y), "gain": self.gain,
                "read_var": self.read_var, "clipped_low": self.clipped_low,
                "clipped_high": self.clipped_high, "usable": self.usable, "mask": self.mask,
                "notes": list(self.notes)}


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
    (:func:`exclusion_bounds`), residuals with a clipped pixel within :data:`CLIP_SIDE` are left
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
                 unclipped(img, bounds, CLIP_SIDE))
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


#: the 4-neighbour residual y − mean(N4) of the noise fit, as a 3×3 filter
_N4_RESIDUAL = np.array([[0.0, -0.25, 0.0], [-0.25, 1.0, -0.25], [0.0, -0.25, 0.0]])


def residual_gain(corr: np.ndarray | None = None) -> float:
    """var(residual) / var(noise) of the noise fit's 4-neighbour residual: 1.25 for
    independent noise; for noise correlated as ``corr`` (:func:`correlation_kernel`)
    Σ_d (w ⋆ w)(d) R(d) — lower where neighbours correlate (0.98 at a lag-1 correlation of
    0.27 along X), so that a fit dividing by 1.25 under-estimates the variance (by 22 % there)."""
    if corr is None:
        return 1.25
    k = np.asarray(corr, np.float64)
    r = k.shape[0] // 2
    w = _N4_RESIDUAL
    total = 0.0
    for (i, j), wij in np.ndenumerate(w):  # Σ_{p,q} w_p w_q R(p − q)
        for (m, n), wmn in np.ndenumerate(w):
            dy, dx = i - m, j - n
            if wij and wmn and abs(dy) <= r and abs(dx) <= r:
                total += wij * wmn * k[r + dy, r + dx]
    return float(total)


def estimate_poisson_gaussian(img: np.ndarray, block: int = 8, bins: int = 12,
                              corr: np.ndarray | None = None, bounds=None):
    """Fit var = a·mean + b from one image: residuals of a 4-neighbour predictor measure the
    noise, block means the signal; per intensity bin the lower quartile of block variances
    avoids edges and texture (a simplified Foi et al. 2008). Returns (a, b), a > 0. ``corr``:
    the noise's correlation (:func:`correlation_kernel`), which the residual's variance
    depends on (:func:`residual_gain`); None: independent noise. ``bounds``: the clip bounds
    (:func:`~.clipped.clip_bounds`; default: the image's own) — where :data:`CLIPPED_BACKGROUND` of
    the pixels or more are clipped, blocks that hold a clipped pixel or its
    neighbour are left out (a clipped block's variance is not its level's)."""
    y = np.asarray(img, np.float64)
    p = np.pad(y, 1, mode="reflect")
    pred = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4.0
    r = (y - pred) / np.sqrt(residual_gain(corr))  # var(r) = the noise's variance
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    mb = y[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3)).ravel()
    vb = r[:h, :w].reshape(h // block, block, w // block, block).var(axis=(1, 3)).ravel()
    bounds = clip_bounds(y) if bounds is None else bounds
    if at_bounds(y, bounds).mean() >= CLIPPED_BACKGROUND:
        ok = unclipped(y, bounds, 3)[:h, :w]
        ok = ok.reshape(h // block, block, w // block, block).all(axis=(1, 3)).ravel()
        if ok.sum() >= 2 * bins:  # else (almost all clipped) the blocks there are
            mb, vb = mb[ok], vb[ok]
    edges = np.quantile(mb, np.linspace(0, 1, bins + 1))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mb >= lo) & (mb <= hi)
        if sel.sum() >= 4:
            xs.append(np.median(mb[sel]))
            ys.append(np.quantile(vb[sel], 0.25) / 0.85)  # lower quartile, bias-corrected
    xs, ys = np.asarray(xs), np.asarray(ys)
    # one intensity (a flat image): no slope to fit (polyfit divides by the spread of xs)
    a, b = np.polyfit(xs, ys, 1) if len(xs) >= 2 and np.ptp(xs) > 0 else (0.0, float(np.var(r)))
    return max(float(a), 1e-3), float(b)


def variance_fit(frames, index: int | None = None,
                 corr: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Per channel, (a, b) of the noise variance a · signal + b of frame ``index`` (default:
    the middle one) of (N, C, Y, X) frames (an array or lazy frames), in their own units (raw
    or normalized): :func:`estimate_poisson_gaussian` of the frame's central :data:`SIDE` px,
    rescaled to 0..255 first, since that fit bounds ``a`` below in raw-count units.

    One law per frame, not per stack: frames exported one by one, each scaled to its own range
    (as W2S's were), differ within a stack (a from 6.5 to 27 in 8-bit units on the W2S
    stack), so whoever measures a crop fits the frame it came from. ``corr``: the noise's
    correlation (:func:`estimate_poisson_gaussian`)."""
    j = frames.shape[0] // 2 if index is None else int(index)
    fits = []
    for plane in np.asarray(frames[(j, slice(None), *_central(frames.shape))]):  # lazy: a crop
        img = plane.astype(np.float64)
        lo, hi = np.percentile(img, (0.1, 99.9))
        k = 255.0 / (hi - lo) if hi > lo else 1.0
        c_lo, c_hi = clip_bounds(plane)
        bounds = ((c_lo - lo) * k, None if c_hi is None else (c_hi - lo) * k)
        a, b = estimate_poisson_gaussian((img - lo) * k, corr=corr, bounds=bounds)
        # var(k (y − lo)) = a (k (y − lo)) + b  ⇒  var(y) = (a / k) y + (b − a k lo) / k²
        fits.append((a / k, (b - a * k * lo) / k**2))
    return fits


def recommend_mask(corr_x: list[float], corr_y: list[float],
                   threshold: float = CORRELATED) -> str:
    """'pixel' for independent noise, else a blind line covering the correlated lags:
    'x-line:L' / 'y-line:L' (L = 2·lags + 1 pixels), or 'box:Lx,Ly' when both axes are."""
    lx = max((d for d, c in enumerate(corr_x, 1) if c >= threshold), default=0)
    ly = max((d for d, c in enumerate(corr_y, 1) if c >= threshold), default=0)
    if lx and ly:  # separable correlation reaches the diagonals too: a box
        return f"box:{2 * lx + 1},{2 * ly + 1}"
    if lx:
        return f"x-line:{2 * lx + 1}"
    if ly:
        return f"y-line:{2 * ly + 1}"
    return "pixel"


def noise_report(stack, axes: str | None = None) -> NoiseReport:
    """Correlation, clipping and a Poisson–Gaussian fit of a noisy stack (any layout: with
    ``axes``, channels and frames are all measured together), and the mask to use."""
    from .data import Layout, validate_stack

    arr, ax = validate_stack(stack, axes)
    frames = Layout(ax, arr.shape).to_frames(arr)
    for c in range(frames.shape[1]):
        lo, hi = frames[:, c].min(), frames[:, c].max()
        if lo == hi:  # no noise to measure (the fit would divide by zero)
            raise InputError(f"channel {c} is constant (every pixel is {lo:g}): there is no "
                             "noise to measure. Check that the right image/channel was chosen")
    return frames_report(frames)


def measured_frames(frames) -> np.ndarray:
    """What the noise check measures of (N, C, Y, X) ``frames``: all of them in memory, or a
    sample of frames larger than memory (``in_memory_sample``), never the whole lazy stack."""
    return frames if isinstance(frames, np.ndarray) else frames.in_memory_sample()


def frames_report(frames: np.ndarray) -> NoiseReport:
    """:func:`noise_report` of (N, C, Y, X) frames (raw or normalized: the correlation and the
    clipped fractions do not depend on an affine scaling)."""
    frames = measured_frames(frames)
    planes = frames.reshape((-1,) + frames.shape[-2:])
    bounds = clip_bounds(planes)
    low, high = clipping(planes, bounds)
    kernel, usable = _kernel(planes, 3, exclusion_bounds(planes, bounds, (low, high)))
    cx, cy = axis_noise_correlations(kernel)
    notes = clipping_notes(low, high)
    if usable == 0.0:
        notes.append("too few pixels away from the clipped ones to measure the noise's "
                     "correlation: independent noise assumed (give mask='x-line:3' or another "
                     "mask if the detector correlates neighbours)")
    mask = recommend_mask(cx, cy)
    if mask != "pixel":
        notes.append("noise correlated between neighbours: a blind line or box hides the "
                     "correlated extent")
    report = NoiseReport(cx, cy, None, None, low, high, mask, notes, usable)
    # the middle plane that is not constant (a dropped, all-zero frame has no noise to fit)
    varied = [i for i in range(len(planes)) if planes[i].min() < planes[i].max()] or [0]
    report.gain, report.read_var = estimate_poisson_gaussian(
        _frames(planes[varied[len(varied) // 2]])[0], corr=report.noise_kernel(),
        bounds=bounds)
    return report


def describe_mask(mask: str, report: NoiseReport) -> str:
    """'noise correlated along X: 0.31 → using a horizontal blind line (x-line:3)'."""
    from .masking import BlindSpot

    spot = BlindSpot.parse(mask)
    if spot.is_pixel:
        return (f"noise independent between neighbours (correlation X {report.corr_x[0]:+.2f}, "
                f"Y {report.corr_y[0]:+.2f}): one-pixel blind spot")
    parts = []
    if spot.lx:
        parts.append(f"X: {report.corr_x[0]:.2f}")
    if spot.ly:
        parts.append(f"Y: {report.corr_y[0]:.2f}")
    shape = ("a horizontal blind line" if not spot.ly else "a vertical blind line"
             if not spot.lx else "a blind box")
    return f"noise correlated along {', '.join(parts)} → using {shape} ({mask})"


def clipping_notes(low: float, high: float) -> list[str]:
    """A note per bound that clips more than ``HEAVY_CLIPPING`` of the pixels. Clipped pixels
    are denoised like the others (benchmarks/clipping.py: every method's error there is lower
    than passing them through), so this is information, not a change of method."""
    return [f"{100 * frac:.0f} % of pixels are clipped {what}: the noise model does not hold "
            "there" for what, frac in (("at the lower bound (0 or the minimum)", low),
                                       ("at the upper bound (saturated)", high))
            if frac > HEAVY_CLIPPING]


def training_messages(report: NoiseReport | None) -> list[str]:
    """What a training run tells the user about the measured noise: the blind spot chosen for
    correlated noise and heavy clipping (nothing for independent, unclipped noise)."""
    if report is None:
        return []
    msgs = [describe_mask(report.mask, report)] if report.mask != "pixel" else []
    return msgs + clipping_notes(report.clipped_low, report.clipped_high)


def resolve_auto_mask(method, frames: np.ndarray) -> NoiseReport | None:
    """Measure the noise of the training frames and set a method's ``mask='auto'`` to the
    blind spot it needs (a method that cannot hide a box gets the line along the more
    correlated axis). Returns the report (None when the mask was given explicitly)."""
    if method.params.get("mask") != "auto":
        return None
    report = frames_report(frames)
    mask = report.mask
    if mask.startswith("box"):
        if not getattr(method, "box_masks", True):
            along_x = report.corr_x[0] >= report.corr_y[0]
            mask = (f"x-line:{2 * _lags(report.corr_x) + 1}" if along_x else
                    f"y-line:{2 * _lags(report.corr_y) + 1}")
            report.notes.append(f"{method.title} cannot hide a box; hiding the more correlated "
                                "axis only: use b2u for noise correlated along both axes")
    report.mask = mask
    method.params["mask"] = mask
    return report


def _lags(corr: list[float], threshold: float = CORRELATED) -> int:
    return max((d for d, c in enumerate(corr, 1) if c >= threshold), default=0)
