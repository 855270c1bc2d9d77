"""What the noise of a stack looks like, measured from the noisy stack alone (numpy only).

- :func:`estimate_poisson_gaussian`: variance = a · mean + b (a photon-transfer fit), for the
  VST of the BM3D method, the floor's risk estimate (:func:`variance_fit`) and for reports.
- :func:`noise_correlation` (:mod:`.correlation`): the noise's spatial autocorrelation at
  lags 1–3 along X and Y.
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
quarter the correlation was read on: noise correlated by 0.3 along X read as +0.03. What is
left there is structure, read as correlation along both axes alike: only what one axis reads
beyond the other counts (:func:`anisotropic_correlations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .clipped import at_bounds, clip_bounds, clipping, unclipped
from .correlation import (  # noqa: F401 (the noise check's names, re-exported)
    CLIPPED_BACKGROUND,
    CORR_SIDE,
    CORRELATED,
    HEAVY_CLIPPING,
    MIN_FLAT,
    SIDE,
    _central,
    _frames,
    _kernel,
    anisotropic_correlations,
    axis_correlations,
    axis_noise_correlations,
    correlation_kernel,
    exclusion_bounds,
    noise_correlation,
)
from .errors import InputError


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
    exclude = exclusion_bounds(planes, bounds, (low, high))
    kernel, usable = _kernel(planes, 3, exclude)
    cx, cy = axis_noise_correlations(kernel)
    notes = clipping_notes(low, high)
    if exclude is not None and usable > 0.0:  # see anisotropic_correlations
        kept = anisotropic_correlations(cx, cy)
        dropped = max((r for read, k in zip((cx, cy), kept) for r, v in zip(read, k)
                       if v == 0.0), default=0.0)
        if dropped >= CORRELATED:
            notes.append(f"in clipped data, correlation read alike along X and Y (up to "
                         f"{dropped:+.2f}) is taken for the fine structure left once the "
                         "background is gone, not for noise (give a mask if the detector "
                         "correlates both axes)")
        cx, cy = kept
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
