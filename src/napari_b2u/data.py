"""Stacks in, normalized float32 frames out — and back.

Everything here is numpy only (no torch, no Qt): it validates what the user gave us, turns any
supported layout into frames of shape (N, C, Y, X) in a normalized float32 scale, and inverts that
exactly for the output. The normalization is an affine map per channel, stored with the model, so
the denoised values come back in the units of the input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Letters an ``axes`` string may use. Y and X are the image plane, C the channel axis; every
#: other letter (time, z, sample/position, ...) is a batch axis whose entries are 2D samples.
SAMPLE_AXES = "TZSIQ"
ALLOWED_AXES = SAMPLE_AXES + "CYX"

#: The smallest image side the library trains on or denoises (the 3x3 masker needs neighbours).
MIN_SIDE = 4


# --------------------------------------------------------------------------------------------
# axes


def default_axes(ndim: int, guess: bool = False) -> str:
    """The axes string assumed for an array of ``ndim`` dimensions when none is given: 'YX' and
    'TYX'. More dimensions are ambiguous (channels? z?): an InputError asks for axes, unless
    ``guess`` — then every leading axis is a sample axis ('TZYX', 'TZSYX', ...), a safe
    proposal for a user to edit (it never mixes channels into one network input by guess)."""
    if ndim == 2:
        return "YX"
    if ndim == 3 or (guess and 3 <= ndim <= len(SAMPLE_AXES) + 2):
        return SAMPLE_AXES[: ndim - 2] + "YX"
    raise InputError(
        f"a {ndim}D array needs an explicit axes string (e.g. axes='TZYX' or 'TCYX'); "
        "only 2D (YX) and 3D (TYX) arrays have a default"
    )


def axes_notes(shape, axes: str, guessed: bool = False) -> list[str]:
    """Warnings about an axes choice that is valid but probably wrong: implausibly many
    channels, or a guessed stack of very few frames that may be channels."""
    notes = []
    ax = axes.upper()
    if "C" in ax and shape[ax.index("C")] > 16:
        n = shape[ax.index("C")]
        notes.append(f"axes {ax!r} make {n} channels; fluorescence data rarely has more than a "
                     "few: is C on the right axis?")
    if guessed and len(shape) >= 3 and ax[0] in SAMPLE_AXES and 1 < shape[0] <= 4:
        notes.append(f"the first axis (size {shape[0]}) is read as {shape[0]} frames ({ax[0]}); "
                     f"if these are channels, use axes 'C{ax[1:]}'")
    return notes


def parse_axes(axes: str | None, ndim: int) -> str:
    """Validate an axes string against an array's dimensions; return it upper-cased."""
    if axes is None:
        return default_axes(ndim)
    if not isinstance(axes, str):
        raise InputError(f"axes must be a string such as 'TYX', got {type(axes).__name__}")
    ax = axes.strip().upper()
    bad = sorted({a for a in ax if a not in ALLOWED_AXES})
    if bad:
        raise InputError(
            f"axes {axes!r} has unknown letter(s) {''.join(bad)!r}; use letters from "
            f"{ALLOWED_AXES!r} (T time, Z depth, S/I/Q samples, C channel, Y and X the image)"
        )
    dup = sorted({a for a in ax if ax.count(a) > 1})
    if dup:
        raise InputError(f"axes {axes!r} repeats {''.join(dup)!r}; each letter may appear once")
    if "Y" not in ax or "X" not in ax:
        raise InputError(f"axes {axes!r} must contain both Y and X")
    if len(ax) != ndim:
        raise InputError(
            f"axes {axes!r} has {len(ax)} letters but the array has {ndim} dimensions; "
            "give one letter per dimension"
        )
    return ax


# --------------------------------------------------------------------------------------------
# validation


def as_array(stack) -> np.ndarray:
    """Turn an array-like (numpy, memmap, dask, zarr, xarray, list) into a numpy array.

    Memory-mapped arrays are read, never written: every later step makes its own copy.
    """
    if isinstance(stack, np.ndarray):
        return stack
    if hasattr(stack, "compute") and hasattr(stack, "dtype"):  # dask / xarray+dask
        stack = stack.compute()
    try:
        arr = np.asarray(stack)
    except InputError:  # a lazy input's own message (e.g. a damaged chunk)
        raise
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a user input problem
        raise InputError(f"could not read the input as an array: {exc}") from exc
    return arr


