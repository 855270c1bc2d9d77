"""Headless API: train on a stack, denoise, save and load models.

>>> from napari_b2u import api
>>> model = api.train_stack(noisy, axes="TYX")            # a Denoiser
>>> clean = model.denoise(noisy)                            # same shape and dtype as the input
>>> model.save("cells.b2u"); model = api.load("cells.b2u")
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .data import InputError
from .device import available_devices, device_info
from .engine import PRESETS, TrainConfig, Trainer, TrainEvent
from .inference import Denoiser
from .methods import method_names

__all__ = [
    "train_stack", "denoise_stack", "load", "make_trainer", "Denoiser", "Trainer", "TrainConfig",
    "TrainEvent", "InputError", "available_devices", "device_info", "method_names", "PRESETS",
]


def make_trainer(
    stack,
    axes: str | None = None,
    method: str = "b2u",
    steps: int | None = None,
    max_time: float | None = None,
    patch_size: int | None = None,
    batch_size: int | None = None,
    cells: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    val_stack=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    width: int | None = None,
    depth: int | None = None,
    compile: bool | None = None,
    amp: bool | None = None,
    preview_every: int | None = None,
    preview_frame: int = 0,
    method_params: dict | None = None,
    resume=None,
    **config,
) -> Trainer:
    """A :class:`Trainer` ready to iterate (the GUI uses this; scripts usually want
    :func:`train_stack`). Arguments as in :func:`train_stack`."""
    if resume is not None:  # continue an autosaved run; its settings come from the file
        return Trainer.resume(resume, stack, axes=axes, device=device, val_stack=val_stack,
                              steps=steps, max_time=max_time, autosave=config.get("autosave"))
    params = dict(method_params or {})
    if cells is not None:
        params["cells"] = cells
    cfg = TrainConfig(method=method, steps=steps, max_time=max_time, patch_size=patch_size,
                      batch_size=batch_size, lr=lr, width=width, depth=depth,
                      method_params=params, val_fraction=val_fraction, seed=seed,
                      compile=compile, amp=amp, preview_every=preview_every, **config)
    return Trainer(stack, axes=axes, config=cfg, device=device, val_stack=val_stack,
                   preview_frame=preview_frame)


def train_stack(
    stack,
    axes: str | None = None,
    method: str = "b2u",
    steps: int | None = None,
    max_time: float | None = None,
    patch_size: int | None = None,
    batch_size: int | None = None,
    cells: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    callback: Callable[[TrainEvent], bool | None] | None = None,
    progress: bool = True,
    val_stack=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    **kwargs,
) -> Denoiser:
    """Train a self-supervised denoiser on ``stack`` itself and return it.

    stack: array-like (numpy, memmap, dask) laid out as ``axes`` — 'YX', 'TYX', 'ZYX', 'CYX',
        'TCZYX', ... (default 'YX' for 2D, 'TYX' for 3D). Every frame of every non-channel axis
        is a training sample; channels are denoised jointly by one network.
    method: 'b2u' (Blind2Unblind) or another name from :func:`method_names`.
    steps / max_time: training length as a number of steps, or a time budget in seconds (the
        λ and learning-rate schedules then follow the fraction of the budget used). Or
        ``epochs=``: passes over the training pixels (steps = epochs × training pixels /
        (batch × patch²)). With a time budget as well, whichever ends first stops training.
    patch_size, batch_size, cells (B2U's s), lr, width, depth: ``None`` takes the device preset
        (``PRESETS``: full reference-size network on a GPU, a lighter one on CPU).
    device: 'auto', 'cuda', 'cuda:1', 'mps' or 'cpu'.
    callback: called with every :class:`TrainEvent`; return ``False`` to stop training early
        (the best model so far is kept).
    val_stack / val_fraction: a separate validation stack, or the fraction of frames (or, for
        fewer than 5 frames, of each frame's area) held out; the model with the lowest
        self-supervised validation error is returned.
    autosave / autosave_every: a checkpoint path rewritten every ``autosave_every`` seconds
        (default 300) and at the end; ``api.load`` reads it as a model, and
        ``resume=path`` continues training from it on the same stack.
    """
    trainer = make_trainer(stack, axes=axes, method=method, steps=steps, max_time=max_time,
                           patch_size=patch_size, batch_size=batch_size, cells=cells, lr=lr,
                           device=device, val_stack=val_stack, val_fraction=val_fraction,
                           seed=seed, **kwargs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.config.steps or 100, desc=f"train {method}", unit="step"
                   if trainer.config.steps else "%")
    try:
        for ev in trainer:
            if bar is not None:
                bar.n = ev.step if trainer.config.steps else int(100 * ev.progress)
                post = {}
                if ev.loss is not None:
                    post["loss"] = f"{ev.loss:.4g}"
                if ev.best_val_error is not None:
                    post["val"] = f"{ev.best_val_error:.4g}"
                bar.set_postfix(post, refresh=False)
                bar.refresh()
            if callback is not None and callback(ev) is False:
                trainer.stop()
    except KeyboardInterrupt:
        # Ctrl-C in a notebook or terminal: keep what was learned so far.
        trainer.stop()
        for _ in trainer:
            pass
    finally:
        if bar is not None:
            bar.close()
    return trainer.result()


def denoise_stack(stack, model: Denoiser | str, axes: str | None = None, **kwargs) -> np.ndarray:
    """Denoise ``stack`` with a :class:`Denoiser` or a model file path; see
    :meth:`Denoiser.denoise` for the options (output, dtype, device, tile_size, batch_size)."""
    if not isinstance(model, Denoiser):
        model = load(model)
    return model.denoise(stack, axes=axes, **kwargs)


def load(path) -> Denoiser:
    """Load a model file written by :meth:`Denoiser.save` (safe: never runs code from it)."""
    return Denoiser.load(path)
