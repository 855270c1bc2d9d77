"""Headless API: train on a stack, denoise, save and load models.

>>> from napari_b2u import api
>>> model = api.train_stack(noisy, axes="TYX")            # a Denoiser
>>> clean = model.denoise(noisy)                            # same shape and dtype as the input
>>> model.save("cells.b2u"); model = api.load("cells.b2u")
"""

from __future__ import annotations

from collections.abc import Callable

from .config import PRESETS, TrainConfig, build_config
from .denoise.denoiser import Denoiser
from .device import available_devices, device_info
from .errors import InputError
from .methods import method_names
from .train.events import TrainEvent
from .train.trainer import Trainer

__all__ = [
    "train_stack", "denoise_stack", "load", "make_trainer", "Denoiser", "Trainer", "TrainConfig",
    "TrainEvent", "InputError", "available_devices", "device_info", "method_names", "PRESETS",
    "build_config", "noise_report", "context_report",
]


def make_trainer(
    stack,
    axes: str | None = None,
    method: str | None = None,
    device: str = "auto",
    val_stack=None,
    preview_frame: int = 0,
    resume=None,
    **options,
) -> Trainer:
    """A :class:`Trainer` ready to iterate (the GUI uses this; scripts usually want
    :func:`train_stack`). ``options`` as in :func:`train_stack`; they are checked by
    :func:`~napari_b2u.config.build_config` before any data is touched."""
    if resume is not None:  # continue an autosaved run; its settings come from the file
        options = dict(options)
        return Trainer.resume(resume, stack, axes=axes, device=device, val_stack=val_stack,
                              steps=options.pop("steps", None),
                              max_time=options.pop("max_time", None),
                              autosave=options.pop("autosave", None), method=method, **options)
    cfg = build_config(method or "b2u", **options)
    return Trainer(stack, axes=axes, config=cfg, device=device, val_stack=val_stack,
                   preview_frame=preview_frame)


def train_stack(
    stack,
    axes: str | None = None,
    method: str | None = None,
    steps: int | None = None,
    max_time: float | None = None,
    device: str = "auto",
    callback: Callable[[TrainEvent], bool | None] | None = None,
    progress: bool = True,
    val_stack=None,
    resume=None,
    **options,
) -> Denoiser:
    """Train a self-supervised denoiser on ``stack`` itself and return it.

    stack: array-like (numpy, memmap, dask) laid out as ``axes`` — 'YX', 'TYX', 'ZYX', 'CYX',
        'TCZYX', ... (default 'YX' for 2D, 'TYX' for 3D). Every frame of every non-channel axis
        is a training sample; channels are denoised jointly by one network.
    method: 'b2u' (Blind2Unblind, the default) or another name from :func:`method_names`.
    steps / max_time: training length as a number of steps, or a time budget in seconds (the
        λ and learning-rate schedules then follow the fraction of the budget used). Or
        ``epochs=``: passes over the training pixels (steps = epochs × training pixels /
        (batch × patch²)). With a time budget as well, whichever ends first stops training.
    device: 'auto', 'cuda', 'cuda:1', 'mps' or 'cpu'.
    callback: called with every :class:`TrainEvent`; return ``False`` to stop training early
        (the best model so far is kept). Events carry previews (``preview_every``) only when
        there is a callback to see them (or ``preview_every`` is given): without one none are
        computed (each costs s² + 1 network passes over a 256² crop — about a quarter of a CPU
        run's time with a box mask).
    val_stack: a separate validation stack; by default ``val_fraction`` (0.1) of the frames
        (or, for fewer than 5 frames, of each frame's area) is held out. The model with the
        lowest self-supervised validation error is returned.
    resume: continue from an autosave of the same stack (its settings come from the file;
        ``steps``/``max_time`` may extend it, ``autosave`` keep saving).
    options: any setting of :class:`~napari_b2u.config.TrainConfig` (``epochs``,
        ``patch_size``, ``batch_size``, ``lr``, ``width``, ``depth``, ``val_fraction``,
        ``seed``, ``compile``, ``amp``, ``autosave``, ``autosave_every``, ...; None takes the
        device preset, see ``PRESETS``) or a parameter of the method (B2U: ``cells``, ...;
        ``Method.parameters``). Every value is checked before training starts.
    """
    asked = options.get("preview_every") is not None
    trainer = make_trainer(stack, axes=axes, method=method, device=device, val_stack=val_stack,
                           resume=resume, steps=steps, max_time=max_time, **options)
    # a progress bar shows no images: previews would only cost time (the config keeps its
    # interval, so a run resumed in the Train widget previews again)
    trainer.preview.on = callback is not None or asked
    bar = _Bar(trainer) if progress else None
    try:
        _drive(trainer, callback, bar)
    finally:
        if bar is not None:
            bar.close()
    return trainer.result()


