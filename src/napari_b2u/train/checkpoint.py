"""Autosave and resume: a model file that also holds what continuing a run needs.

The ``training`` entry of a checkpoint stores the optimizer, the random-number states, the step,
the clock, the best weights so far and a fingerprint of the training data, so that a resumed run
on the same stack reproduces an uninterrupted one (tested on CPU) and other data is refused.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from ..config import FIELDS, TrainConfig
from ..data import Normalization
from ..errors import InputError
from ..io.files import atomic_write
from ..io.sources import stack_fingerprint
from ..modelfile import check_checkpoint, read_checkpoint
from .keep import make_denoiser


def make_checkpoint(trainer) -> dict:
    """A model file (the best model so far) that also holds everything to resume training."""
    st, steps = trainer.state, trainer.steps
    best = st.best_record()
    if st.best_state is not None and best is not None:
        ck = make_denoiser(trainer, st.best_state, f"best by validation (step {best['step']})")
    else:
        ck = make_denoiser(trainer, trainer.average.kept(trainer.model), "last")
    ck = ck.to_checkpoint()
    lay = trainer.data.layout
    method = trainer.method
    ck["training"] = {
        "step": st.step,
        "elapsed": float(st.elapsed),
        "config": trainer.config.to_dict(),
        "base_lr": float(steps.base_lr),
        "batch_size": int(steps.batch_size),
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "optimizer": steps.optimizer.state_dict(),
        "best_state": ({k: v.detach().cpu() for k, v in st.best_state.items()}
                       if st.best_state is not None else None),
        "best_val": float(st.best_val) if math.isfinite(st.best_val) else None,
        "history": list(st.history),
        "nan_retries": st.nan_retries,
        "ema": ({k: v.detach().cpu() for k, v in trainer.average.state.items()}
                if trainer.average.on else None),
        "sampler_rng": trainer.sampler.gen.get_state(),
        "method_rng": (method.generator.get_state() if method.generator is not None else None),
        "rng_device": trainer.device.type,
        "data": {"axes": lay.axes, "shape": list(lay.shape),
                 "dtype": trainer.data.normalization.source_dtype,
                 "fingerprint": trainer.data.fingerprint},
    }
    return ck


def save_checkpoint(trainer, path) -> None:
    """Write :func:`make_checkpoint` atomically (the previous file stays until it is complete;
    a failure raises OutputError and leaves no partial file)."""
    with atomic_write(path, "the autosave checkpoint") as tmp:
        torch.save(make_checkpoint(trainer), tmp)


def check_resumable(checkpoint) -> dict:
    """The checkpoint (a path or a loaded dict) if training can resume from it, else the
    InputError saying why — cheap, for a GUI to refuse before it starts a thread. Its model is
    checked like any model file's and every field of its training entry too (a damaged
    autosave would end in a traceback, or train on NaN and save a model nobody can load)."""
    return _resumable(checkpoint)[0]


def _resumable(checkpoint):
    ck = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    source = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if ck.get("training") is not None and not isinstance(ck["training"], dict):
        raise damaged(source, "training")  # (a tensor there has no truth value)
    if not ck.get("training"):
        raise InputError("this model file holds no training state to resume from (it was "
                         "saved after training, not autosaved during it)")
    check_checkpoint(ck, source)
    return ck, training_config(ck, source), source


def damaged(source: str, field: str) -> InputError:
    return InputError(f"{source}: the autosave is damaged ({field}): resume from another "
                      "checkpoint, or train afresh")


def _int(v, low, high) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _num(v, low, high) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and low <= v <= high)


def _tensors(d, ref: dict) -> bool:
    """Named finite float tensors with exactly the names and shapes of ``ref``."""
    return (isinstance(d, dict) and set(d) == set(ref)
            and all(isinstance(t, torch.Tensor) and t.is_floating_point()
                    and t.shape == ref[k].shape and bool(torch.isfinite(t).all())
                    for k, t in d.items()))


def _rng(v, device) -> bool:
    """A generator state: uint8 bytes, of a CPU generator's length for a CPU run (other
    devices' states are checked when set)."""
    return (isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1
            and 0 < v.numel() <= 1 << 20
            and (device != "cpu" or v.numel() == _CPU_RNG_BYTES))


_CPU_RNG_BYTES = torch.Generator().get_state().numel()


