"""The training thread's side of the Train widget: a generator run by a napari worker that builds
a :class:`~napari_b2u.train.trainer.Trainer` with ``api.make_trainer``, trains, and sends
:class:`Packet` s to the GUI thread. Qt-free.

It yields at most ``GUI_INTERVAL`` apart (plus every preview, validation, message and the end),
carrying the loss rows of all steps in between, so that the plot is complete while the GUI
thread stays idle.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__.split(".")[0])  # the package's logger

#: the longest the GUI waits between two updates from the training thread (seconds)
GUI_INTERVAL = 0.1


class Control:
    """Shared by the GUI thread and the training thread (everything here is thread-safe)."""

    def __init__(self, preview):
        self.trainer = None
        self.stop_requested = threading.Event()
        self.preview = preview  # (frame, region) the previews should show

    def stop(self) -> None:
        self.stop_requested.set()
        trainer = self.trainer
        if trainer is not None:
            trainer.stop()


@dataclass(frozen=True)
class RunInfo:
    """What the trainer will do, sent once it is built."""

    method: str  # the method's title
    method_name: str  # its registered name
    steps: int | None  # None: a time budget only
    max_time: float | None
    patch_size: int
    batch_size: int
    device: str
    split: str  # the hold-out, in words ("" if unknown)
    notes: tuple[str, ...] = ()  # the plan's notes (a smaller patch, no validation)
    compile: bool = False
    previews: bool = True  # previews are on (preview_every > 0)


@dataclass
class Packet:
    kind: str  # "ready", "progress" or "error"
    event: object = None  # the latest TrainEvent
    rows: list = field(default_factory=list)  # (step, terms, schedule, val_error) since last
    info: RunInfo | None = None
    error: BaseException | None = None


def _run_info(trainer) -> RunInfo:
    """The trainer's own plan (steps, patch, hold-out) and notes, for the panel."""
    cfg, plan = trainer.config, trainer.plan
    return RunInfo(method=trainer.method.title, method_name=trainer.method.name,
                   steps=cfg.steps, max_time=cfg.max_time, patch_size=plan.patch_size,
                   batch_size=trainer.batch_size, device=str(trainer.device), split=plan.split,
                   # the plan's notes, then the trainer's own (the blind spot chosen for
                   # correlated noise, a warm start that found no weights)
                   notes=tuple(plan.notes) + tuple(trainer.messages),
                   compile=bool(cfg.compile and trainer.device.type == "cuda"),
                   previews=bool(cfg.preview_every))


def train_job(ctl: Control, data, axes: str, val_data, kwargs: dict):
    """Generator run by the worker thread: builds the trainer with ``api.make_trainer(data,
    axes=axes, val_stack=val_data, **kwargs)``, trains, returns the Denoiser (None when there is
    no model: an error, or stopped before the first step — the last event says so). Errors are
    yielded as packets, so the GUI words them and recovers."""
    from .. import api
    from ..errors import TrainingError

    try:
        trainer = api.make_trainer(data, axes=axes, val_stack=val_data,
                                   preview_frame=ctl.preview[0], **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
        log.debug("creating the trainer failed", exc_info=True)
        yield Packet("error", error=exc)
        return None
    ctl.trainer = trainer
    if ctl.stop_requested.is_set():
        trainer.stop()
    trainer.set_preview(*ctl.preview, now=False)
    yield Packet("ready", info=_run_info(trainer))
    rows, last, last_terms = [], time.monotonic(), None
    events = iter(trainer)
    try:
        for ev in events:
            fresh = ev.terms if ev.terms and ev.terms != last_terms else None
            if fresh is not None or ev.validated:
                rows.append((ev.step, fresh, ev.schedule,
                             ev.val_error if ev.validated else None))
                last_terms = ev.terms
            now = time.monotonic()
            if (ev.done or ev.phase or ev.previews is not None or ev.message or ev.validated
                    or now - last >= GUI_INTERVAL):
                yield Packet("progress", event=ev, rows=rows)
                rows, last = [], now
    except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
        log.debug("training failed", exc_info=True)
        yield Packet("error", error=exc)
        return None
    finally:
        events.close()  # an early close keeps the model trained so far
        ctl.trainer = None  # napari may keep the worker (and ctl) alive: drop the frames
    try:
        return trainer.result()
    except TrainingError:  # stopped before the first step: the last event said so
        return None
