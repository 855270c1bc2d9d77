"""Out-of-core and distributed denoising into OME-Zarr, on dask.

:class:`ZarrRun` turns one or several lazy inputs (zarr / OME-Zarr, big TIFF, dask arrays) and
their output folders into one dask graph: a node holding the model, a node per input, and a
task per :class:`~.tiling.Block` (:mod:`.zarr_tasks`) that reads the block's input (with the
overlap its tiles need), denoises it with the loop of :meth:`~.denoiser.Denoiser.denoise`
(same tiles, batches and blending) and writes its output chunks at once. Memory per task is one
block; a rerun skips every block whose chunks are on disk; the pyramid and the OME-Zarr
metadata come last (:mod:`.omezarr`). The graph runs on dask's threads in this process, or on a
dask.distributed cluster (:mod:`.cluster`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import check_output_dtype
from ..device import resolve_device
from ..errors import B2UError, Cancelled, InputError, OutputError
from ..io.files import check_distinct, reason
from ..io.frames import FrameReader, source_layout
from ..io.sources import ArraySource, Source, open_source, require, source_fingerprint
from . import omezarr
from .domain import normalization_for
from .memplan import pass_bytes, plan_blocks_budget
from .predict import TILE_OVERLAP
from .tiling import plan_blocks
from .zarr_tasks import CANCELLED, Job, ModelPayload, forget_run, run_block

#: the most pixels (frames × channels × Y × X) one block holds: whole frames when they fit
BLOCK_PIXELS = 2**24
#: dask threads in this process: one block computes while the next is read / the last written
#: (fewer when the memory budget holds one block only: :mod:`.memplan`)
LOCAL_THREADS = 2


@dataclass
class ZarrResult:
    """What :func:`denoise_to_zarr` wrote."""

    path: Path
    axes: str
    shape: tuple
    dtype: str
    levels: int
    blocks: int  # denoised by this run
    skipped: int  # already on disk (resumed)
    seconds: float

    def open(self):
        """The pyramid as lazy dask arrays (full resolution first), for napari."""
        return omezarr.open_levels(self.path)[0]


#: errno values of a write that failed for lack of room or permission (a read never gives these)
_WRITE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def _writing(outs):
    """An OSError while writing ``outs`` (a full or read-only disk) becomes one OutputError
    saying what to do; errors of reading the inputs pass through."""
    try:
        yield
    except OSError as exc:
        name = str(getattr(exc, "filename", None) or "")
        ours = [o for o in outs if name.startswith(str(o)) or
                name.startswith(str(Path(o).resolve()))]
        if isinstance(exc, B2UError) or not (ours or exc.errno in _WRITE_ERRNOS):
            raise
        where = ", ".join(map(str, ours or outs))
        raise OutputError(
            f"could not write the OME-Zarr output {where}: {reason(exc)}; free some space "
            "or choose a folder you can write to, then run the same command again (finished "
            "chunks are kept)") from exc


def _as_source(obj) -> Source:
    src = open_source(obj)
    if src is not None:
        return src
    if isinstance(obj, (str, os.PathLike)):
        raise InputError(f"{obj}: out-of-core denoising reads zarr / OME-Zarr folders and TIFF "
                         "files; convert other formats to OME-TIFF or OME-Zarr first")
    if not hasattr(obj, "shape") or not hasattr(obj, "dtype"):
        obj = np.asarray(obj)
    return ArraySource(obj, "array")


def _stem(path) -> str:
    name = Path(str(path).rstrip("/")).name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_for(path, outdir) -> Path:
    """``outdir/<name>_denoised.ome.zarr`` for an input ``path``."""
    return Path(outdir) / f"{_stem(path)}_denoised.ome.zarr"


class ZarrRun:
    """Denoise ``items`` — (input, output folder, axes or None) — into OME-Zarr, as one graph.
    Everything is checked, and the outputs created or resumed, when this is built; :meth:`run`
    computes. Options as :meth:`~.denoiser.Denoiser.denoise`."""

    def __init__(self, model, items, output=None, dtype=None, device="auto", batch_size=None,
                 tile_size=None, tile_overlap=None, tta="auto", overwrite=False,
                 chunk=omezarr.CHUNK, block_pixels=BLOCK_PIXELS, name_model=None,
                 normalize="model"):
        require("zarr")
        require("dask")
        self.model, self.run_id = model, uuid.uuid4().hex
        self.payload = ModelPayload(model)
        overlap = TILE_OVERLAP if tile_overlap is None else int(tile_overlap)
        output = model.method.check_output(output)
        dev = resolve_device(device)
        check_distinct({f"output {k + 1}": it[1] for k, it in enumerate(items)})
        sources = [_as_source(obj) for obj, _, _ in items]
        # every output is checked against every input of the run: with --outdir, one input
        # may be the output folder of another
        inputs = [getattr(s, "path", None) for s in sources] + [name_model]
        prepared = []
        #: blocks computed at once in this process, and what the plan chose (said at run())
        self.in_flight, self.notes = LOCAL_THREADS, []
        for k, (src, (_, out, axes)) in enumerate(zip(sources, items)):
            layout = source_layout(src, axes)
            model.check_stack(layout.shape, layout.axes)
            norm = normalization_for(model, FrameReader(src, layout), normalize)
            out_dtype = check_output_dtype(dtype) if dtype is not None else src.dtype
            n, c, h, w = shape = (layout.n_frames, layout.n_channels) + layout.frame_shape
            tile, batch, views = model.plan(shape, output, dev, batch_size, tile_size, tta)
            out_axes = omezarr.ngff_axes(layout.axes)
            omezarr.check_axes(out_axes, src)  # not after the work, in finish()
            th, tw = min(tile, h), min(tile, w)
            blocks = plan_blocks_budget(block_pixels, th * tw, batch, batch * c * th * tw,
                                        pass_bytes(model, output, dev), model.method.window,
                                        src.dtype, out_dtype)
            self.in_flight = min(self.in_flight, blocks.in_flight)
            plan = plan_blocks(n, c, h, w, tile, overlap, batch, (min(chunk, h), min(chunk, w)),
                               blocks.pixels, FrameReader(src, layout).inner_chunk)
            self.notes.append(blocks.describe(tile, batch))
            identity = {
                "version": 1, "model_sha256": self.payload.sha, "method": model.method_name,
                "output": output, "dtype": out_dtype.name, "tile": tile, "overlap": overlap,
                "batch": batch, "views": views, "axes": layout.axes, "out_axes": out_axes,
                "chunk": [plan.chunk_y, plan.chunk_x], "source": src.name,
                "source_shape": list(src.shape), "source_dtype": src.dtype.name,
                "source_fingerprint": source_fingerprint(src, layout.axes)}
            if name_model:
                identity["model"] = str(name_model)
            if norm is not model.normalization:  # scaled on its own: part of what was written
                identity["normalize"] = norm.to_dict()
            action = omezarr.check_output_folder(out, inputs, overwrite, identity)
            prepared.append((k, src, layout, str(out), out_axes, plan, out_dtype, identity,
                             action, None if norm is model.normalization else norm))
        self.jobs: list[Job] = []
        for k, src, layout, out, out_axes, plan, out_dtype, identity, action, norm in prepared:
            shape_out = tuple(layout.shape[layout.axes.index(a)] for a in out_axes)
            with _writing([out]):
                group = omezarr.create_output(out, action, identity, shape_out, out_dtype,
                                              out_axes, chunk)
            todo = list(range(plan.n_blocks))
            if action == "resume":
                arr = group["0"]
                todo = [b for b in todo if not omezarr.block_done(
                    out, arr, layout, out_axes, plan.block(b))]
            self.jobs.append(Job(f"{k}-{self.run_id[:8]}", self.run_id, src, layout, out,
                                 out_axes, plan, output, identity["views"], out_dtype.name,
                                 str(device), todo, plan.n_blocks - len(todo),
                                 client_pid=os.getpid(), norm=norm))
        self.total = sum(len(j.todo) for j in self.jobs)
        self._futures = None

    def graph(self) -> list:
        """The dask tasks: one per block still to do (the model and each job one node)."""
        dask = require("dask")
        payload = dask.delayed(self.payload, name=f"b2u-model-{self.payload.sha[:16]}",
                               traverse=False)
        tasks = []
        for job in self.jobs:
            node = dask.delayed(job, name=f"b2u-job-{job.id}", traverse=False)
            task = dask.delayed(run_block, pure=False)
            tasks += [task(payload, node, b, dask_key_name=f"b2u-block-{job.id}-{b}")
                      for b in job.todo]
        return tasks

    def cancel(self) -> None:
        """Stop: blocks not started are dropped, running ones stop at their next tile (in this
        process; a cluster's running blocks finish). Finished chunks stay: a rerun resumes."""
        CANCELLED.add(self.run_id)
        if self._futures is not None:
            client, futures = self._futures
            client.cancel(futures)

    def run(self, scheduler=None, workers=None, progress=None, processes=True, say=None
            ) -> list[ZarrResult]:
        """Compute every block, then the pyramids and metadata. ``progress(done, total)`` after
        each block; ``say(text)`` for notes (the dashboard link)."""
        from . import cluster

        t0 = time.perf_counter()
        if say:
            for note in dict.fromkeys(self.notes):
                say(note)
        try:
            with _writing([j.out for j in self.jobs]), \
                    cluster.client_for(scheduler, workers, processes) as client:
                if client is not None:
                    local = workers is not None and not processes
                    threads = None if local else cluster.torch_threads(client, workers is not None)
                    for job in self.jobs:
                        job.threads = threads
                    link = cluster.dashboard_link(client)
                    if say and link:
                        say(f"dask dashboard: {link}")
                tasks = self.graph()
                if tasks:
                    if client is None:
                        self._run_local(tasks, progress)
                    else:
                        self._run_cluster(client, tasks, progress)
                for job in self.jobs:
                    omezarr.build_pyramid(job.out, scheduler=client if client else "threads")
                    omezarr.finish(job.out, job.source)
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            forget_run(self.run_id)
        seconds = time.perf_counter() - t0
        results = []
        for job in self.jobs:
            levels = omezarr.open_levels(job.out)[0]
            results.append(ZarrResult(Path(job.out), job.out_axes, tuple(levels[0].shape),
                                      job.dtype, len(levels), len(job.todo), job.skipped,
                                      seconds))
        return results

    def _run_local(self, tasks, progress) -> None:
        dask = require("dask")
        from dask.callbacks import Callback

        total, done = self.total, [0]

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, id):
                if isinstance(key, str) and key.startswith("b2u-block-"):
                    done[0] += 1
                    if progress is not None:
                        progress(done[0], total)

        pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="napari-b2u")
        try:
            with _Progress():
                dask.compute(*tasks, scheduler="threads", pool=pool)
        except BaseException:
            CANCELLED.add(self.run_id)  # the blocks still running stop at their next tile
            raise
        finally:
            pool.shutdown(wait=True)  # nothing runs on after this returns or raises
        if self.run_id in CANCELLED:
            raise Cancelled("cancelled")

    def _run_cluster(self, client, tasks, progress) -> None:
        from distributed import as_completed

        futures = client.compute(tasks)
        self._futures = (client, futures)
        try:
            for k, fut in enumerate(as_completed(futures, loop=client.loop), 1):
                if self.run_id in CANCELLED:
                    break
                fut.result()  # a task's error ends the run here
                if progress is not None:
                    progress(k, self.total)
        except Exception:
            client.cancel(futures)
            if self.run_id in CANCELLED:  # the futures were cancelled: that is no error
                raise Cancelled("cancelled") from None
            raise
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            self._futures = None
        if self.run_id in CANCELLED:
            client.cancel(futures)
            raise Cancelled("cancelled")