def training_config(ck: dict, source: str = "the checkpoint") -> TrainConfig:
    """The run's settings, after every field of the training entry is checked (types, ranges,
    shapes against the model's weights, which check_checkpoint compared with its network)."""
    tr = ck["training"]
    if not isinstance(tr, dict):
        raise damaged(source, "training")
    d = tr.get("config")
    if isinstance(d, dict) and d.get("epochs") is not None and d.get("steps") is not None:
        d = {**d, "epochs": None}  # an epochs run saves the steps computed from them
    try:
        cfg = TrainConfig.from_dict(d, source)
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - a value of the wrong type
        raise damaged(source, "config") from None
    if cfg.method != ck["method"]:
        raise damaged(source, "config")
    ref, step, hist, device = ck["state_dict"], tr.get("step"), tr.get("history"), \
        tr.get("rng_device")
    data = tr.get("data") if isinstance(tr.get("data"), dict) else {}
    checks = (  # in order: a later check may rely on an earlier one (the step)
        ("model", lambda: _tensors(tr.get("model"), ref)),
        ("best_state", lambda: tr.get("best_state") is None or _tensors(tr["best_state"], ref)),
        ("ema", lambda: tr.get("ema") is None or _tensors(tr["ema"], ref)),
        ("best_val", lambda: _num(tr.get("best_val"), -math.inf, math.inf)
         or tr.get("best_val") is None and tr.get("best_state") is None),
        ("step", lambda: _int(step, 0, FIELDS["steps"].high if cfg.steps is None
                              else cfg.steps)),
        ("elapsed", lambda: _num(tr.get("elapsed"), 0.0, 1e9)),
        ("base_lr", lambda: _num(tr.get("base_lr"), 0.0, 1.0) and tr["base_lr"] > 0),
        ("batch_size", lambda: _int(tr.get("batch_size"), 1,
                                    cfg.batch_size or FIELDS["batch_size"].high)),
        ("nan_retries", lambda: _int(tr.get("nan_retries", 0), 0, cfg.max_nan_retries + 1)),
        ("history", lambda: isinstance(hist, list) and len(hist) <= step + 1 and all(
            isinstance(r, dict) and set(r) == {"step", "val_error"} and _int(r["step"], 0, step)
            and isinstance(r["val_error"], (int, float)) and not isinstance(r["val_error"], bool)
            and not math.isnan(r["val_error"]) for r in hist)),
        ("rng_device", lambda: isinstance(device, str) and 0 < len(device) <= 16),
        ("sampler_rng", lambda: _rng(tr.get("sampler_rng"), device)),
        ("method_rng", lambda: tr.get("method_rng") is None or _rng(tr["method_rng"], device)),
        ("optimizer", lambda: isinstance(tr.get("optimizer"), dict)),
        ("data axes", lambda: isinstance(data.get("axes"), str) and 0 < len(data["axes"]) <= 8),
        ("data shape", lambda: isinstance(data.get("shape"), list)
         and 0 < len(data["shape"]) <= 8 and all(_int(n, 1, 1 << 40) for n in data["shape"])),
        ("data fingerprint", lambda: isinstance(data.get("fingerprint"), str)
         and re.fullmatch("[0-9a-f]{32}", data["fingerprint"]) is not None),
    )
    for field, ok in checks:
        if not ok():
            raise damaged(source, field)
    return cfg


def resume_trainer(cls, checkpoint, stack, axes=None, device="auto", val_stack=None,
                   steps=None, max_time=None, autosave=None, **changes):
    """A ``cls`` (Trainer) continuing the run saved in ``checkpoint`` on the same ``stack``."""
    ck, cfg, source = _resumable(checkpoint)
    tr = ck["training"]
    if steps is not None:
        cfg.steps = steps
    if max_time is not None:
        cfg.max_time = max_time
    cfg.autosave = autosave  # only where asked this time, never the path stored in the file
    _apply_changes(cfg, changes)
    cfg.normalization = Normalization.from_dict(ck["normalization"])
    cfg.validate()
    data = tr["data"]
    axes = axes or data["axes"]
    arr = np.asarray(stack) if not hasattr(stack, "shape") else stack
    if list(arr.shape) != list(data["shape"]):
        raise InputError(
            f"this checkpoint was trained on a stack of shape {tuple(data['shape'])} "
            f"(axes {data['axes']}); the stack given has shape {tuple(arr.shape)}. "
            "Resume with the same data")
    if data["fingerprint"] != stack_fingerprint(arr, axes):
        raise InputError(
            "this checkpoint was trained on other data: the stack given has the same shape "
            f"{tuple(arr.shape)} but different values, dtype or orientation. Resume with "
            "the stack it was trained on, or start a new training")
    trainer = cls(stack, axes=axes, config=cfg, device=device, val_stack=val_stack)
    restore(trainer, tr, source)
    return trainer


#: settings a resumed run may change: how it runs, not what it learns
RUNTIME_FIELDS = ("compile", "amp", "channels_last", "log_every", "preview_every",
                  "preview_seconds", "preview_size", "autosave_every", "max_nan_retries")