def check_dtype(arr: np.ndarray) -> None:
    kind = arr.dtype.kind
    if kind == "b":
        raise InputError(
            "the image is boolean (a mask?); denoising needs intensities (integer or float)"
        )
    if kind == "c":
        raise InputError("the image is complex-valued; pass its magnitude or real part")
    if kind not in "uif":
        raise InputError(
            f"the image has dtype {arr.dtype}, which is not numeric; "
            "pass integer or floating-point intensities"
        )


def single_channel_of_rgb(rgb: np.ndarray) -> tuple[np.ndarray, str] | None:
    """The one channel a colour-mapped RGB(A) image (…, 3|4) really holds, and a note saying
    so — a grey image saved as RGB (R = G = B) or a single-colour lookup table (only one of
    R, G, B non-zero, as Fiji exports and published figures often are). None for true colour.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] not in (3, 4):
        return None
    if rgb.shape[-1] == 4:
        alpha = rgb[..., 3]
        if alpha.size and alpha.min() != alpha.max():
            return None  # varying transparency: not a plain colour-mapped intensity image
    planes = [rgb[..., i] for i in range(3)]
    if np.array_equal(planes[0], planes[1]) and np.array_equal(planes[1], planes[2]):
        return planes[0], "the RGB image is grey (R = G = B): using one of its channels"
    lit = [i for i in range(3) if planes[i].any()]
    if len(lit) == 1:
        name = ("red", "green", "blue")[lit[0]]
        return planes[lit[0]], (f"the RGB image holds one colour channel ({name}, the others "
                                "are zero): using it as the intensities")
    return None


def validate_stack(stack, axes: str | None = None, min_side: int = MIN_SIDE):
    """Check a user's stack and return ``(array, axes)``; raise :class:`InputError` if unusable."""
    arr = as_array(stack)
    if arr.size == 0:
        raise InputError(f"the stack is empty (shape {arr.shape})")
    check_dtype(arr)
    if arr.ndim < 2:
        raise InputError(f"need at least a 2D image, got an array of shape {arr.shape}")
    if axes is None and arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 8:
        hint = (" It holds only one channel: pass that one (napari_b2u.data."
                "single_channel_of_rgb finds it)." if single_channel_of_rgb(arr) else "")
        raise InputError(
            f"the array of shape {arr.shape} looks like an RGB(A) image (last axis of size "
            f"{arr.shape[-1]}); fluorescence channels are denoised with axes='YXC' (jointly), "
            "or pass one channel; if it really is a stack of 3-pixel-wide frames, give axes."
            + hint
        )
    ax = parse_axes(axes, arr.ndim)
    ny, nx = arr.shape[ax.index("Y")], arr.shape[ax.index("X")]
    if min(ny, nx) < min_side:
        raise InputError(
            f"the image plane is {ny}x{nx} pixels (axes {ax!r}); need at least "
            f"{min_side}x{min_side}. Check the axes string: maybe Y/X are on other dimensions"
        )
    if isinstance(arr, np.ma.MaskedArray):
        raise InputError(
            "the stack is a masked array; denoising needs every pixel's value: fill the masked "
            "pixels first (e.g. stack.filled(value)) or crop them away")
    if arr.dtype.kind == "f":
        finite = _all_finite(arr)
        if not finite:
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(np.isinf(arr).sum())
            raise InputError(
                f"the stack contains {n_nan} NaN and {n_inf} infinite value(s); replace them "
                "(e.g. np.nan_to_num) or crop them away before denoising"
            )
        if arr.dtype.itemsize > 4:
            big = _max_abs(arr)
            if big > FLOAT32_MAX:
                raise InputError(
                    f"the stack holds values up to {big:.3g}, beyond what float32 (the "
                    f"network's precision) can hold ({FLOAT32_MAX:.3g}); rescale the data or "
                    "clip the outliers before denoising")
    return arr, ax


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _max_abs(arr: np.ndarray, chunk: int = 1 << 24) -> float:
    flat = arr.reshape(-1)
    return max(float(np.abs(flat[i:i + chunk]).max()) for i in range(0, flat.size, chunk))


def _all_finite(arr: np.ndarray, chunk: int = 1 << 24) -> bool:
    flat = arr.reshape(-1)
    for i in range(0, flat.size, chunk):
        if not np.isfinite(flat[i : i + chunk]).all():
            return False
    return True


# --------------------------------------------------------------------------------------------
# layout: any axes <-> (N, C, Y, X)


