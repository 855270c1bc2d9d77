"""The plan of a training run, known before any pixel is read: what is held out for validation,
which patch fits, how many steps (:func:`plan_split` is the one rule; :func:`run_plan` turns it
and the settings into the :class:`TrainPlan` the Trainer keeps and the widgets show, and
:func:`plan_training` answers the same from shapes alone, for a form before the data is read).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import resolve_config, steps_for_epochs
from ..data import Layout
from ..errors import InputError

#: with fewer (informative) frames than this, a band of every frame is held out instead
MIN_VAL_FRAMES = 5


@dataclass(frozen=True)
class SplitPlan:
    """What is held out for validation, and what is left to train on."""

    kind: str  # "frames", "region", "stack" (a separate validation stack) or "none"
    val_index: tuple[int, ...]  # kind "frames": held-out positions among the usable frames
    region: tuple[bool, int] | None  # kind "region": (along Y?, first held-out row/column)
    train_shape: tuple[int, int, int, int]  # (N, C, Y, X) the sampler draws from
    patch_size: int  # the usable patch: a multiple of the network's, fitting the train region
    description: str
    notes: tuple[str, ...] = ()  # warnings for the user (a smaller patch, no validation)


def plan_split(n: int, c: int, h: int, w: int, patch_size: int, multiple: int,
               val_fraction: float, separate_val: bool = False,
               min_val_frames: int = MIN_VAL_FRAMES, n_total: int | None = None) -> SplitPlan:
    """The hold-out and the usable patch for ``n`` usable frames of ``c`` × ``h`` × ``w``
    (``n_total``: all frames, for the description). InputError when nothing fits."""
    n_total = n if n_total is None else n_total
    notes: list[str] = []
    kind, val_index, region = "none", (), None
    description = "no validation"
    th, tw, nt = h, w, n
    if separate_val:
        kind = "stack"
        description = "validation on a separate stack"
    elif val_fraction > 0 and n >= min_val_frames:
        k = max(1, int(round(val_fraction * n)))
        val_index = tuple(int(i) for i in np.unique(
            np.linspace(0, n - 1, k + 2)[1:-1].round().astype(int)))
        kind, nt = "frames", n - len(val_index)
        description = f"{len(val_index)} of {n_total} frames held out for validation"
    elif val_fraction > 0:
        along_y = h >= w
        side = h if along_y else w
        band = max(int(round(val_fraction * side)), 16)
        if side - band >= min(multiple, side // 2) and band < side:
            kind, region = "region", (along_y, side - band)
            where = "bottom" if along_y else "right"
            description = f"the {where} {band} pixels of each frame held out for validation"
            th, tw = (side - band, w) if along_y else (h, side - band)
        else:
            notes.append(f"frames of {h}x{w} are too small to hold out a validation region; "
                         "training without validation (the last model is kept, watch for "
                         "overfitting)")
    fit = min(patch_size, th, tw)
    usable = (fit // multiple) * multiple
    if usable < multiple:
        raise InputError(
            f"the training region is {th}x{tw} pixels, smaller than the network's minimum patch "
            f"of {multiple}x{multiple}; use larger images, val_fraction=0, or a shallower network"
        )
    if usable < patch_size:
        notes.append(f"patch_size {patch_size} does not fit the {th}x{tw} training region; "
                     f"using {usable}")
    return SplitPlan(kind, val_index, region, (nt, c, th, tw), usable, description,
                     tuple(notes))


@dataclass(frozen=True)
class TrainPlan:
    """What a training run will do, known before it starts (for the widgets)."""

    steps: int | None  # None: a time budget only
    patch_size: int
    batch_size: int
    split: str
    notes: tuple[str, ...]


def run_plan(split: SplitPlan, config) -> TrainPlan:
    """The :class:`TrainPlan` of a resolved ``config`` on data split as ``split``: the steps
    (from the epochs when given), the patch, the batch, the hold-out."""
    steps = config.steps
    if config.epochs is not None and steps is None:
        steps = steps_for_epochs(config.epochs, split.train_shape, config.batch_size,
                                 split.patch_size)
    return TrainPlan(steps, split.patch_size, config.batch_size, split.description,
                     split.notes)


def plan_training(layout: Layout, config, device="cpu", separate_val: bool = False) -> TrainPlan:
    """What :class:`~.trainer.Trainer` would do with a stack of ``layout`` and ``config`` on
    ``device`` (constant frames aside: they are only found once the data is read)."""
    import torch

    from ..device import resolve_device
    from ..methods import get_method

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    cfg = resolve_config(config, dev)
    method = get_method(cfg.method, **cfg.method_params)
    h, w = layout.frame_shape
    split = plan_split(layout.n_frames, layout.n_channels, h, w, cfg.patch_size,
                       method.patch_multiple(method.model_config(1, cfg.width, cfg.depth)),
                       cfg.val_fraction, separate_val)
    return run_plan(split, cfg)