def _apply_changes(cfg: TrainConfig, changes: dict) -> None:
    """Options given again on resume: runtime settings may change; every other one must equal
    the checkpoint's (a different patch, lr, method parameter... would be another run)."""
    for key, value in changes.items():
        if value is None:
            continue
        if key in RUNTIME_FIELDS:
            setattr(cfg, key, value)
            continue
        stored = (getattr(cfg, key) if hasattr(cfg, key) and key != "method_params"
                  else cfg.method_params.get(key, _MISSING))
        if key == "method" and value == cfg.method:
            continue
        if stored is _MISSING or stored != value:
            shown = "not set" if stored is _MISSING else repr(stored)
            raise InputError(
                f"a resumed run keeps the checkpoint's settings: {key}={value!r} was given, the "
                f"checkpoint has {shown}. Leave it out, or start a new training")


_MISSING = object()


def restore(trainer, tr: dict, source: str = "the checkpoint") -> None:
    """Put the saved training state (checked by :func:`training_config`) into a freshly built
    trainer; what only the trainer can check (its network, optimizer and generators) is
    checked here, still before any training."""
    live = trainer.model.state_dict()
    if {k: v.shape for k, v in tr["model"].items()} != {k: v.shape for k, v in live.items()}:
        raise damaged(source, "config: its network differs from the saved weights")
    trainer.model.load_state_dict(tr["model"])
    st, steps = trainer.state, trainer.steps
    steps.base_lr = st.lr = float(tr["base_lr"])
    steps.batch_size = int(tr["batch_size"])
    steps.optimizer = steps.make_optimizer()
    if not _optimizer_ok(tr["optimizer"], steps.optimizer):
        raise damaged(source, "optimizer")
    try:
        steps.optimizer.load_state_dict(tr["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError):
        raise damaged(source, "optimizer") from None
    st.step = int(tr["step"])
    st.elapsed = float(tr["elapsed"])
    st.history = [dict(r) for r in tr["history"]]
    st.nan_retries = int(tr.get("nan_retries", 0))
    if tr.get("ema") is not None and trainer.average.on:
        trainer.average.state = {k: v.to(trainer.device) for k, v in tr["ema"].items()}
    if tr.get("best_state") is not None:
        st.best_state = {k: v.to(trainer.device) for k, v in tr["best_state"].items()}
        st.best_val = float(tr["best_val"])
    if tr.get("rng_device") == trainer.device.type:
        try:
            trainer.sampler.gen.set_state(tr["sampler_rng"])
            if tr.get("method_rng") is not None and trainer.method.generator is not None:
                trainer.method.generator.set_state(tr["method_rng"])
        except (RuntimeError, TypeError, ValueError):
            raise damaged(source, "random-number states") from None
    trainer.messages.append(f"resumed at step {trainer.step}")


def _optimizer_ok(sd, optimizer) -> bool:
    """A saved optimizer state that fits the live (Adam) optimizer: its groups hold as many
    parameters, every state tensor is finite with its parameter's shape (Adam's moments; its
    step a count), every hyperparameter finite and >= 0, betas < 1 (the saved lr_scale, betas
    and eps replace the live ones: a NaN there trains on NaN)."""
    live = optimizer.param_groups
    if not live:  # a classical method's stand-in has no state
        return sd == {}
    groups, state = sd.get("param_groups"), sd.get("state")
    if not (isinstance(groups, list) and isinstance(state, dict) and len(groups) == len(live)):
        return False
    params = {}
    for g, lg in zip(groups, live):
        if not (isinstance(g, dict) and isinstance(g.get("params"), list)
                and len(g["params"]) == len(lg["params"])):
            return False
        params.update(zip(g["params"], lg["params"]))
        # each hyperparameter of the kind the live one is (eps "1e-8", a string, failed in
        # Adam's step), finite and >= 0
        if not (all(_same_kind(v, lg[k]) for k, v in g.items() if k != "params" and k in lg)
                and all(_num(b, 0.0, 0.999999) for b in g.get("betas", ()))):
            return False
    for i, entry in state.items():
        if i not in params or not isinstance(entry, dict):
            return False
        for k, t in entry.items():  # the shape first: a view may declare 10^10 values
            if not (isinstance(t, torch.Tensor) and t.is_floating_point()
                    and (t.numel() == 1 if k == "step" else t.shape == params[i].shape)
                    and bool(torch.isfinite(t).all()) and (k != "step" or t.item() >= 0)):
                return False
    return True


def _same_kind(v, live) -> bool:
    """A saved optimizer hyperparameter that can replace the live one ``live``."""
    if live is None or isinstance(live, bool):
        return v is None or isinstance(v, bool)
    if isinstance(live, (int, float)):
        return _num(v, 0.0, math.inf)
    if isinstance(live, (list, tuple)):
        return (isinstance(v, (list, tuple)) and len(v) == len(live)
                and all(_same_kind(x, y) for x, y in zip(v, live)))
    return True  # other kinds: torch's load_state_dict says