@dataclass(frozen=True)
class Layout:
    """How a user's array maps to frames (N, C, Y, X), and back."""

    axes: str
    shape: tuple[int, ...]

    @property
    def perm(self) -> tuple[int, ...]:
        ax = self.axes
        batch = [i for i, a in enumerate(ax) if a in SAMPLE_AXES]
        chan = [ax.index("C")] if "C" in ax else []
        return tuple(batch + chan + [ax.index("Y"), ax.index("X")])

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def n_frames(self) -> int:
        n = 1
        for a, s in zip(self.axes, self.shape):
            if a in SAMPLE_AXES:
                n *= s
        return n

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    def to_frames(self, arr: np.ndarray) -> np.ndarray:
        """(any layout) -> (N, C, Y, X) view/copy of ``arr`` (dtype unchanged)."""
        t = np.transpose(arr, self.perm)
        return t.reshape((self.n_frames, self.n_channels) + self.frame_shape)

    def from_frames(self, frames: np.ndarray) -> np.ndarray:
        """(N, C, Y, X) -> the user's layout."""
        permuted_shape = tuple(self.shape[i] for i in self.perm)
        t = frames.reshape(permuted_shape)
        return np.transpose(t, np.argsort(self.perm))

    def frame_slices(self):
        """For frame index n, the index tuple into the user's array (with C kept as a slice)."""
        ax = self.axes
        batch = [(i, self.shape[i]) for i, a in enumerate(ax) if a in SAMPLE_AXES]
        sizes = [s for _, s in batch]
        for n in range(self.n_frames):
            idx: list = [slice(None)] * len(ax)
            for (i, _), k in zip(batch, np.unravel_index(n, sizes) if sizes else ()):
                idx[i] = int(k)
            yield tuple(idx)


# --------------------------------------------------------------------------------------------
# normalization


@dataclass
class Normalization:
    """Per-channel affine map ``norm = (raw - offset) / scale``.

    Stored in the model so that later stacks from the same microscope are scaled identically —
    the network learned noise at a given photon level, and the output returns in raw units.
    """

    offset: list[float]
    scale: list[float]
    mode: str = "percentile"
    source_dtype: str = "float32"

    def as_arrays(self, n_channels: int, dtype=np.float32):
        off = np.asarray(self.offset, dtype)
        sc = np.asarray(self.scale, dtype)
        if off.size != n_channels:
            raise InputError(
                f"the model was trained on {off.size} channel(s) but this stack has {n_channels}"
            )
        return off.reshape(1, -1, 1, 1), sc.reshape(1, -1, 1, 1)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """(N, C, Y, X) raw -> normalized float32 (a new array; the input is never modified).

        The offset is removed in float64, frame by frame, before the cast to float32: data far
        from zero (float64 at 1e9, uint32 near its top) keeps its fine steps. Values float32
        cannot hold after the scaling are refused (InputError), never turned into inf."""
        off, sc = self.as_arrays(frames.shape[1], np.float64)
        out = np.empty(frames.shape, np.float32)
        for i in range(frames.shape[0]):  # a float64 copy of one frame at a time
            out[i] = (frames[i:i + 1].astype(np.float64) - off) / sc
        if not _all_finite(out):
            raise InputError(
                "some pixels are too far from the bulk of the image to be represented after "
                f"normalization (offset {self.offset}, scale {self.scale}); clip the outliers "
                "(hot pixels?) or rescale the data")
        return out

    def invert(self, frames: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Normalized -> raw units, computed in float64 and returned as ``dtype`` (float64 keeps
        the precision of data far from zero; see :func:`output_float`)."""
        off, sc = self.as_arrays(frames.shape[1], np.float64)
        return (frames.astype(np.float64) * sc + off).astype(dtype, copy=False)

    def to_dict(self) -> dict:
        return {
            "offset": [float(v) for v in self.offset],
            "scale": [float(v) for v in self.scale],
            "mode": self.mode,
            "source_dtype": self.source_dtype,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(
            offset=list(d["offset"]),
            scale=list(d["scale"]),
            mode=str(d.get("mode", "percentile")),
            source_dtype=str(d.get("source_dtype", "float32")),
        )


def _sample_values(channel: np.ndarray, max_values: int = 2_000_000) -> np.ndarray:
    flat = channel.reshape(-1)
    if flat.size > max_values:  # a deterministic stride keeps this cheap on large stacks
        flat = flat[:: int(np.ceil(flat.size / max_values))]
    return flat.astype(np.float64)


def fit_normalization(
    frames: np.ndarray, mode: str = "auto", percentiles: tuple[float, float] = (0.1, 99.9)
) -> Normalization:
    """Fit a per-channel affine normalization on (N, C, Y, X) frames.

    ``auto``: 8-bit data is divided by 255 (the reference recipe, and it keeps the 8-bit photon
    scale); anything else maps the 0.1 and 99.9 percentiles to 0 and 1. ``range`` uses the
    dtype's full range for integers. ``percentile`` forces percentiles.
    """
    dtype = frames.dtype
    if mode == "auto":
        mode = "range" if dtype == np.uint8 else "percentile"
    offsets, scales = [], []
    for c in range(frames.shape[1]):
        if mode == "range":
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                lo, hi = (0.0, float(info.max)) if dtype.kind == "u" else (
                    float(info.min), float(info.max))
            else:
                v = _sample_values(frames[:, c])
                lo, hi = float(v.min()), float(v.max())
        elif mode == "percentile":
            v = _sample_values(frames[:, c])
            lo, hi = (float(x) for x in np.percentile(v, percentiles))
            if hi - lo <= 0:  # very sparse images: fall back to the full range
                lo, hi = float(v.min()), float(v.max())
        else:
            raise InputError(f"unknown normalization {mode!r}; use 'auto', 'percentile' or 'range'")
        if not hi > lo:
            raise InputError(
                f"channel {c} is constant (every pixel is {lo:g}): there is no signal or noise "
                "to learn from. Check that the right layer/channel was chosen"
            )
        offsets.append(lo)
        scales.append(hi - lo)
    return Normalization(offsets, scales, mode=mode, source_dtype=str(dtype))


def output_float(dtype) -> np.dtype:
    """The float type denoised values are kept in before the cast to ``dtype``: float64 where
    float32's 24-bit mantissa would lose steps of the output type (float64, 32/64-bit ints)."""
    dtype = np.dtype(dtype)
    wide = (dtype.kind == "f" and dtype.itemsize > 4) or (dtype.kind in "ui" and
                                                          dtype.itemsize >= 4)
    return np.dtype(np.float64 if wide else np.float32)


def check_output_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype the output can take (integer or float), or InputError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"unknown output dtype {dtype!r}; use e.g. 'uint16' or 'float32'"
                         ) from None
    if dt.kind not in "uif" or dt.itemsize > 8:
        raise InputError(f"cannot write the output as {dt}; use an integer or float dtype "
                         "(uint8, uint16, int16, uint32, int32, float32, float64)")
    return dt