def _drive(trainer: Trainer, callback, bar) -> None:
    """Train to the end; ``callback(event) is False`` or Ctrl-C (in a notebook or a terminal)
    stop it, keeping what was learned so far."""
    try:
        for ev in trainer:
            if bar is not None:
                bar.update(ev)
            if callback is not None and callback(ev) is False:
                trainer.stop()
    except KeyboardInterrupt:
        trainer.stop()
        for _ in trainer:
            pass


class _Bar:
    """A tqdm bar over the steps (or the per cent of a time budget), with loss and validation."""

    def __init__(self, trainer: Trainer):
        from tqdm.auto import tqdm

        self.by_steps = bool(trainer.config.steps)
        self.bar = tqdm(total=trainer.config.steps or 100, desc=f"train {trainer.method.name}",
                        unit="step" if self.by_steps else "%")

    def update(self, ev: TrainEvent) -> None:
        self.bar.n = ev.step if self.by_steps else int(100 * ev.progress)
        post = {}
        if ev.loss is not None:
            post["loss"] = f"{ev.loss:.4g}"
        if ev.best_val_error is not None:
            post["val"] = f"{ev.best_val_error:.4g}"
        if ev.phase:  # the end phase: choosing the weights, the floor, the last preview
            post["now"] = ev.phase
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def denoise_stack(stack, model: Denoiser | str, axes: str | None = None, out=None, **kwargs):
    """Denoise ``stack`` with a :class:`Denoiser` or a model file path; see
    :meth:`Denoiser.denoise` for the options (output, dtype, device, tile_size, batch_size).
    ``stack`` may be lazy (a zarr / OME-Zarr or TIFF path, a zarr array or store, a dask
    array): it is read a batch at a time. ``out``: an OME-Zarr folder to write instead, block by
    block, for stacks of any size (:meth:`Denoiser.denoise_to_zarr`; returns its result)."""
    if not isinstance(model, Denoiser):
        model = load(model)
    if out is not None:
        return model.denoise_to_zarr(stack, out, axes=axes, **kwargs)
    return model.denoise(stack, axes=axes, **kwargs)


def context_report(stack, axes: str | None = None, axis: str = "auto"):
    """Whether neighbouring frames of ``stack`` show the same structure, and how many on each
    side ``context="auto"`` would give the network (:class:`~napari_b2u.context.ContextReport`;
    ``.describe()`` for one line)."""
    from .context import context_report as report

    return report(stack, axes, axis)


def noise_report(stack, axes: str | None = None):
    """What the noise of ``stack`` looks like, measured from the stack alone: its correlation
    between neighbours (lags 1–3 along X and Y), clipped fractions, a Poisson–Gaussian fit, and
    the blind spot ``mask="auto"`` would use (:class:`~napari_b2u.noise.NoiseReport`;
    ``.describe()`` for one line)."""
    from .noise import noise_report as report

    return report(stack, axes)


def load(path) -> Denoiser:
    """Load a model file written by :meth:`Denoiser.save`, or a bioimage.io package (a .zip,
    its folder or its rdf.yaml) that napari-b2u exported (:meth:`Denoiser.export_bioimageio`;
    opening one needs ``napari-b2u[bioimageio]``). Safe: never runs code from the file."""
    from .zoo import is_package, read_package

    if is_package(path):
        return Denoiser.from_checkpoint(read_package(path), source=str(path))
    return Denoiser.load(path)
