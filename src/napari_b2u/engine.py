"""The one training engine: sampling, optimization, schedules, validation, previews, stopping.

``Trainer`` runs any :class:`~napari_b2u.methods.Method`. Iterating over it trains, yielding a
:class:`TrainEvent` after every step; ``stop()`` (from any thread) ends training after the current
step, and ``result()`` returns a :class:`~napari_b2u.inference.Denoiser` holding the model with the
best self-supervised validation error seen (or the last one when there is no validation).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .data import (
    InputError,
    Layout,
    Normalization,
    data_fingerprint,
    fit_normalization,
    informative_frames,
    validate_stack,
    warn_dynamic_range,
)
from .device import amp_dtype, free_memory, is_oom, release_memory, resolve_device
from .errors import OutputError, TrainingError
from .losses import lr_factor
from .methods import Method, get_method

# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` fields are filled from the device preset."""

    method: str = "b2u"
    steps: int | None = None
    max_time: float | None = None  # seconds; schedules then follow the fraction of time used
    # instead of steps: passes over the training pixels (steps = epochs × training pixels /
    # (batch × patch²), computed once the data and the usable patch size are known)
    epochs: float | None = None
    patch_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-8
    width: int | None = None
    depth: int | None = None
    method_params: dict = field(default_factory=dict)
    val_fraction: float = 0.1
    val_every: int | None = None
    val_patches: int | None = None
    preview_every: int | None = None
    preview_size: int = 256
    augment: bool = True
    seed: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    normalization: str = "auto"
    log_every: int | None = None
    max_nan_retries: int = 3
    autosave: str | None = None  # path of a checkpoint rewritten during training (resumable)
    autosave_every: float = 300.0  # seconds between autosaves

    def to_dict(self) -> dict:
        return asdict(self)


#: Presets by device type. GPU values follow the reference recipe except where the benchmark
#: (docs/benchmarks.md) measured better: s = 2 and lr 4e-4. CPU trades width for steps.
PRESETS = {
    "cuda": dict(steps=3000, patch_size=128, batch_size=4, lr=4e-4, width=48, depth=5,
                 val_every=100, val_patches=16, preview_every=50, amp=True, channels_last=True,
                 compile=True, log_every=10),
    "mps": dict(steps=2000, patch_size=128, batch_size=4, lr=4e-4, width=48, depth=5,
                val_every=100, val_patches=8, preview_every=50, amp=False, channels_last=False,
                compile=False, log_every=10),
    "cpu": dict(steps=300, patch_size=64, batch_size=4, lr=1e-3, width=24, depth=4,
                val_every=25, val_patches=4, preview_every=25, amp=False, channels_last=False,
                compile=False, log_every=1),
}


def resolve_config(config: TrainConfig, device: torch.device) -> TrainConfig:
    preset = PRESETS.get(device.type, PRESETS["cpu"])
    filled = {k: (v if getattr(config, k) is None else getattr(config, k)) for k, v in
              preset.items()}
    cfg = replace(config, **filled)
    if config.epochs is not None:
        if config.steps is not None:
            raise ValueError("give the training length as steps or as epochs, not both")
        if not config.epochs > 0:
            raise ValueError("epochs must be a positive number")
        cfg.steps = None  # from the epochs, once the data is known (Trainer)
    elif config.max_time is not None and config.steps is None:
        cfg.steps = None  # time budget only
    if cfg.max_time is not None and cfg.max_time <= 0:
        raise ValueError("max_time must be a positive number of seconds")
    if cfg.steps is not None and cfg.steps < 1:
        raise ValueError("steps must be at least 1")
    if cfg.batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    if cfg.amp and amp_dtype(device) is None:
        cfg.amp = False  # AMP is a CUDA feature here; CPU bf16 is slower than fp32 on most CPUs
    return cfg