def denoise_to_zarr_iter(model, src, out, axes=None, scheduler=None, workers=None,
                         processes=True, **options):
    """Generator form of :func:`denoise_to_zarr`: yields ``(blocks_done, n_blocks)`` after each
    block and at least every 0.25 s, and returns the :class:`ZarrResult`; closing it cancels
    (the running block stops at its next tile; finished chunks are kept)."""
    run = ZarrRun(model, [(src, out, axes)], **options)
    events: queue.Queue = queue.Queue()

    def work():
        try:
            res = run.run(scheduler, workers, lambda d, t: events.put(("progress", (d, t))),
                          processes)
            events.put(("done", res[0]))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            events.put(("error", exc))

    thread = threading.Thread(target=work, name="napari-b2u zarr", daemon=True)
    last = (0, run.total)
    yield last
    thread.start()
    try:
        while True:
            try:
                kind, value = events.get(timeout=0.25)
            except queue.Empty:  # no news: yield anyway, so that a consumer can cancel
                yield last
                continue
            if kind == "progress":
                last = value
                yield value
            elif kind == "done":
                return value
            else:
                raise value
    finally:
        if thread.is_alive():
            run.cancel()
            thread.join()


def denoise_to_zarr(model, src, out, axes=None, progress: bool = False, scheduler=None,
                    workers=None, processes=True, **options) -> ZarrResult:
    """Denoise ``src`` (see :meth:`~.denoiser.Denoiser.denoise_to_zarr`)."""
    from .cluster import client_for

    with client_for(scheduler, workers, processes) as client:  # connect before any output
        run = ZarrRun(model, [(src, out, axes)], **options)
        return run_with_bar(run, client, None, progress, processes)[0]


def run_with_bar(run: ZarrRun, scheduler=None, workers=None, progress=True, processes=True,
                 say=None) -> list[ZarrResult]:
    """:meth:`ZarrRun.run` with a tqdm bar over the blocks."""
    if not progress:
        return run.run(scheduler, workers, None, processes, say)
    from tqdm.auto import tqdm

    bar = tqdm(total=run.total, desc="denoise", unit="block")

    def update(done, total):
        bar.n = done
        bar.refresh()

    try:
        return run.run(scheduler, workers, update, processes, say or bar.write)
    finally:
        bar.close()
