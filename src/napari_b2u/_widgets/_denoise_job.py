"""The denoising thread of the Denoise widget: a generator run by a napari worker that denoises
one layer after the other with ``Denoiser.denoise_iter`` and sends :class:`DenoiseMessage` s to
the GUI thread. Qt-free."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__.split(".")[0])  # the package's logger


@dataclass(frozen=True)
class DenoiseMessage:
    """What the denoising thread tells the GUI about the layer at ``index`` of its list."""

    kind: str  # "progress", "result", "error" or "cancelled"
    index: int
    done: int = 0  # frames done ("progress")
    total: int = 0  # frames in the layer ("progress")
    result: object = None  # the denoised array ("result")
    error: BaseException | None = None  # ("error")


@dataclass
class DenoiseJob:
    """A denoising run in progress, as the Denoise panel follows it."""

    layers: list
    in_place: list  # per layer: denoised in place (else into a new layer)
    cancel: threading.Event
    gen: object
    worker: object
    note: dict  # written into the metadata of the results
    done: int = 0
    restored: set = field(default_factory=set)  # ids of layers restored meanwhile
    message: tuple | None = None  # (text, kind) that ends the run, if not the usual one
    unit: str = "frame"  # what progress counts: frames, or blocks (to OME-Zarr)
    blocks: int = 0  # to OME-Zarr: blocks denoised by this run
    skipped: int = 0  # to OME-Zarr: blocks an earlier run into the same folder had done
    refreshed: list = field(default_factory=list)  # names of output layers shown again
    axes: list = field(default_factory=list)  # per layer: the axes it is denoised with


def relay(cancel: threading.Event, k: int, progress, what: str):
    """Relay ``progress`` (a generator yielding (done, total) and returning the result) as
    :class:`DenoiseMessage` s for layer ``k``, checking ``cancel`` before each step. Returns
    True when the job must end (cancelled or failed): ``if (yield from relay(...)): return``."""
    try:
        while True:
            if cancel.is_set():
                yield DenoiseMessage("cancelled", k)
                return True
            try:
                done, n = next(progress)
            except StopIteration as stop:
                result = stop.value
                break
            yield DenoiseMessage("progress", k, done=done, total=n)
    except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
        log.debug("%s failed", what, exc_info=True)
        yield DenoiseMessage("error", k, error=exc)
        return True
    finally:
        progress.close()  # a cancelled run frees its memory (and stops at its next tile) now
    yield DenoiseMessage("result", k, result=result)
    return False


def denoise_job(cancel: threading.Event, model, items, options: dict):
    """Generator run by the worker thread. ``items``: (data, axes) per layer; ``options``:
    keyword arguments of ``denoise_iter``. Stops at the first error or when ``cancel`` is set
    (within one batch or tile)."""
    for k, (data, axes) in enumerate(items):
        if (yield from relay(cancel, k, model.denoise_iter(data, axes=axes, **options),
                             "denoising")):
            return
