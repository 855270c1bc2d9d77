"""Training data: the hold-out plan, normalized frames, and random crops drawn on the device.

:func:`plan_split` is the one rule for what is held out for validation and which patch size
fits; :func:`prepare_data` applies it to a stack, and :func:`plan_training` answers the same
questions from shapes alone (for the widget's "N epochs = M steps" before any data is read).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .data import (
    Layout,
    Normalization,
    data_fingerprint,
    fit_normalization,
    informative_frames,
    validate_stack,
    warn_dynamic_range,
)
from .device import free_memory
from .errors import InputError

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


@dataclass
class TrainData:
    """Normalized frames split into a training part and a held-out validation part."""

    frames: np.ndarray  # (N, C, Y, X) normalized, all frames (for previews)
    train: np.ndarray  # (Nt, C, Yt, Xt) what training samples from
    val: np.ndarray | None  # (Nv, C, Yv, Xv) never sampled by training
    normalization: Normalization
    layout: Layout
    split: str  # human-readable description of the hold-out
    fingerprint: str = ""  # of the raw stack (resume refuses other data)


def prepare_data(
    stack,
    axes: str | None,
    patch_size: int,
    multiple: int,
    val_fraction: float = 0.1,
    val_stack=None,
    normalization: str | Normalization = "auto",
    min_val_frames: int = MIN_VAL_FRAMES,
) -> tuple[TrainData, int]:
    """Validate, normalize and split; return the data and the patch size actually usable.
    A lazy stack too large for memory is sampled lazily (:mod:`~napari_b2u.lazytrain`)."""
    from .lazytrain import lazy_train_data

    lazy = lazy_train_data(stack, axes, patch_size, multiple, val_fraction, val_stack,
                           normalization, min_val_frames)
    if lazy is not None:
        return lazy
    arr, ax = validate_stack(stack, axes)
    layout = Layout(ax, arr.shape)
    raw = layout.to_frames(arr)
    norm = normalization if isinstance(normalization, Normalization) else fit_normalization(
        raw, normalization)
    frames = norm.apply(raw)
    warn_dynamic_range(frames, stacklevel=4)
    keep = informative_frames(frames)
    if not keep.any():
        raise InputError("every frame of the stack is constant: there is nothing to learn from")
    if not keep.all():
        bad = np.flatnonzero(~keep)
        warnings.warn(
            f"{bad.size} of {keep.size} frames are constant (all zero? dropped frames?) and are "
            f"left out of training: frames {bad[:10].tolist()}" + (" ..." if bad.size > 10
                                                                   else ""), stacklevel=3)
    good = np.flatnonzero(keep)  # indices into all frames
    n, c, h, w = frames.shape
    plan = plan_split(good.size, c, h, w, patch_size, multiple, val_fraction,
                      separate_val=val_stack is not None, min_val_frames=min_val_frames,
                      n_total=n)
    for note in plan.notes:
        warnings.warn(note, stacklevel=3)
    split, train, val = plan.description, frames[good], None
    if plan.kind == "stack":
        varr, vax = validate_stack(val_stack, ax if np.ndim(val_stack) == arr.ndim else None)
        vlayout = Layout(vax, varr.shape)
        if vlayout.n_channels != layout.n_channels:
            raise InputError(
                f"the validation stack has {vlayout.n_channels} channel(s), the training stack "
                f"{layout.n_channels}"
            )
        val = norm.apply(vlayout.to_frames(varr))
        split = f"validation on a separate stack of {val.shape[0]} frame(s)"
    elif plan.kind == "frames":
        val_idx = good[list(plan.val_index)]
        train, val = frames[np.setdiff1d(good, val_idx)], frames[val_idx]
        split = f"{split} (frames {val_idx.tolist()})"
    elif plan.kind == "region":
        along_y, cut = plan.region
        sub = frames[good]
        if along_y:
            train, val = sub[:, :, :cut], sub[:, :, cut:]
        else:
            train, val = sub[:, :, :, :cut], sub[:, :, :, cut:]
    train = np.ascontiguousarray(train)
    if val is not None:
        val = np.ascontiguousarray(val)
    return TrainData(frames, train, val, norm, layout, split,
                     data_fingerprint(arr, ax)), plan.patch_size


@dataclass(frozen=True)
class TrainPlan:
    """What a training run will do, known before it starts (for the widgets)."""

    steps: int | None  # None: a time budget only
    patch_size: int
    batch_size: int
    split: str
    notes: tuple[str, ...]


def plan_training(layout: Layout, config, device="cpu", separate_val: bool = False) -> TrainPlan:
    """The steps, patch and hold-out that :class:`~napari_b2u.engine.Trainer` would use for a
    stack of ``layout`` with ``config`` on ``device`` (constant frames aside: they are only
    found once the data is read)."""
    from .config import resolve_config, steps_for_epochs
    from .device import resolve_device
    from .methods import get_method

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    cfg = resolve_config(config, dev)
    method = get_method(cfg.method, **cfg.method_params)
    multiple = method.patch_multiple(method.model_config(1, cfg.width, cfg.depth))
    h, w = layout.frame_shape
    plan = plan_split(layout.n_frames, layout.n_channels, h, w, cfg.patch_size, multiple,
                      cfg.val_fraction, separate_val)
    steps = cfg.steps
    if cfg.epochs is not None:
        steps = steps_for_epochs(cfg.epochs, plan.train_shape, cfg.batch_size,
                                 plan.patch_size)
    return TrainPlan(steps, plan.patch_size, cfg.batch_size, plan.description, plan.notes)


def crop_sampler(frames, device: torch.device, seed: int, augment: bool = True):
    """The sampler of training crops: :class:`CropSampler` over frames in memory, the buffered
    sampler of :mod:`~napari_b2u.lazytrain` over frames larger than memory."""
    if hasattr(frames, "buffered_sampler"):
        return frames.buffered_sampler(device, seed, augment)
    return CropSampler(frames, device, seed, augment)


def gather_crops(data: torch.Tensor, frame, y0, x0, patch: int, flip_gen=None) -> torch.Tensor:
    """The patch×patch crops of ``data`` (N, C, H, W) at (frame, y0, x0), one tensor index;
    with ``flip_gen`` each crop gets a random dihedral flip (drawn from that generator)."""
    batch, c, dev = frame.shape[0], data.shape[1], data.device
    ar = torch.arange(patch, device=dev)
    rows = (y0[:, None] + ar).view(batch, 1, patch, 1)
    cols = (x0[:, None] + ar).view(batch, 1, 1, patch)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    out = data[frame.view(batch, 1, 1, 1), ch, rows, cols]
    if flip_gen is not None:
        flips = torch.randint(2, (3, batch, 1, 1, 1), device=dev, generator=flip_gen).bool()
        out = torch.where(flips[0], out.flip(-1), out)
        out = torch.where(flips[1], out.flip(-2), out)
        out = torch.where(flips[2], out.transpose(-1, -2), out)
    return out


class CropSampler:
    """Random square crops with random dihedral flips, drawn on the device in a few tensor ops."""

    def __init__(self, frames: np.ndarray, device: torch.device, seed: int, augment: bool = True,
                 keep_on_device: bool | None = None):
        self.device = device
        nbytes = frames.nbytes
        if keep_on_device is None:
            free = free_memory(device)
            keep_on_device = device.type == "cpu" or free is None or nbytes < 0.3 * free
        self.on_device = keep_on_device
        t = torch.from_numpy(frames)
        if keep_on_device:
            self.data = t.to(device)
        else:
            self.data = t.pin_memory() if device.type == "cuda" else t
        src = self.data.device
        self.gen = torch.Generator(device=src)
        self.gen.manual_seed(int(seed))
        self.augment = augment

    def sample(self, batch: int, patch: int) -> torch.Tensor:
        d = self.data
        n, _, h, w = d.shape
        dev, g = d.device, self.gen
        i = torch.randint(n, (batch,), device=dev, generator=g)
        y0 = torch.randint(h - patch + 1, (batch,), device=dev, generator=g)
        x0 = torch.randint(w - patch + 1, (batch,), device=dev, generator=g)
        out = gather_crops(d, i, y0, x0, patch, g if self.augment else None)
        if out.device != self.device:
            out = out.to(self.device, non_blocking=True)
        return out.contiguous()


def crop_spots(shape, size: int, count: int) -> list[tuple[int, int, int]]:
    """(frame, y0, x0) of up to ``count`` crops of up to size x size, spread evenly over
    frames of ``shape`` (N, C, Y, X)."""
    n, _, h, w = shape
    ch, cw = min(size, h), min(size, w)
    ys = np.unique(np.linspace(0, h - ch, max(1, h // ch)).round().astype(int))
    xs = np.unique(np.linspace(0, w - cw, max(1, w // cw)).round().astype(int))
    spots = [(f, int(y), int(x)) for f in range(n) for y in ys for x in xs]
    if len(spots) > count:
        pick = np.linspace(0, len(spots) - 1, count).round().astype(int)
        spots = [spots[i] for i in pick]
    return spots


def take_crops(frames, size: int, spots) -> np.ndarray:
    """The crops of up to size x size at ``spots`` ((frame, y0, x0), :func:`crop_spots`)."""
    _, _, h, w = frames.shape
    ch, cw = min(size, h), min(size, w)
    return np.stack([frames[f, :, y:y + ch, x:x + cw] for f, y, x in spots])


def validation_crops(val: np.ndarray, size: int, count: int) -> np.ndarray:
    """Up to ``count`` crops of up to size x size, spread evenly over the held-out data."""
    return take_crops(val, size, crop_spots(val.shape, size, count))
