"""Where out-of-core denoising runs: in this process (dask's threads), on a dask.distributed
cluster that already exists (``--scheduler ADDRESS``), or on a local cluster started for the
run (``--workers N``): one worker per CUDA GPU when there are GPUs (dask-cuda's
``LocalCUDACluster`` when it is installed, else one worker per GPU, each seeing only its own
through ``CUDA_VISIBLE_DEVICES``), else N CPU workers sharing the cores. Each worker process
holds one copy of the model, built at its first block
(:class:`~napari_b2u.denoise.zarr_tasks.ModelPayload`).
"""

from __future__ import annotations

import contextlib
import os
import warnings

from ..io.sources import require

#: threads per worker: one computes (the network runs under a lock), one reads and writes
WORKER_THREADS = 2


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use (ids as CUDA_VISIBLE_DEVICES names them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA is no GPU
        n = 0
    if n == 0:
        return []
    if env:
        ids = [d.strip() for d in env.split(",") if d.strip()]
        return ids[:n]
    return [str(i) for i in range(n)]


def _dashboard() -> str | None:
    """Where the dashboard listens: the usual port when bokeh is installed, else none."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    return ":8787"


def local_cluster(workers: int | None = None, processes: bool = True):
    """A local dask cluster: one worker per GPU (``workers`` at most), or ``workers`` CPU
    workers. ``processes=False`` keeps the workers in this process (tests), on a GPU machine
    too: they share this process's devices."""
    distributed = require("distributed", "--workers (a local dask cluster)")
    gpus = visible_gpus() if processes else []
    dashboard = _dashboard() if processes else None
    if gpus:
        n = min(workers or len(gpus), len(gpus))
        if workers and workers > len(gpus):
            warnings.warn(f"{workers} workers asked for, {len(gpus)} GPU(s) found: one worker "
                          "per GPU", stacklevel=2)
        try:
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus[:n]),
                                    threads_per_worker=WORKER_THREADS,
                                    dashboard_address=dashboard)
        except ImportError:
            pass
        spec = {f"gpu-{g}": {"cls": distributed.Nanny, "options": {
            "nthreads": WORKER_THREADS, "env": {"CUDA_VISIBLE_DEVICES": g}}} for g in gpus[:n]}
        scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": dashboard}}
        return distributed.SpecCluster(workers=spec, scheduler=scheduler)
    return distributed.LocalCluster(n_workers=max(1, int(workers or 1)),
                                    threads_per_worker=WORKER_THREADS, processes=processes,
                                    dashboard_address=dashboard)


@contextlib.contextmanager
def client_for(scheduler=None, workers: int | None = None, processes: bool = True):
    """A dask.distributed Client for the run (None: this process's threads). ``scheduler``: an
    address (tcp://host:8786), a Client, or None; ``workers``: start a local cluster."""
    if scheduler is None and not workers:
        yield None
        return
    distributed = require("distributed", "--scheduler / --workers (dask.distributed)")
    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # a Client the caller owns
        return
    cluster = None
    try:
        if isinstance(scheduler, str):
            try:
                import dask

                wait = dask.config.get("distributed.comm.timeouts.connect")
                client = distributed.Client(scheduler, set_as_default=False, timeout=wait)
            except OSError as exc:
                from ..errors import InputError

                raise InputError(f"could not reach the dask scheduler at {scheduler} ({exc}); "
                                 "check the address (e.g. tcp://host:8786) and that it "
                                 "runs") from exc
        else:
            cluster = local_cluster(workers, processes)
            client = distributed.Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def torch_threads(client, local: bool):
    """Torch threads per worker: the cores of its machine shared among the workers on it
    (dask starts workers with OMP_NUM_THREADS=1, which would leave torch one thread). An int
    for this process's or a local cluster's workers, {worker address: threads} for a remote
    cluster, None to leave torch as it is (in-process threads)."""
    if client is None:
        return None
    info = client.scheduler_info(n_workers=-1)["workers"] if _has_n_workers(client) else \
        client.scheduler_info()["workers"]
    if local:
        return max(1, (os.cpu_count() or 1) // max(1, len(info)))
    cores = client.run(os.cpu_count)
    per_host: dict[str, int] = {}
    for w in info.values():
        per_host[w.get("host")] = per_host.get(w.get("host"), 0) + 1
    return {addr: max(1, (cores.get(addr) or 1) // per_host.get(w.get("host"), 1))
            for addr, w in info.items()}


def _has_n_workers(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def dashboard_link(client) -> str | None:
    if client is None:
        return None
    try:
        return client.dashboard_link if _dashboard() else None
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
