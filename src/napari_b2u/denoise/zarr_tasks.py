"""The task of out-of-core denoising: one block of one input, denoised with the in-memory
path's loop and written to its output chunks. What a dask worker runs and keeps: the model
rebuilt once per process (cached by its weights' checksum), the open output arrays, the runs
cancelled; one network pass at a time per process, so threads read and write while it
computes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from ..data import Layout, cast_output, output_float
from ..errors import Cancelled
from ..io.frames import FrameReader
from ..io.memory import bound_heap
from ..io.sources import Source, require
from . import omezarr
from .model import TrainedModel
from .predict import denoise_frames
from .tiling import BlockPlan

_LOCK = threading.Lock()
_COMPUTE = threading.Lock()  # one network pass at a time per process (torch uses the cores)
_MODELS: dict[str, object] = {}
_ARRAYS: dict[tuple, object] = {}
#: run ids cancelled in this process: their blocks stop at the next network pass
CANCELLED: set[str] = set()


class ModelPayload:
    """The model as a graph node: in this process the model itself; pickled, its checkpoint,
    rebuilt once per worker process as a :class:`~.model.TrainedModel` (cached by weights
    checksum), not once per block."""

    def __init__(self, model):
        self.model = model
        self.ckpt = model.to_checkpoint()
        self.sha = self.ckpt["weights_sha256"]

    def __getstate__(self):
        return {"model": None, "ckpt": self.ckpt, "sha": self.sha}

    def get(self):
        if self.model is None:
            with _LOCK:
                if self.sha not in _MODELS:
                    _MODELS[self.sha] = TrainedModel.from_checkpoint(self.ckpt)
                self.model = _MODELS[self.sha]
        return self.model


@dataclass
class Job:
    """One input and its output, as the tasks need it (pickled once per worker)."""

    id: str
    run: str
    source: Source
    layout: Layout
    out: str
    out_axes: str
    plan: BlockPlan
    output: str
    views: int
    dtype: str
    device: str
    todo: list
    skipped: int = 0
    threads: object = None
    client_pid: int = 0
    norm: object = None  # a Normalization fitted on this input (normalize="image"), else None


def _set_threads(job: Job) -> None:
    t = job.threads
    if t is None or os.getpid() == job.client_pid:
        return
    if isinstance(t, dict):
        from distributed import get_worker

        t = t.get(get_worker().address)
    if t:
        import torch

        if torch.get_num_threads() != int(t):
            torch.set_num_threads(int(t))


def _level0(job: Job):
    key = (job.run, job.id)  # never a path: a folder replaced between runs has other chunks
    with _LOCK:
        if key not in _ARRAYS:
            zarr = require("zarr")
            _ARRAYS[key] = zarr.open_group(job.out, mode="r+")["0"]
        return _ARRAYS[key]


def denoise_block(model, job: Job, block) -> np.ndarray:
    """The denoised ``block`` (frames, C, rows, columns) in the output dtype: the one loop of
    the in-memory path (:func:`~.predict.denoise_frames`) on the block's frames and region,
    one network pass at a time per process; a cancel stops it at its next pass."""
    from ..device import resolve_device

    plan = job.plan
    if job.norm is not None:
        model = model.with_normalization(job.norm)
    ry0, ry1, rx0, rx1 = read = plan.read_region(block)
    reader = FrameReader(job.source, job.layout)
    rows = model.context_rows(job.layout)
    if rows is None:
        raw = reader.read(block.f0, block.f1, ry0, ry1, rx0, rx1)
    else:  # stack context: the block's frames and their neighbours, read as they are needed
        raw, rows = reader, rows[block.f0:block.f1]
    out = np.empty((block.f1 - block.f0, job.layout.n_channels, block.y1 - block.y0,
                    block.x1 - block.x0), output_float(job.dtype))
    # the tile plan is the output's (its chunks record it): only the batch may shrink
    passes = denoise_frames(model, raw, out, job.output, resolve_device(job.device), plan.tile,
                            plan.overlap, plan.batch, job.views, (plan.h, plan.w),
                            (block.y0, block.y1, block.x0, block.x1), (ry0, rx0),
                            shrink_tile=False, rows=rows, read_region=read)
    try:
        while True:
            if job.run in CANCELLED:
                raise Cancelled("cancelled")
            with _COMPUTE:
                next(passes)
    except StopIteration:
        pass
    finally:
        passes.close()
    return cast_output(out, job.dtype)


def run_block(payload: ModelPayload, job: Job, index: int) -> int:
    """The task: denoise block ``index`` of ``job`` and write its chunks; returns its pixels."""
    if job.run in CANCELLED:
        raise Cancelled("cancelled")
    bound_heap()  # freed tensors' memory goes back: the budget holds over a long run
    _set_threads(job)
    block = job.plan.block(index)
    data = denoise_block(payload.get(), job, block)
    omezarr.write_block(_level0(job), job.layout, job.out_axes, block, data)
    return block.pixels




def forget_run(run_id: str) -> None:
    """Drop what this process keeps of a finished or cancelled run."""
    CANCELLED.discard(run_id)
    with _LOCK:
        for key in [k for k in _ARRAYS if k[0] == run_id]:
            del _ARRAYS[key]
