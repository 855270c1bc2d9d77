"""Clipped pixels: where a stack is clipped (0 or the integer dtype's bounds, a float's
plateau), which pixels are, and which are far enough from them to carry noise (numpy only;
:mod:`.noise` measures the noise away from them)."""

from __future__ import annotations

import numpy as np


def box_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k x k box (reflect padding), via cumulative sums: numpy only, O(pixels)."""
    r = k // 2
    p = np.pad(img, r, mode="reflect")
    c = np.cumsum(np.cumsum(p, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = img.shape
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / (k * k)


def clipping(stack, bounds=None) -> tuple[float, float]:
    """Fractions of pixels at the lower bound (0, or the integer dtype's minimum) and at the
    integer dtype's maximum (or the stack's maximum for floats, when it is a plateau);
    ``bounds``: :func:`clip_bounds` of the stack when the caller has them."""
    a = np.asarray(stack)
    # a float maximum that is one pixel is not a plateau: None
    lo_v, hi_v = clip_bounds(a) if bounds is None else bounds
    n = a.size
    low = float(np.count_nonzero(a <= lo_v)) / n
    high = float(np.count_nonzero(a >= hi_v)) / n if hi_v is not None else 0.0
    return low, high


def clip_bounds(a) -> tuple[float, float | None]:
    """``(low, high)``: the values at which ``a``'s pixels are clipped — 0 or the integer
    dtype's minimum (a float's minimum when it is below 0), and the integer dtype's maximum or
    a float's maximum when it is a plateau (None: nothing clipped high)."""
    a = np.asarray(a)
    if a.dtype.kind in "ui":
        info = np.iinfo(a.dtype)
        return float(0 if a.dtype.kind == "u" else info.min), float(info.max)
    lo, hi = min(0.0, float(a.min())), float(a.max())
    plateau = np.count_nonzero(a >= hi) >= 1e-3 * a.size
    return lo, (hi if plateau else None)


def at_bounds(img: np.ndarray, bounds) -> np.ndarray:
    """The pixels of ``img`` at a clip bound (:func:`clip_bounds`)."""
    lo, hi = bounds
    at = img <= lo
    if hi is not None:
        at |= img >= hi
    return at


def unclipped(img: np.ndarray, bounds, side: int) -> np.ndarray:
    """The pixels none of whose ``side`` × ``side`` window is at a clip bound (:func:`clip_bounds`
    of the raw data: a residual or a block there mixes in pixels without noise)."""
    at = at_bounds(img, bounds)
    if not at.any():
        return np.ones(img.shape, bool)
    return box_mean(at.astype(np.float64), side) < 0.5 / side**2
