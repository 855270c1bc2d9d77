"""Frames of a stack, whatever it is: the (N, C, Y, X) layout of a lazy source
(:func:`source_layout`), the :class:`FrameReader` that reads a range of frames — or part of each
— a few chunks at a time, and the two front doors of every input: :func:`open_frames` (any
array, path or lazy stack, for denoising) and :func:`open_image` (a file, for the command line:
lazily when it is larger than the memory budget)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data import (
    MIN_SIDE,
    SAMPLE_AXES,
    Layout,
    check_dtype,
    default_axes,
    parse_axes,
    validate_stack,
)
from ..errors import InputError
from .image import Image
from .memory import memory_budget
from .readers import read_image
from .sources import (
    Source,
    ZarrSource,
    is_tiff_path,
    is_zarr_path,
    needs_lazy,
    open_source,
    require,
)


def source_layout(src: Source, axes: str | None = None) -> Layout:
    """The layout of ``src`` with ``axes`` (else the file's, else the default for 2D/3D), after
    the checks :func:`~napari_b2u.data.validate_stack` makes that need no pixels."""
    if not src.shape or 0 in src.shape:
        raise InputError(f"the stack is empty (shape {src.shape})")
    check_dtype(np.empty(0, src.dtype))
    if len(src.shape) < 2:
        raise InputError(f"need at least a 2D image, got an array of shape {src.shape}")
    if axes is None and src.axes is not None and len(src.axes) == len(src.shape):
        axes = src.axes
    ax = parse_axes(axes, len(src.shape)) if axes is not None else default_axes(len(src.shape))
    ny, nx = src.shape[ax.index("Y")], src.shape[ax.index("X")]
    if min(ny, nx) < MIN_SIDE:
        raise InputError(f"the image plane is {ny}x{nx} pixels (axes {ax!r}); need at least "
                         f"{MIN_SIDE}x{MIN_SIDE}. Check the axes string")
    return Layout(ax, tuple(src.shape))


class FrameReader:
    """Frames (N, C, Y, X) of a :class:`Source` laid out as ``layout``, read on demand.
    ``reader[i:j]`` reads frames i..j-1 whole; :meth:`read` reads part of each."""

    def __init__(self, src: Source, layout: Layout):
        self.src, self.layout = src, layout
        self.shape = (layout.n_frames, layout.n_channels) + layout.frame_shape
        self.dtype = src.dtype
        ax = layout.axes
        self._batch = [i for i, a in enumerate(ax) if a in SAMPLE_AXES]
        self._sizes = [layout.shape[i] for i in self._batch]

    @property
    def inner_chunk(self) -> int:
        """The source's chunk along the innermost frame axis (1 when unknown)."""
        if not self._batch or self.src.chunks is None:
            return 1
        return int(self.src.chunks[self._batch[-1]])

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a FrameReader reads contiguous frames: reader[i:j]")
        f0, f1, _ = key.indices(self.shape[0])
        return self.read(f0, f1)

    def _runs(self, f0: int, f1: int):
        """(index of the outer frame axes, first, end along the innermost) per run of frames."""
        if not self._batch:
            yield (), 0, 1
            return
        inner = self._sizes[-1]
        f = f0
        while f < f1:
            outer, k = divmod(f, inner)
            end = min(f1, (outer + 1) * inner)
            idx = np.unravel_index(outer, self._sizes[:-1]) if len(self._sizes) > 1 else ()
            yield tuple(int(v) for v in idx), k, k + end - f
            f = end

    def read(self, f0: int, f1: int, y0: int = 0, y1: int | None = None, x0: int = 0,
             x1: int | None = None) -> np.ndarray:
        """Frames f0..f1-1, rows y0..y1-1, columns x0..x1-1: (f1-f0, C, ny, nx), raw dtype.
        NaN or infinite values are refused (InputError) as in memory."""
        ax, nd = self.layout.axes, len(self.layout.axes)
        iy, ix = ax.index("Y"), ax.index("X")
        parts = []
        for outer, k0, k1 in self._runs(f0, f1):
            idx: list = [slice(None)] * nd
            for i, v in zip(self._batch[:-1], outer):
                idx[i] = v
            if self._batch:
                idx[self._batch[-1]] = slice(k0, k1)
            idx[iy], idx[ix] = slice(y0, y1), slice(x0, x1)
            part = self.src.read(tuple(idx))
            kept = [a for i, a in enumerate(ax) if i not in self._batch[:-1]]
            order = [kept.index(a) for a in (ax[self._batch[-1]] if self._batch else "",
                                              "C", "Y", "X") if a in kept]
            part = np.transpose(part, order)
            if "C" not in ax:
                part = part[:, None] if self._batch else part[None]
            if not self._batch:
                part = part[None]
            parts.append(part)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise InputError(
                f"frames {f0}..{f1 - 1} contain {int(np.isnan(out).sum())} NaN and "
                f"{int(np.isinf(out).sum())} infinite value(s); replace them (e.g. "
                "np.nan_to_num) or crop them away before denoising")
        return out


def open_frames(stack, axes: str | None = None):
    """``(layout, dtype, frames)`` of any input: ``frames`` is the (N, C, Y, X) view of an array
    in memory, or a :class:`FrameReader` for a lazy input (read batch by batch)."""
    src = open_source(stack)
    if src is None:
        if isinstance(stack, (str, os.PathLike)):
            img = read_image(stack, axes)
            stack, axes = img.data, img.axes
        arr, ax = validate_stack(stack, axes)
        layout = Layout(ax, arr.shape)
        return layout, arr.dtype, layout.to_frames(arr)
    layout = source_layout(src, axes)
    return layout, src.dtype, FrameReader(src, layout)


def open_image(path, axes: str | None = None, lazy: bool | None = None):
    """Read an image file for the command line: zarr / OME-Zarr always lazily, a TIFF lazily
    when ``lazy`` or (None) when it is larger than the memory budget, anything else whole."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {p}")
    src = open_source(p) if lazy is not False or is_zarr_path(p) else None
    if src is not None and (isinstance(src, ZarrSource) or lazy or needs_lazy(src)):
        return Image(src, source_layout(src, axes).axes, dict(src.pixel_size), {}, str(p))
    if src is None and p.is_file() and p.stat().st_size * 3 > memory_budget() and is_tiff_path(p):
        require("zarr", f"reading {p.name} (larger than the memory budget) lazily")
    return read_image(p, axes)
