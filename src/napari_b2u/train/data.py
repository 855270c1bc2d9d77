"""The training data: a stack validated, normalized and split into what training samples and
what validation holds out — one path, whether the frames are in memory or, for a lazy stack
larger than the memory budget, read on demand (:mod:`.lazydata`). Both get the same checks
(constant frames are left out, the validation stack must match), the same hold-out plan
(:func:`~.plan.plan_split`) and the same split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..data import (
    Layout,
    Normalization,
    data_fingerprint,
    fit_normalization,
    informative_frames,
    validate_stack,
    warn_dynamic_range,
)
from ..errors import InputError
from ..io.frames import FrameReader, source_layout
from ..io.sources import needs_lazy, open_source, source_fingerprint
from .crops import ContextFrames
from .lazydata import LazyFrames, fit_lazy_normalization
from .plan import MIN_VAL_FRAMES, SplitPlan, plan_split


@dataclass
class TrainData:
    """Normalized frames split into a training part and a held-out validation part (arrays, or
    :class:`~.lazydata.LazyFrames` for a stack larger than memory)."""

    frames: object  # (N, C, Y, X) normalized, all frames (for previews)
    train: object  # (Nt, C, Yt, Xt) what training samples from
    val: object | None  # (Nv, C, Yv, Xv) never sampled by training
    normalization: Normalization
    layout: Layout
    split: str  # human-readable description of the hold-out
    fingerprint: str = ""  # of the raw stack (resume refuses other data)
    #: which frames (indices into ``frames``) and rows/columns (y0, y1, x0, x1) training
    #: samples and validation holds out; ``val_ids`` None for a separate validation stack
    train_ids: np.ndarray | None = None
    train_region: tuple | None = None
    val_ids: np.ndarray | None = None
    val_region: tuple | None = None
    #: a separate validation stack: its normalized frames and layout (its own neighbours)
    val_stack: tuple | None = None
    #: what the network is given: ``train`` / ``val`` themselves, or with stack context
    #: (:func:`add_context`) the centre frames' neighbours stacked behind their channels
    train_inputs: object = None
    val_inputs: object = None
    inputs: object = None  # of all frames (previews)

    def __post_init__(self):
        if self.train_inputs is None:
            self.train_inputs, self.val_inputs = self.train, self.val
        if self.inputs is None:
            self.inputs = self.frames


def prepare_data(stack, axes: str | None, patch_size: int, multiple: int,
                 val_fraction: float = 0.1, val_stack=None,
                 normalization: str | Normalization = "auto",
                 min_val_frames: int = MIN_VAL_FRAMES) -> tuple[TrainData, SplitPlan]:
    """Validate, normalize and split ``stack``; return the data and the split plan (whose
    ``patch_size`` is the patch actually usable)."""
    frames, layout, norm, fingerprint, lazy_bytes = _open(stack, axes, normalization)
    good = _usable_frames(frames)
    n, c, h, w = frames.shape
    plan = plan_split(good.size, c, h, w, patch_size, multiple, val_fraction,
                      separate_val=val_stack is not None, min_val_frames=min_val_frames,
                      n_total=n)
    for note in plan.notes:
        warnings.warn(note, stacklevel=3)
    split, ids, val_ids = plan.description, good, None
    region = val_region = vstack = None
    if plan.kind == "stack":
        vstack = _validation_stack(val_stack, layout, norm)
        split = f"validation on a separate stack of {vstack[0].shape[0]} frame(s)"
    elif plan.kind == "frames":
        val_ids = good[list(plan.val_index)]
        ids = np.setdiff1d(good, val_ids)
        split = f"{split} (frames {val_ids.tolist()})"
    elif plan.kind == "region":
        along_y, cut = plan.region
        val_ids = good
        region = (0, cut, 0, w) if along_y else (0, h, 0, cut)
        val_region = (cut, h, 0, w) if along_y else (0, h, cut, w)
    train = _subset(frames, ids, region)
    val = (vstack[0] if vstack is not None else
           _subset(frames, val_ids, val_region) if val_ids is not None else None)
    if lazy_bytes is not None:
        split += (f"; the stack ({lazy_bytes / 2**30:.1f} GiB) is larger than the memory "
                  "budget: crops come from a buffer of random blocks")
    return TrainData(frames, train, val, norm, layout, split, fingerprint, ids, region, val_ids,
                     val_region, vstack), plan


def use_context(config, data: TrainData, method):
    """Decide the run's stack context (:func:`~napari_b2u.context.decide_context`), give the
    method and the data that many neighbours and write the decision into ``config`` (a resumed
    run and the model's record keep it); returns the report."""
    from ..context import decide_context

    report = decide_context(config.context, config.context_axis, data.frames, data.layout,
                            method.takes_context, method.name)
    method.set_context(report.chosen)
    add_context(data, report.axis, report.chosen)
    config.context, config.context_axis = str(report.chosen), report.axis or "auto"
    return report


def add_context(data: TrainData, axis: str, k: int) -> None:
    """Give the network ``k`` neighbouring frames on each side along ``axis`` (held-out frames
    included: they are inputs, never targets): ``train_inputs`` / ``val_inputs`` become
    :class:`~.crops.ContextFrames` over all frames (frames in memory only)."""
    from ..context import context_index

    if k == 0:
        data.train_inputs, data.val_inputs, data.inputs = data.train, data.val, data.frames
        return
    index = context_index(data.layout, axis, k)
    data.inputs = ContextFrames(data.frames, index)
    data.train_inputs = ContextFrames(_region(data.frames, data.train_region),
                                      index[data.train_ids])
    if data.val_stack is not None:
        frames, layout = data.val_stack
        data.val_inputs = ContextFrames(frames, context_index(layout, axis, k))
    elif data.val_ids is not None:
        data.val_inputs = ContextFrames(_region(data.frames, data.val_region),
                                        index[data.val_ids])


def _region(frames, region):
    if region is None:
        return frames
    y0, y1, x0, x1 = region
    return frames[:, :, y0:y1, x0:x1]


def _open(stack, axes, normalization):
    """``(frames, layout, normalization, fingerprint, bytes)``: normalized frames in memory, or
    :class:`LazyFrames` (``bytes``: the stack's size) for a lazy stack too large for memory."""
    src = open_source(stack) if not isinstance(stack, np.ndarray) else None
    if src is not None and needs_lazy(src):
        layout = source_layout(src, axes)
        reader = FrameReader(src, layout)
        norm = normalization
        if not isinstance(norm, Normalization):
            norm, sample = fit_lazy_normalization(reader, normalization)
            warn_dynamic_range(norm.apply(sample), stacklevel=5)
        frames = LazyFrames(reader, norm, np.arange(reader.shape[0]))
        return frames, layout, norm, source_fingerprint(src, layout.axes), src.nbytes
    # a lazy input (e.g. a zarr path) that fits the budget is read whole
    arr, ax = validate_stack(src if src is not None else stack, axes)
    layout = Layout(ax, arr.shape)
    raw = layout.to_frames(arr)
    norm = normalization if isinstance(normalization, Normalization) else fit_normalization(
        raw, normalization)
    frames = norm.apply(raw)
    warn_dynamic_range(frames, stacklevel=5)
    return frames, layout, norm, data_fingerprint(arr, ax), None


def _usable_frames(frames) -> np.ndarray:
    """Indices of the frames that are not constant (dropped, all-zero frames are left out of
    training and validation, with a warning)."""
    keep = (frames.informative() if isinstance(frames, LazyFrames)
            else informative_frames(frames))
    if not keep.any():
        raise InputError("every frame of the stack is constant: there is nothing to learn from")
    if not keep.all():
        bad = np.flatnonzero(~keep)
        warnings.warn(
            f"{bad.size} of {keep.size} frames are constant (all zero? dropped frames?) and are "
            f"left out of training: frames {bad[:10].tolist()}" + (" ..." if bad.size > 10
                                                                   else ""), stacklevel=4)
    return np.flatnonzero(keep)


def _subset(frames, index, region=None):
    """Frames ``index`` of ``frames``, rows/columns ``region`` (y0, y1, x0, x1): a contiguous
    array in memory, a view that reads on demand for lazy frames."""
    if isinstance(frames, LazyFrames):
        return frames.subset(index, region)
    out = frames[index]
    if region is not None:
        y0, y1, x0, x1 = region
        out = out[:, :, y0:y1, x0:x1]
    return np.ascontiguousarray(out)


def _validation_stack(val_stack, layout: Layout, norm: Normalization):
    """``(frames, layout)`` of a separate validation stack, normalized like the training stack
    (read on demand when it is larger than memory); refused when its channels differ."""
    src = open_source(val_stack) if not isinstance(val_stack, np.ndarray) else None
    same_ndim = len(np.shape(src if src is not None else val_stack)) == len(layout.shape)
    if src is not None and needs_lazy(src):
        vl = source_layout(src, layout.axes if len(src.shape) == len(layout.shape) else None)
        reader = FrameReader(src, vl)
        val = LazyFrames(reader, norm, np.arange(reader.shape[0]))
    else:
        varr, vax = validate_stack(src if src is not None else val_stack,
                                   layout.axes if same_ndim else None)
        vl = Layout(vax, varr.shape)
        val = np.ascontiguousarray(norm.apply(vl.to_frames(varr)))
    if val.shape[1] != layout.n_channels:
        raise InputError(f"the validation stack has {val.shape[1]} channel(s), the training "
                         f"stack {layout.n_channels}")
    return val, vl
