"""Autosave and resume: a model file that also holds what continuing a run needs.

The ``training`` entry of a checkpoint stores the optimizer, the random-number states, the step,
the clock, the best weights so far and a fingerprint of the training data, so that a resumed run
on the same stack reproduces an uninterrupted one (tested on CPU) and other data is refused.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import TrainConfig
from .data import Normalization, data_fingerprint
from .errors import InputError
from .files import atomic_write
from .modelfile import read_checkpoint
from .results import make_denoiser


def make_checkpoint(trainer) -> dict:
    """A model file (the best model so far) that also holds everything to resume training."""
    best = trainer.best_record()
    if trainer._best_state is not None and best is not None:
        ck = make_denoiser(trainer, trainer._best_state,
                           f"best by validation (step {best['step']})")
    else:
        ck = make_denoiser(trainer, trainer.average.kept(trainer.model), "last")
    ck = ck.to_checkpoint()
    lay = trainer.data.layout
    method = trainer.method
    ck["training"] = {
        "step": trainer.step,
        "elapsed": float(trainer.elapsed),
        "config": trainer.config.to_dict(),
        "base_lr": float(trainer.base_lr),
        "batch_size": int(trainer.batch_size),
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict(),
        "best_state": ({k: v.detach().cpu() for k, v in trainer._best_state.items()}
                       if trainer._best_state is not None else None),
        "best_val": float(trainer._best_val) if math.isfinite(trainer._best_val) else None,
        "history": list(trainer.history),
        "nan_retries": trainer._nan_retries,
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
    InputError saying why — cheap, for a GUI to refuse before it starts a thread."""
    ck = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    if not ck.get("training"):
        raise InputError("this model file holds no training state to resume from (it was "
                         "saved after training, not autosaved during it)")
    return ck


def resume_trainer(cls, checkpoint, stack, axes=None, device="auto", val_stack=None,
                   steps=None, max_time=None, autosave=None, **changes):
    """A ``cls`` (Trainer) continuing the run saved in ``checkpoint`` on the same ``stack``."""
    ck = check_resumable(checkpoint)
    tr = ck["training"]
    cfg = TrainConfig.from_dict(tr["config"], "this checkpoint")
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
    stored = data.get("fingerprint")
    if stored is not None and stored != data_fingerprint(arr, axes):
        raise InputError(
            "this checkpoint was trained on other data: the stack given has the same shape "
            f"{tuple(arr.shape)} but different values, dtype or orientation. Resume with "
            "the stack it was trained on, or start a new training")
    trainer = cls(stack, axes=axes, config=cfg, device=device, val_stack=val_stack)
    restore(trainer, tr)
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


def restore(trainer, tr: dict) -> None:
    """Put the saved training state into a freshly built trainer."""
    trainer.model.load_state_dict(tr["model"])
    trainer.base_lr = float(tr["base_lr"])
    trainer.batch_size = int(tr["batch_size"])
    trainer.optimizer = trainer._make_optimizer()
    trainer.optimizer.load_state_dict(tr["optimizer"])
    trainer.step = int(tr["step"])
    trainer.elapsed = float(tr["elapsed"])
    trainer.history = list(tr["history"])
    trainer._nan_retries = int(tr.get("nan_retries", 0))
    if tr.get("ema") is not None and trainer.average.on:
        trainer.average.state = {k: v.to(trainer.device) for k, v in tr["ema"].items()}
    if tr.get("best_state") is not None:
        trainer._best_state = {k: v.to(trainer.device) for k, v in tr["best_state"].items()}
        trainer._best_val = float(tr["best_val"])
    if tr.get("rng_device") == trainer.device.type:
        trainer.sampler.gen.set_state(tr["sampler_rng"])
        if tr.get("method_rng") is not None and trainer.method.generator is not None:
            trainer.method.generator.set_state(tr["method_rng"])
    trainer.messages.append(f"resumed at step {trainer.step}")