def cast_output(frames: np.ndarray, dtype) -> np.ndarray:
    """Cast denormalized float output to ``dtype``; integers are rounded and saturate at the
    dtype's range (never wrap around), floats keep their values."""
    dtype = check_output_dtype(dtype)
    if dtype.kind not in "ui":
        return frames.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    top = hi
    if int(hi) > info.max:  # 2**63 - 1 is no float64: clip below it, then set the top exactly
        hi = float(np.nextafter(hi, -np.inf))
    out = np.rint(frames.astype(np.float64))
    over = out >= top if hi != top else None
    np.clip(out, lo, hi, out=out)
    out = out.astype(dtype)
    if over is not None:
        out[over] = info.max
    return out


def warn_dynamic_range(normalized: np.ndarray, stacklevel: int = 3) -> None:
    """Tell the user when a few very bright pixels sit far above the scaling range."""
    top = float(normalized.max())
    if top > 20:
        warnings.warn(
            f"a few pixels are up to {top:.0f}x brighter than the bulk of the image (99.9th "
            "percentile): saturation or hot pixels? They are kept and come back in the output, "
            "but the network has little data at such levels",
            stacklevel=stacklevel,
        )


def informative_frames(frames: np.ndarray) -> np.ndarray:
    """Boolean mask of frames that are not constant (e.g. dropped, all-zero frames)."""
    flat = frames.reshape(frames.shape[0], -1)
    return flat.max(axis=1) > flat.min(axis=1)


def data_fingerprint(arr: np.ndarray, axes: str, max_values: int = 1 << 20) -> str:
    """A cheap identity of a stack: shape, dtype, axes and up to ~1 M values at fixed
    pseudo-random positions (so other contents, another dtype or transposed frames of the same
    shape differ; a regular stride could keep hitting the same pixel of every frame)."""
    import hashlib

    arr = np.asarray(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}|{arr.dtype.str}|{axes}".encode())
    if arr.size <= max_values:
        sample = np.ascontiguousarray(arr).reshape(-1)
    else:
        idx = np.sort(np.random.default_rng(0).integers(0, arr.size, max_values))
        sample = arr[np.unravel_index(idx, arr.shape)]
    h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()
