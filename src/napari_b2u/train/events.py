"""What training reports: a :class:`TrainEvent` per step, with a :class:`Preview` now and then.

Plain dataclasses (numpy arrays, floats): the GUI thread and callbacks consume them without
touching the engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..device import call_retrying
from .runtime import StopNow


@dataclass
class Preview:
    """What the model makes of a crop of one frame, in the input's units."""

    frame: int  # index over all frames, in the core's (N, C, Y, X) order
    region: tuple[int, int, int, int]  # (y0, x0, h, w) of the crop in the frame
    images: dict  # name -> (C, h, w) float32; "input" is the noisy crop
    spreads: tuple[str, ...] = ()  # names that are spreads (noise std maps), not intensities


@dataclass
class TrainEvent:
    step: int
    total_steps: int | None  # None until it can be estimated (time budget)
    progress: float  # 0..1 of the step or time budget
    loss: float | None
    terms: dict
    schedule: float | None  # the method's scheduled weight (B2U: λ; see Method.schedule_name)
    lr: float
    steps_per_s: float | None
    elapsed: float
    eta: float | None
    val_error: float | None = None  # last validation error
    best_val_error: float | None = None
    best_step: int | None = None
    validated: bool = False  # this event carries a fresh validation error
    previews: Preview | None = None
    message: str | None = None  # something the user should know (a retry, a rollback)
    done: bool = False
    stopped: bool = False
    #: after the last step, what the end phase is doing, in words ("comparing with a Gaussian
    #: filter… 3/3"; ``eta``: its seconds left); None while training
    phase: str | None = None

    @property
    def lam(self) -> float | None:
        """Deprecated name of :attr:`schedule`."""
        return self.schedule


@torch.no_grad()
def compute_preview(method, model, frames: np.ndarray, normalization, frame: int, region,
                    size: int, sched, autocast, device) -> Preview:
    """The method's previews on a crop of ``frames`` (normalized, all frames; with stack context
    each frame's neighbours stacked behind its channels): ``region`` (y0, x0, h, w) of
    ``frame``, or a centred ``size`` square when None; in the input's units (spreads by the
    scale only)."""
    frame = min(max(frame, 0), frames.shape[0] - 1)
    _, c, h, w = frames.shape
    c //= method.window
    if region is None:
        ph, pw = min(size, h), min(size, w)
        region = ((h - ph) // 2, (w - pw) // 2, ph, pw)
    y0, x0, ph, pw = (int(v) for v in region)
    y0, x0 = min(max(y0, 0), h - 1), min(max(x0, 0), w - 1)
    crop = frames[frame:frame + 1, :, y0:y0 + ph, x0:x0 + pw]
    x = torch.from_numpy(np.ascontiguousarray(crop)).to(device)
    model.eval()
    try:
        with autocast():
            out = method.previews(model, x, sched)
    finally:
        model.train()
    images = {"input": normalization.invert(crop[:, :c])[0]}
    _, scale = normalization.as_arrays(c)
    spreads = method.spread_previews
    for k, v in out.items():
        v = v.float().cpu().numpy()
        # back to the input's units so that previews share the input layer's contrast
        images[k] = (v * scale)[0] if k in spreads else normalization.invert(v)[0]
    hh, ww = crop.shape[-2:]
    return Preview(frame, (y0, x0, hh, ww), images, tuple(spreads))


def build_event(trainer, validated=False, previews=None, message=None, done=False,
                stopped=False, phase=None) -> TrainEvent:
    """The event for the trainer's current state: progress, the total steps (estimated from
    the time used under a time budget), the ETA, the last and best validation errors;
    ``phase``: the end phase's stage (its ETA is the end phase's)."""
    cfg, st = trainer.config, trainer.state
    step = st.step
    p = 1.0 if (done and not stopped) else trainer.progress()
    if cfg.steps:
        total = cfg.steps
    elif p > 0.02:
        total = int(round(step / p))
    else:
        total = None
    rate = st.rate
    if done:
        eta = 0.0
    elif phase is not None:
        eta = trainer.end.remaining
    elif cfg.max_time and not cfg.steps:
        eta = max(0.0, cfg.max_time - st.elapsed)
    elif rate and total:
        eta = max(0.0, (total - step) / rate)
    else:
        eta = None
    history = st.history
    best = st.best_record()
    return TrainEvent(
        step=step, total_steps=total, progress=p, loss=st.loss, terms=dict(st.terms),
        schedule=st.schedule, lr=st.lr, steps_per_s=rate, elapsed=st.elapsed, eta=eta,
        val_error=history[-1]["val_error"] if history else None,
        best_val_error=best["val_error"] if best else None,
        best_step=best["step"] if best else None, validated=validated, previews=previews,
        message=message, done=done, stopped=stopped, phase=phase)


class PreviewControl:
    """Which crop the previews show — set from any thread (the viewer's slider) — and when one
    is due: every ``preview_every`` steps, at once when the view moved, or, so that slow steps
    on a large frame still show progress, every ``preview_seconds``. ``on``: whether anyone
    receives previews (api.train_stack turns them off without a callback)."""

    def __init__(self, config, frame: int = 0, region=None):
        self.config, self.on = config, True
        self._lock = threading.Lock()
        self._where, self._now = (int(frame), region), False
        self._oom_said = False

    def set(self, frame: int | None = None, region=None, now: bool = True) -> None:
        with self._lock:
            self._where = (self._where[0] if frame is None else int(frame), region)
            self._now = now

    def take(self) -> tuple[int, object]:
        """The (frame, region) to preview now."""
        with self._lock:
            self._now = False
            return self._where

    @property
    def enabled(self) -> bool:
        """Previews are computed at all: an interval is set and someone receives them."""
        return bool(self.config.preview_every) and self.on

    def due(self, step: int, since_last: float) -> bool:
        cfg = self.config
        return self.enabled and (step % cfg.preview_every == 0 or self._now or bool(
            cfg.preview_seconds and since_last >= cfg.preview_seconds))

    def compute(self, trainer, sched, deadline=None) -> Preview | None:
        """Previews of the crop under view (of the weights in the model now); optional: out of
        GPU memory skips them (said once) and training goes on; a stop (or ``deadline()``) drops
        them at the network's next layer. Their duration is the end phase's estimate."""
        frame, region = self.take()
        steps, t = trainer.steps, time.perf_counter()

        def run():
            return compute_preview(trainer.method, trainer.model, trainer.data.inputs,
                                   trainer.data.normalization, frame, region,
                                   self.config.preview_size, sched, steps.autocast,
                                   trainer.device)

        def skip() -> bool:
            if not self._oom_said:
                self._oom_said = True
                trainer.note("out of GPU memory while computing a preview: previews are "
                             "skipped when memory is short; training goes on")
            return False

        try:
            with steps.abortable(deadline):
                out = call_retrying(trainer.device, lambda: steps.guarded(run), skip,
                                    lambda: None)
        except StopNow:
            return None
        trainer.end.seconds["preview"] = time.perf_counter() - t
        return out