def steps_for_epochs(epochs: float, train_shape, batch_size: int, patch_size: int) -> int:
    """Steps for ``epochs`` passes over the training pixels: an epoch samples, in random
    crops, as many pixels as the training frames hold."""
    n, _, h, w = train_shape
    return max(1, math.ceil(epochs * n * h * w / (batch_size * patch_size**2)))


# --------------------------------------------------------------------------------------------
# data: split, on-device crop sampling


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
    min_val_frames: int = 5,
) -> tuple[TrainData, int]:
    """Validate, normalize and split; return the data and the patch size actually usable."""
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
    n, _, h, w = frames.shape
    val = None
    split = "no validation"
    train_idx = good
    region = None
    if val_stack is not None:
        varr, vax = validate_stack(val_stack, ax if np.ndim(val_stack) == arr.ndim else None)
        vlayout = Layout(vax, varr.shape)
        if vlayout.n_channels != layout.n_channels:
            raise InputError(
                f"the validation stack has {vlayout.n_channels} channel(s), the training stack "
                f"{layout.n_channels}"
            )
        val = norm.apply(vlayout.to_frames(varr))
        split = f"validation on a separate stack of {val.shape[0]} frame(s)"
    elif val_fraction > 0 and good.size >= min_val_frames:
        k = max(1, int(round(val_fraction * good.size)))
        pick = np.unique(np.linspace(0, good.size - 1, k + 2)[1:-1].round().astype(int))
        val_idx = good[pick]
        train_idx = np.setdiff1d(good, val_idx)
        val = frames[val_idx]
        split = (f"{val_idx.size} of {n} frames held out for validation "
                 f"(frames {val_idx.tolist()})")
    elif val_fraction > 0:
        # Few frames: hold out a band of every frame along its longer side.
        along_y = h >= w
        side = h if along_y else w
        band = max(int(round(val_fraction * side)), 16)
        if side - band >= min(multiple, side // 2) and band < side:
            region = (along_y, side - band)
            where = "bottom" if along_y else "right"
            split = f"the {where} {band} pixels of each frame held out for validation"
        else:
            warnings.warn(
                f"frames of {h}x{w} are too small to hold out a validation region; training "
                "without validation (the last model is kept, watch for overfitting)",
                stacklevel=3,
            )
    train = frames[train_idx]
    if region is not None:
        along_y, cut = region
        sub = frames[good]
        if along_y:
            train, val = sub[:, :, :cut], sub[:, :, cut:]
        else:
            train, val = sub[:, :, :, :cut], sub[:, :, :, cut:]
    train = np.ascontiguousarray(train)
    if val is not None:
        val = np.ascontiguousarray(val)
    # The largest square patch (a multiple of the network's) that fits the training region.
    th, tw = train.shape[-2:]
    fit = min(patch_size, th, tw)
    usable = (fit // multiple) * multiple
    if usable < multiple:
        raise InputError(
            f"the training region is {th}x{tw} pixels, smaller than the network's minimum patch "
            f"of {multiple}x{multiple}; use larger images, val_fraction=0, or a shallower network"
        )
    if usable < patch_size:
        warnings.warn(
            f"patch_size {patch_size} does not fit the {th}x{tw} training region; using {usable}",
            stacklevel=3,
        )
    return TrainData(frames, train, val, norm, layout, split,
                     data_fingerprint(arr, ax)), usable


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
        n, c, h, w = d.shape
        dev, g = d.device, self.gen
        i = torch.randint(n, (batch,), device=dev, generator=g)
        y0 = torch.randint(h - patch + 1, (batch,), device=dev, generator=g)
        x0 = torch.randint(w - patch + 1, (batch,), device=dev, generator=g)
        ar = torch.arange(patch, device=dev)
        rows = (y0[:, None] + ar).view(batch, 1, patch, 1)
        cols = (x0[:, None] + ar).view(batch, 1, 1, patch)
        ch = torch.arange(c, device=dev).view(1, c, 1, 1)
        out = d[i.view(batch, 1, 1, 1), ch, rows, cols]
        if self.augment:
            flips = torch.randint(2, (3, batch, 1, 1, 1), device=dev, generator=g).bool()
            out = torch.where(flips[0], out.flip(-1), out)
            out = torch.where(flips[1], out.flip(-2), out)
            out = torch.where(flips[2], out.transpose(-1, -2), out)
        if out.device != self.device:
            out = out.to(self.device, non_blocking=True)
        return out.contiguous()


def validation_crops(val: np.ndarray, size: int, count: int) -> np.ndarray:
    """Up to ``count`` crops of up to size x size, spread evenly over the held-out data."""
    n, c, h, w = val.shape
    ch, cw = min(size, h), min(size, w)
    ys = np.unique(np.linspace(0, h - ch, max(1, h // ch)).round().astype(int))
    xs = np.unique(np.linspace(0, w - cw, max(1, w // cw)).round().astype(int))
    spots = [(f, y, x) for f in range(n) for y in ys for x in xs]
    if len(spots) > count:
        pick = np.linspace(0, len(spots) - 1, count).round().astype(int)
        spots = [spots[i] for i in pick]
    return np.stack([val[f, :, y:y + ch, x:x + cw] for f, y, x in spots])


# --------------------------------------------------------------------------------------------
# events


@dataclass
class TrainEvent:
    step: int
    total_steps: int | None  # None until it can be estimated (time budget)
    progress: float  # 0..1 of the step or time budget
    loss: float | None
    terms: dict
    lam: float | None  # the method's scheduled weight (B2U: λ)
    lr: float
    steps_per_s: float | None
    elapsed: float
    eta: float | None
    val_error: float | None = None  # last validation error
    best_val_error: float | None = None
    best_step: int | None = None
    validated: bool = False  # this event carries a fresh validation error
    previews: dict | None = None  # name -> (C, h, w) float32 in the input's units
    message: str | None = None  # something the user should know (a retry, a rollback)
    done: bool = False
    stopped: bool = False


# --------------------------------------------------------------------------------------------
# trainer


class Trainer:
    def __init__(
        self,
        stack,
        axes: str | None = None,
        config: TrainConfig | None = None,
        device="auto",
        val_stack=None,
        preview_frame: int = 0,
        preview_region: tuple[int, int, int, int] | None = None,
    ):
        self.device = resolve_device(device)
        self.config = cfg = resolve_config(config or TrainConfig(), self.device)
        self.method: Method = get_method(cfg.method, **cfg.method_params)
        # The network's size multiple decides the usable patch; probe the config first.
        multiple = self.method.patch_multiple(self.method.model_config(1, cfg.width, cfg.depth))
        self.data, self.patch_size = prepare_data(
            stack, axes, cfg.patch_size, multiple, cfg.val_fraction, val_stack,
            cfg.normalization)
        self.model_config = self.method.model_config(
            self.data.layout.n_channels, cfg.width, cfg.depth)
        if cfg.epochs is not None and cfg.steps is None:
            cfg.steps = steps_for_epochs(cfg.epochs, self.data.train.shape, cfg.batch_size,
                                         self.patch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = self.method.build(self.model_config)
        self.model.to(self.device)
        self.method.seed(cfg.seed + 1, self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.method.channels_last = True
        self.batch_size = cfg.batch_size
        self.sampler = CropSampler(self.data.train, self.device, cfg.seed, cfg.augment)
        self.val = None
        if self.data.val is not None:
            vsize = max(self.patch_size, min(128, self.patch_size * 2))
            self.val = torch.from_numpy(validation_crops(self.data.val, vsize, cfg.val_patches))
            self.val = self.val.to(self.device)
        self.amp = amp_dtype(self.device) if cfg.amp else None
        self.base_lr = cfg.lr
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._preview = (int(preview_frame), preview_region)
        self._preview_now = False
        self._result = None
        self._finished = False  # _finish ran (with or without a model)
        self._best_state = None
        self._good_state = None
        self.history: list[dict] = []  # validation history: step, val_error
        self.messages: list[str] = []
        self._compiled = False
        self._gen = None
        self.step = 0
        self.elapsed = 0.0
        self._nan_retries = 0
        self._preview_oom_said = False
        self._val_batch = None
        self._best_val = math.inf
        self._loss, self._terms, self._rate = None, {}, None
        self._sched = self.method.schedule(0.0)
        self._lr = self.base_lr

    # ---- public control (thread-safe) --------------------------------------------------------
    def stop(self) -> None:
        """Ask training to end after the current step; the best/last model is kept."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def set_preview(self, frame: int | None = None, region=None, now: bool = True) -> None:
        """Choose the frame (index over all frames) and region (y, x, h, w) shown in previews."""
        with self._lock:
            f = self._preview[0] if frame is None else int(frame)
            self._preview = (f, region)
            self._preview_now = now

    def result(self):
        """The trained :class:`Denoiser`: trains to the end first if iteration has not run.
        Raises :class:`TrainingError` when training ended before its first step (stopped at
        once, or a time budget too short for one step): there is no model to return."""
        if self._result is None and not self._finished:
            for _ in self:
                pass
        if self._result is None:
            if self._finished:
                raise TrainingError(
                    "training ended before its first step (stopped, or the time budget was too "
                    "short for one step): there is no trained model. Train longer")
            raise TrainingError("training ended with an error; no model was produced")
        return self._result

    # ---- internals ---------------------------------------------------------------------------
    def _make_optimizer(self):
        kw = dict(lr=self.base_lr, weight_decay=self.config.weight_decay)
        if self.device.type == "cuda":
            kw["fused"] = True
        return torch.optim.Adam(self.method.param_groups(self.model), **kw)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _maybe_compile(self):
        if not self.config.compile or self._compiled:
            return
        try:
            for m in self.method.modules_to_compile(self.model):
                m.compile(dynamic=False)
            self._compiled = True
        except Exception as exc:  # noqa: BLE001 - compile is an optimization only
            self._uncompile(exc)

    def _uncompile(self, exc: BaseException) -> None:
        for m in self.method.modules_to_compile(self.model):
            m._compiled_call_impl = None  # what Module.compile() set: back to eager
        self._compiled = False
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        self._note(f"torch.compile failed ({type(exc).__name__}: {first}); continuing "
                   "without it (pass compile=False to skip it)")

    def _guarded(self, fn, *args):
        """Run ``fn``; if torch.compile fails (it does so lazily, at the first call of each
        shape: no Triton, no C compiler, ...), fall back to eager mode and run it again."""
        try:
            return fn(*args)
        except Exception as exc:
            if not (self._compiled and _is_compile_error(exc)):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self._uncompile(exc)
        return fn(*args)

    def _note(self, msg: str) -> str:
        self.messages.append(msg)
        warnings.warn(msg, stacklevel=2)
        return msg

    def _snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _progress(self, step: int, elapsed: float) -> float:
        cfg = self.config
        ps = step / cfg.steps if cfg.steps else 0.0
        pt = elapsed / cfg.max_time if cfg.max_time else 0.0
        return min(1.0, max(ps, pt))

    def _validate_safe(self) -> float:
        """Validation, retried in smaller chunks when the GPU runs out of memory (the smaller
        chunk is kept for the rest of the run)."""
        vb = max(1, min(self.batch_size, self._val_batch or self.batch_size))
        while True:
            oom = False
            try:
                err = self._guarded(self._validate, vb)
                self._val_batch = vb
                return err
            except Exception as exc:
                if not is_oom(exc) or vb == 1:
                    raise
                oom = True
            if oom:  # outside the except block so the traceback frees its tensors
                self.model.train()
                release_memory(self.device)
                vb = max(1, vb // 2)
                self._note(f"out of GPU memory in validation: validating {vb} crops at a time")

    def _previews_safe(self, sched):
        """Previews are optional: out of GPU memory skips this one (said once) and goes on."""
        oom = False
        try:
            return self._guarded(self._previews, sched)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        if oom:
            release_memory(self.device)
            if not self._preview_oom_said:
                self._preview_oom_said = True
                self._note("out of GPU memory while computing a preview: previews are skipped "
                           "when memory is short; training goes on")
            return None

    @torch.no_grad()
    def _validate(self, vb: int | None = None) -> float:
        self.model.eval()
        tot, n = 0.0, 0
        vb = max(1, vb or self.batch_size)
        with self._autocast():
            for i in range(0, self.val.shape[0], vb):
                part = self.val[i:i + vb]
                tot += float(self.method.validation_error(self.model, part)) * part.shape[0]
                n += part.shape[0]
        self.model.train()
        return tot / n

    @torch.no_grad()
    def _previews(self, sched) -> dict:
        with self._lock:
            frame, region = self._preview
            self._preview_now = False
        frames = self.data.frames
        frame = min(max(frame, 0), frames.shape[0] - 1)
        _, c, h, w = frames.shape
        if region is None:
            ph, pw = min(self.config.preview_size, h), min(self.config.preview_size, w)
            region = ((h - ph) // 2, (w - pw) // 2, ph, pw)
        y0, x0, ph, pw = (int(v) for v in region)
        y0, x0 = min(max(y0, 0), h - 1), min(max(x0, 0), w - 1)
        crop = frames[frame:frame + 1, :, y0:y0 + ph, x0:x0 + pw]
        x = torch.from_numpy(np.ascontiguousarray(crop)).to(self.device)
        self.model.eval()
        with self._autocast():
            out = self.method.previews(self.model, x, sched)
        self.model.train()
        norm = self.data.normalization
        res = {"input": norm.invert(crop)[0]}
        _, scale = norm.as_arrays(c)
        for k, v in out.items():
            v = v.float().cpu().numpy()
            # back to the input's units so that previews share the input layer's contrast
            res[k] = (v * scale)[0] if k in self.method.spread_previews else norm.invert(v)[0]
        res["_region"] = (frame, y0, x0, ph, pw)
        return res

    def _finish(self):
        self._finished = True
        step = self.step
        if step == 0:  # nothing was learned: a random network is not a model
            self._result = None
            return
        chosen, state = "last", None
        if self.val is not None and step > 0:
            if not self.history or self.history[-1]["step"] != step:
                self.history.append({"step": step, "val_error": self._validate_safe()})
            best = min(self.history, key=lambda r: r["val_error"])
            if self._best_state is not None and best["step"] != step:
                state, chosen = self._best_state, f"best (step {best['step']})"
        if state is None:
            state = self._snapshot()
        else:
            self.model.load_state_dict(state)  # the readout below describes the kept model
        self._result = self._denoiser(state, chosen)

    def _denoiser(self, state: dict, chosen: str):
        from .inference import Denoiser

        info = {
            "steps": self.step,
            "seconds": round(self.elapsed, 2),
            "device": str(self.device),
            "chosen": chosen,
            "split": self.data.split,
            "patch_size": self.patch_size,
            "batch_size": self.batch_size,
            "history": list(self.history),
            "train_config": self.config.to_dict(),
            "axes": self.data.layout.axes,
            "messages": list(self.messages),
            "readout": self._readout(),
        }
        return Denoiser(
            method=self.method.name,
            method_params=dict(self.method.params),
            model_config=self.model_config,
            state_dict={k: v.float().cpu() for k, v in state.items()},
            normalization=self.data.normalization,
            info=info,
        )

    # ---- checkpoints: autosave and resume ------------------------------------------------------
    def checkpoint(self) -> dict:
        """A model file (the best model so far) that also holds everything to resume training."""
        best = min(self.history, key=lambda r: r["val_error"]) if self.history else None
        if self._best_state is not None and best is not None:
            ck = self._denoiser(self._best_state, f"best (step {best['step']})").to_checkpoint()
        else:
            ck = self._denoiser(self._snapshot(), "last").to_checkpoint()
        lay = self.data.layout
        ck["training"] = {
            "step": self.step,
            "elapsed": float(self.elapsed),
            "config": self.config.to_dict(),
            "base_lr": float(self.base_lr),
            "batch_size": int(self.batch_size),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "best_state": ({k: v.detach().cpu() for k, v in self._best_state.items()}
                           if self._best_state is not None else None),
            "best_val": float(self._best_val) if math.isfinite(self._best_val) else None,
            "history": list(self.history),
            "nan_retries": self._nan_retries,
            "sampler_rng": self.sampler.gen.get_state(),
            "method_rng": (self.method.generator.get_state()
                           if self.method.generator is not None else None),
            "rng_device": self.device.type,
            "data": {"axes": lay.axes, "shape": list(lay.shape),
                     "dtype": self.data.normalization.source_dtype,
                     "fingerprint": self.data.fingerprint},
        }
        return ck

    def _autosave(self) -> str | None:
        """Write the autosave; a failure (disk full, ...) is said and training goes on."""
        try:
            self.save_checkpoint(self.config.autosave)
        except OutputError as exc:
            return self._note(f"autosave failed ({exc}); training goes on without it")
        return None

    def save_checkpoint(self, path) -> None:
        """Write :meth:`checkpoint` atomically (the previous file stays until it is complete)."""
        from .files import atomic_write

        with atomic_write(path, "the autosave checkpoint") as tmp:
            torch.save(self.checkpoint(), tmp)

    @classmethod
    def resume(cls, checkpoint, stack, axes: str | None = None, device="auto", val_stack=None,
               steps: int | None = None, max_time: float | None = None,
               autosave: str | None = None, **changes) -> Trainer:
        """Continue training from an autosaved checkpoint (a path or a loaded dict) on the same
        stack. ``steps``/``max_time`` may extend the budget; other settings come from the file.
        ``autosave``: where to keep autosaving this time (None: nowhere — the path stored in
        the checkpoint is never written unless given again)."""
        from .inference import read_checkpoint

        ck = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
        tr = ck.get("training")
        if not tr:
            raise InputError("this model file holds no training state to resume from (it was "
                             "saved after training, not autosaved during it)")
        cfg = TrainConfig(**tr["config"])
        if steps is not None:
            cfg.steps = steps
        if max_time is not None:
            cfg.max_time = max_time
        cfg.autosave = autosave
        for k, v in changes.items():
            setattr(cfg, k, v)
        cfg.normalization = Normalization.from_dict(ck["normalization"])
        axes = axes or tr["data"]["axes"]
        arr = np.asarray(stack) if not hasattr(stack, "shape") else stack
        if list(arr.shape) != list(tr["data"]["shape"]):
            raise InputError(
                f"this checkpoint was trained on a stack of shape {tuple(tr['data']['shape'])} "
                f"(axes {tr['data']['axes']}); the stack given has shape {tuple(arr.shape)}. "
                "Resume with the same data")
        stored = tr["data"].get("fingerprint")
        if stored is not None and stored != data_fingerprint(arr, axes):
            raise InputError(
                "this checkpoint was trained on other data: the stack given has the same shape "
                f"{tuple(arr.shape)} but different values, dtype or orientation. Resume with "
                "the stack it was trained on, or start a new training")
        trainer = cls(stack, axes=axes, config=cfg, device=device, val_stack=val_stack)
        trainer._restore(tr)
        return trainer

    def _restore(self, tr: dict) -> None:
        self.model.load_state_dict(tr["model"])
        self.base_lr = float(tr["base_lr"])
        self.batch_size = int(tr["batch_size"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(tr["optimizer"])
        self.step = int(tr["step"])
        self.elapsed = float(tr["elapsed"])
        self.history = list(tr["history"])
        self._nan_retries = int(tr.get("nan_retries", 0))
        if tr.get("best_state") is not None:
            self._best_state = {k: v.to(self.device) for k, v in tr["best_state"].items()}
            self._best_val = float(tr["best_val"])
        if tr.get("rng_device") == self.device.type:
            self.sampler.gen.set_state(tr["sampler_rng"])
            if tr.get("method_rng") is not None and self.method.generator is not None:
                self.method.generator.set_state(tr["method_rng"])
        self.messages.append(f"resumed at step {self.step}")

    @torch.no_grad()
    def _readout(self) -> dict:
        norm = self.data.normalization
        y = torch.from_numpy(validation_crops(self.data.train, self.patch_size, 8)).to(
            self.device)
        self.model.eval()
        try:
            return self.method.readout(self.model, y, norm.offset[0], norm.scale[0])
        finally:
            self.model.train()

    def __iter__(self):
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def _train_step(self, sched_t, use_sched: bool) -> dict:
        """One optimization step; returns the loss terms as (unsynchronized) tensors."""
        batch = self.sampler.sample(self.batch_size, self.patch_size)
        with self._autocast():
            loss, terms = self.method.training_loss(
                self.model, batch, sched_t if use_sched else None)
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.method.clip_grad_norm:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.method.clip_grad_norm)
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            if self.method.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.method.clip_grad_norm)
            opt.step()
        return {k: v.detach().float() for k, v in terms.items()}

    def _rollback(self) -> str:
        """Non-finite loss: restore the last good weights and halve the learning rate."""
        self._nan_retries += 1
        self.model.load_state_dict(self._good_state)
        self.base_lr *= 0.5
        self.optimizer = self._make_optimizer()
        if self._nan_retries > self.config.max_nan_retries:
            self._stop.set()
            return self._note(
                f"the loss became NaN/Inf {self._nan_retries} times even after lowering the "
                "learning rate; training stopped with the last good weights. Check the input "
                "for extreme values")
        return self._note(
            f"the loss became NaN/Inf at step {self.step}; rolled back to the last good "
            f"weights and lowered the learning rate to {self.base_lr:.2g}")

    def _run(self):
        cfg, method = self.config, self.method
        self.model.train()
        self._maybe_compile()
        t0 = time.perf_counter() - self.elapsed  # a resumed run continues its clock
        acc: dict[str, torch.Tensor] = {}
        acc_n = 0
        rate_t, rate_step = time.perf_counter(), self.step
        last_save = time.perf_counter()
        self._good_state = self._snapshot()
        sched_t = torch.zeros((), device=self.device)
        log_every = max(1, int(cfg.log_every or 1))
        try:
            while True:
                self.elapsed = time.perf_counter() - t0
                p = self._progress(self.step, self.elapsed)
                if p >= 1.0 or self._stop.is_set():
                    break
                sched = method.schedule(p)
                if sched is not None:
                    sched_t.fill_(sched)  # a 0-d tensor: no recompiles as λ ramps
                self._lr = self.base_lr * lr_factor(p)
                for g in self.optimizer.param_groups:
                    g["lr"] = self._lr * g.get("lr_scale", 1.0)
                self._sched = sched
                message, oom = None, False
                try:
                    terms = self._guarded(self._train_step, sched_t, sched is not None)
                except Exception as exc:
                    if not is_oom(exc) or self.batch_size == 1:
                        raise
                    oom = True
                if oom:  # handled outside the except block so the traceback frees its tensors
                    self.optimizer.zero_grad(set_to_none=True)
                    release_memory(self.device)
                    self.batch_size = max(1, self.batch_size // 2)
                    message = self._note(
                        f"out of GPU memory: continuing with batch size {self.batch_size}")
                    yield self._event(message=message)
                    continue
                self.step += 1
                step = self.step
                for k, v in terms.items():
                    acc[k] = acc[k] + v if k in acc else v
                acc_n += 1
                if step % log_every == 0 or step == cfg.steps:
                    vals = {k: float(v) / acc_n for k, v in acc.items()}  # the only sync point
                    acc, acc_n = {}, 0
                    if all(math.isfinite(v) for v in vals.values()):
                        self._terms, self._loss = vals, vals.get("loss")
                        if step % (log_every * 10) == 0:
                            self._good_state = self._snapshot()
                    else:
                        message = self._rollback()
                now = time.perf_counter()
                self.elapsed = now - t0
                if now - rate_t >= 0.5 and step > rate_step:
                    inst = (step - rate_step) / (now - rate_t)
                    self._rate = inst if self._rate is None else 0.7 * self._rate + 0.3 * inst
                    rate_t, rate_step = now, step
                validated = False
                if self.val is not None and step % cfg.val_every == 0:
                    err = self._validate_safe()
                    self.history.append({"step": step, "val_error": err})
                    validated = True
                    if err < self._best_val:
                        self._best_state = self._snapshot()
                        self._best_val = err
                if cfg.autosave and now - last_save >= cfg.autosave_every:
                    message = self._autosave() or message
                    last_save = time.perf_counter()
                previews = None
                if cfg.preview_every and (step % cfg.preview_every == 0 or self._preview_now):
                    previews = self._previews_safe(sched)
                yield self._event(validated=validated, previews=previews, message=message)
        except BaseException as exc:
            # Ctrl-C or a closed generator keep what was learned; real errors propagate. The
            # GPU memory is released in every case.
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) and self._result is None:
                self._finish()
            self._cleanup()
            raise
        self.elapsed = time.perf_counter() - t0
        if cfg.autosave and self.step > 0:
            self._autosave()
        self._finish()
        stopped = self._stop.is_set() and (cfg.steps is None or self.step < cfg.steps)
        p = self._progress(self.step, self.elapsed)
        self._sched = method.schedule(p)
        previews = self._previews_safe(self._sched) if cfg.preview_every else None
        self._cleanup()
        done_msg = (f"kept the {self._result.info['chosen']} model after {self.step} steps"
                    if self._result is not None else
                    "stopped before the first step: there is no model")
        yield self._event(previews=previews, done=True, stopped=stopped, message=done_msg)

    def _cleanup(self) -> None:
        """Free the GPU: whatever ended the run (done, stop, error), nothing stays held."""
        self.sampler = _Released(self.sampler)
        self.val = None
        self._best_state = None
        self._good_state = None
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        if self.device.type != "cpu":  # the Denoiser holds its own CPU copy of the weights
            self.model.to("cpu")
        release_memory(self.device)

    def _event(self, validated=False, previews=None, message=None, done=False,
               stopped=False) -> TrainEvent:
        cfg, step = self.config, self.step
        p = 1.0 if (done and not stopped) else self._progress(step, self.elapsed)
        if cfg.steps:
            total = cfg.steps
        elif p > 0.02:
            total = int(round(step / p))
        else:
            total = None
        if done:
            eta = 0.0
        elif cfg.max_time and not cfg.steps:
            eta = max(0.0, cfg.max_time - self.elapsed)
        elif self._rate and total:
            eta = max(0.0, (total - step) / self._rate)
        else:
            eta = None
        best = min(self.history, key=lambda r: r["val_error"]) if self.history else None
        return TrainEvent(
            step=step, total_steps=total, progress=p, loss=self._loss, terms=dict(self._terms),
            lam=self._sched, lr=self._lr, steps_per_s=self._rate, elapsed=self.elapsed, eta=eta,
            val_error=self.history[-1]["val_error"] if self.history else None,
            best_val_error=best["val_error"] if best else None,
            best_step=best["step"] if best else None, validated=validated, previews=previews,
            message=message, done=done, stopped=stopped)


def _is_compile_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor")) or "triton" in mod


class _Released:
    """Stands in for a sampler after training ended; holds no tensors."""

    def __init__(self, sampler):
        self.device = getattr(sampler, "device", None)

    def sample(self, *a, **k):
        raise RuntimeError("this trainer has finished; create a new Trainer to train again")
