"""``napari-b2u denoise BIG... --out NAME.ome.zarr | --outdir DIR [--workers N | --scheduler
ADDRESS]``: every input denoised into OME-Zarr block by block, all of them as one dask graph
(:class:`~napari_b2u.denoise.to_zarr.ZarrRun`)."""

from __future__ import annotations

import sys

from .errors import InputError


def denoise_to_zarr(a) -> int:
    from . import api
    from .denoise.cluster import client_for
    from .denoise.to_zarr import output_for
    from .io.sources import is_zarr_path

    if a.outdir:
        if a.out:
            raise InputError("give --out (one input) or --outdir (any number), not both")
        outs = [output_for(p, a.outdir) for p in a.input]
    elif len(a.input) > 1:
        raise InputError(f"{len(a.input)} inputs: give --outdir DIR (each is written to "
                         "DIR/<name>_denoised.ome.zarr)")
    else:
        outs = [a.out]
    for out in outs:
        if not is_zarr_path(out):
            raise InputError(f"{out}: an OME-Zarr output is a folder named NAME.ome.zarr")
    model = api.load(a.model)
    with client_for(a.scheduler, a.workers) as client:  # reach the cluster before any output
        return _run(a, model, outs, client)


def _run(a, model, outs, client) -> int:
    from .denoise.to_zarr import ZarrRun, run_with_bar

    run = ZarrRun(model, [(p, out, a.axes) for p, out in zip(a.input, outs)],
                  output=a.output, dtype=a.dtype, device=a.device, tile_size=a.tile_size,
                  tta=a.tta, overwrite=a.overwrite, name_model=a.model,
                  normalize=a.normalize)
    for job in run.jobs:
        note = f" (axes reordered to {job.out_axes} for OME-Zarr)" if (
            job.out_axes != job.layout.axes) else ""
        done = f", {job.skipped} already done: resuming" if job.skipped else ""
        print(f"{job.source.name} -> {job.out}: {len(job.todo)} block(s){done}{note}")
    where = (f"the dask scheduler at {a.scheduler}" if a.scheduler else
             f"a local cluster of {a.workers} worker(s)" if a.workers else "this process")
    if not a.quiet:
        print(f"denoising {run.total} block(s) on {where}")
    try:
        results = run_with_bar(run, client, None, progress=not a.quiet, say=print)
    except KeyboardInterrupt:
        print("napari-b2u: interrupted; finished chunks are kept: run the same command again "
              "to resume", file=sys.stderr)
        raise
    for r in results:
        shape = "x".join(str(v) for v in r.shape)
        print(f"wrote {r.path} ({shape} {r.axes}, {r.dtype}, {r.levels} level(s); "
              f"{r.blocks} block(s) denoised, {r.skipped} resumed) in {r.seconds:.1f} s")
    return 0
