"""Beyond one machine's memory (issue 15): peak memory and throughput of out-of-core denoising
to OME-Zarr, against the in-memory path; local workers; equality of the two paths.

    python benchmarks/scale.py make --out /data/scale --gb 8     # synthetic uint16 OME-Zarr
    python benchmarks/scale.py memory --input /data/scale/in.ome.zarr --net gauss --budget 2GB \
        --minutes 13 [--resume]                                   # sessions of <= 15 min
    python benchmarks/scale.py throughput --frames 12 --size 1024 --net default
    python benchmarks/scale.py scaling --frames 12 --size 1024 --net default --workers 1 2
    python benchmarks/scale.py equality
    python benchmarks/scale.py budget --frames 4 --size 4096 --budgets 512MB,1GB,2GB --train 60

``--net``: ``default`` (the CPU preset U-Net), ``tiny`` (U-Net 4 wide, 2 levels) or ``gauss``
(the built-in Gaussian-filter model with σ = 1: a stand-in "network" that costs little, so
that the data path — reading, normalizing, tiling, writing — is what is measured on inputs far
larger than memory). Memory is the resident set of the process running the denoising plus its
children (dask workers), sampled every 0.1 s (psutil), and the kernel's own peak (ru_maxrss).
Every table row is printed as markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _model(net: str):
    import torch

    from napari_b2u import api
    from napari_b2u.data import Normalization
    from napari_b2u.denoise.denoiser import Denoiser

    if net == "gauss":
        return Denoiser("gauss", {}, {"arch": "gauss", "channels": 1},
                        {"sigma": torch.tensor([1.0])}, Normalization([100.0], [1000.0]))
    noisy = _frames(4, 64)  # the inputs' kind of data (uint16): the model's range fits them
    kw = dict(steps=1, seed=0, device="cpu", progress=False, compile=False, floor="none",
              warm_start="none", patch_size=32, batch_size=2, context=0)
    if net == "tiny":
        kw.update(width=4, depth=2)
    return api.train_stack(noisy, **kw)


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint16: a smooth scene with Poisson–Gaussian noise (a bank of 8 noisy
    frames, shifted, so that making gigabytes stays quick)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    scene = 200 + 1500 * (np.sin(9 * xx) * np.cos(7 * yy)) ** 2
    bank = [rng.poisson(scene).astype(np.float64) + rng.normal(100, 5, scene.shape)
            for _ in range(min(n, 8))]
    return np.stack([np.roll(bank[i % len(bank)], i // len(bank), axis=1)
                     for i in range(n)]).astype(np.uint16)


def write_input(path, n: int, size: int, chunk: int = 1024) -> Path:
    """A uint16 OME-Zarr (TYX) of n frames of size², written chunk by chunk (dask)."""
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image

    bank = _frames(min(n, 8), size)

    def frame(block_info=None):
        (i, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        full = np.roll(bank[i % len(bank)], i // len(bank), axis=1)
        return full[None, y0:y1, x0:x1]

    chunk = min(chunk, size)
    frames = da.map_blocks(frame, chunks=da.core.normalize_chunks((1, chunk, chunk),
                                                                   (n, size, size)),
                           dtype=np.uint16)
    group = zarr.open_group(str(path), mode="w")
    write_image(frames, group, axes="tyx", scale_factors=(), scale={"t": 1.0, "y": 0.1, "x": 0.1},
                axes_units={"y": "micrometer", "x": "micrometer"},
                storage_options={"chunks": (1, chunk, chunk)})
    return Path(path)


def _level0(path):
    """The full-resolution zarr array of an OME-Zarr image."""
    from napari_b2u.io.sources import ZarrSource

    return ZarrSource(str(path))._array()


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    import psutil
    import torch

    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, load "
            f"{os.getloadavg()[0]:.1f}")


class PeakRSS:
    """The peak of the summed RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.1):
        import psutil

        self.proc, self.every, self.peak = psutil.Process(pid), every, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def _vm_hwm() -> int | None:
    """This process's peak resident set (VmHWM) in bytes: the kernel's own high-water mark of
    this program's memory. (ru_maxrss is not it for a child: Linux carries the forking
    parent's mark over exec — a benchmark parent that had just written a gigabyte of input
    made every child read ≥ 3.6 GB.)"""
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return None


# ---- the child: one measured run -------------------------------------------------------------
def child(args) -> None:
    """Run one denoising in this (fresh) process; print a JSON line with the numbers."""
    spec = json.loads(args.spec)
    if spec.get("budget"):
        os.environ["NAPARI_B2U_MEMORY_BUDGET"] = spec["budget"]
    model = _model(spec["net"])
    if spec.get("baseline"):  # the process before any data: interpreter, torch, dask, model
        import dask.array  # noqa: F401
        import psutil
        import zarr  # noqa: F401

        from napari_b2u.denoise import to_zarr  # noqa: F401

        model.denoise(np.zeros((64, 64), np.uint16), tta=False)  # torch's kernels loaded
        spec["baseline_rss"] = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if spec["mode"] == "train":
        from napari_b2u import api

        trained = api.train_stack(spec["input"], max_time=spec["seconds_train"], device="cpu",
                                  progress=False)
        spec["steps"] = trained.info["steps"]
        spec["split"] = trained.info.get("split")
        px = 0
    elif spec["mode"] == "zarr":
        from napari_b2u.denoise.to_zarr import ZarrRun
        from napari_b2u.errors import Cancelled

        run = ZarrRun(model, [(spec["input"], spec["out"], None)], device="cpu", tta=False)
        spec["plan"] = run.notes
        job = run.jobs[0]
        spec["blocks_before"], spec["blocks_total"] = job.skipped, job.plan.n_blocks
        deadline = t0 + 60 * spec["minutes"] if spec.get("minutes") else None
        done = [0]

        def progress(d, total):
            done[0] = d
            if deadline is not None and time.perf_counter() > deadline:
                run.cancel()  # a session ends here; the next one resumes

        try:
            run.run(workers=spec.get("workers"), progress=progress)
            spec["complete"] = True
        except Cancelled:
            spec["complete"] = False
        spec["blocks_done"] = done[0]
        frame = job.plan.c * job.plan.h * job.plan.w
        px = sum(job.plan.block(b).f1 - job.plan.block(b).f0 for b in job.todo[:done[0]]) * frame
    else:
        arr = _level0(spec["input"])[:]
        t1 = time.perf_counter()
        out = model.denoise(arr, device="cpu", tta=False)
        spec["compute_s"] = time.perf_counter() - t1
        px = out.size
    spec["seconds"] = time.perf_counter() - t0
    spec["pixels"] = px
    spec["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    spec["hwm"] = _vm_hwm()
    print("RESULT " + json.dumps(spec), flush=True)


def measure(spec: dict) -> dict:
    """Run ``spec`` in a child process; its numbers plus the sampled peak RSS of its tree."""
    cmd = [sys.executable, __file__, "_child", "--spec", json.dumps(spec)]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = PeakRSS(proc.pid)
    out, err = proc.communicate()
    tree = peak.stop()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(lines[-1][7:])
    res["tree_peak"] = tree
    return res


@contextlib.contextmanager
def workdir():
    """A scratch folder, removed afterwards whatever happens."""
    work = Path(tempfile.mkdtemp(prefix="b2u-scale-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _gib(b) -> str:
    return f"{b / 2**30:.2f}"


# ---- the measurements --------------------------------------------------------------------------
def cmd_make(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(args.gb * 2**30 / (2 * args.size ** 2))))
    t = time.perf_counter()
    p = write_input(out / "in.ome.zarr", n, args.size)
    print(f"wrote {p}: {n} x {args.size} x {args.size} uint16 = "
          f"{_gib(n * args.size ** 2 * 2)} GiB in {time.perf_counter() - t:.0f} s")


def cmd_memory(args) -> None:
    arr = _level0(args.input)
    size = int(np.prod(arr.shape)) * arr.dtype.itemsize
    out = Path(args.scratch or tempfile.mkdtemp(prefix="b2u-scale-")) / "out.ome.zarr"
    if not args.resume:
        shutil.rmtree(out, ignore_errors=True)
    print(f"# memory: {machine()}")
    print("| input | input GiB | budget | net | workers | blocks (before → after / all) | "
          "peak RSS GiB (tree, sampled) | peak RSS GiB (ru_maxrss) | seconds | Mpx/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    r = measure({"mode": "zarr", "input": args.input, "out": str(out), "net": args.net,
                 "budget": args.budget, "workers": args.workers, "minutes": args.minutes})
    after = r["blocks_before"] + r["blocks_done"]
    print(f"| {tuple(arr.shape)} {arr.dtype} | {_gib(size)} | {args.budget} | {args.net} | "
          f"{args.workers or 'in-process'} | {r['blocks_before']} → {after} / "
          f"{r['blocks_total']}{'' if r['complete'] else ' (session ended: resume)'} | "
          f"{_gib(r['tree_peak'])} | {_gib(r['maxrss'])} | {r['seconds']:.0f} | "
          f"{r['pixels'] / r['seconds'] / 1e6:.2f} |", flush=True)
    if r["complete"] and not args.keep:
        shutil.rmtree(out, ignore_errors=True)


def cmd_budget(args) -> None:
    """Peak RSS against the memory budget (issue 33): out-of-core denoising of a stack of
    ``--frames`` × ``--size``² uint16 frames (and ``--train`` seconds of training on a stack
    of ``--train-frames``, larger than the budget) at each budget, each in a fresh process,
    against the goal peak ≤ baseline + 1.1 × budget, the baseline being the same process
    before any data (interpreter, torch, dask, the model and torch's kernels after a 64²
    pass)."""
    with workdir() as work:
        src = write_input(work / "in.ome.zarr", args.frames, args.size)
        big = (write_input(work / "train.ome.zarr", args.train_frames, args.size)
               if args.train else None)
        gib = args.frames * args.size**2 * 2 / 2**30
        print(f"# budget: {machine()}")
        print(f"input {args.frames} x {args.size} x {args.size} uint16 OME-Zarr ({gib:.2f} GiB), "
              f"net {args.net}, ensembling off")
        print("| run | budget | plan | baseline MB | peak RSS MB (VmHWM) | peak − baseline MB | "
              "goal: ≤ baseline + 1.1 × budget | seconds |")
        print("|---|---|---|---|---|---|---|---|")
        from napari_b2u.io.memory import parse_size

        modes = ["zarr"] + (["train"] if args.train else [])
        for mode in modes:
            for budget in args.budgets.split(","):
                out = work / "out.ome.zarr"
                spec = {"mode": mode, "input": str(src if mode == "zarr" else big),
                        "out": str(out), "net": args.net,
                        "budget": budget, "baseline": True, "seconds_train": args.train}
                r = measure(spec)
                shutil.rmtree(out, ignore_errors=True)
                base, peak = r["baseline_rss"], max(r["tree_peak"], r["hwm"] or 0)
                goal = base + 1.1 * parse_size(budget)
                plan = "; ".join(r.get("plan") or []) or (
                    f"{r.get('steps')} steps; {r.get('split')}" if mode == "train" else "")
                name = ("denoise to OME-Zarr" if mode == "zarr" else
                        f"train {args.train:.0f} s on {args.train_frames} frames "
                        f"({args.train_frames * args.size**2 * 2 / 2**30:.2f} GiB)")
                print(f"| {name} | {budget} | {plan} | {base / 2**20:.0f} | "
                      f"{peak / 2**20:.0f} | {(peak - base) / 2**20:.0f} | "
                      f"{'met' if peak <= goal else 'NOT met'} ({goal / 2**20:.0f}) | "
                      f"{r['seconds']:.0f} |", flush=True)


def cmd_throughput(args) -> None:
    with workdir() as work:
        src = write_input(work / "in.ome.zarr", args.frames, args.size)
        print(f"# throughput: {machine()}")
        print(f"input {args.frames} x {args.size} x {args.size} uint16 OME-Zarr, net {args.net}, "
              f"{args.repeats} alternating repeats, each in a fresh process")
        print("| path | seconds | Mpx/s | of in-memory compute | peak RSS GiB |")
        print("|---|---|---|---|---|")
        rows = {"memory": [], "zarr": []}
        for k in range(args.repeats):
            for mode in ("memory", "zarr"):
                out = work / f"out{k}.ome.zarr"
                rows[mode].append(measure({"mode": mode, "input": str(src), "out": str(out),
                                           "net": args.net}))
                shutil.rmtree(out, ignore_errors=True)
        px = rows["memory"][0]["pixels"]
        best_compute = min(r["compute_s"] for r in rows["memory"])
        mem_rss = max(r["tree_peak"] for r in rows["memory"])
        for name, secs, rss in (
                ("in memory: denoise() of an array in RAM", best_compute, mem_rss),
                ("in memory: read whole + denoise()", min(r["seconds"] for r in rows["memory"]),
                 mem_rss),
                ("out-of-core: denoise_to_zarr (read, denoise, write, pyramid)",
                 min(r["seconds"] for r in rows["zarr"]),
                 max(r["tree_peak"] for r in rows["zarr"]))):
            print(f"| {name} | {secs:.1f} | {px / secs / 1e6:.3f} | "
                  f"{100 * best_compute / secs:.0f} % | {_gib(rss)} |")
        print("all runs (s): memory " + ", ".join(f"{r['seconds']:.1f} (compute "
                                                   f"{r['compute_s']:.1f})" for r in rows["memory"])
              + "; zarr " + ", ".join(f"{r['seconds']:.1f}" for r in rows["zarr"]))


def cmd_scaling(args) -> None:
    with workdir() as work:
        src = write_input(work / "in.ome.zarr", args.frames, args.size)
        print(f"# scaling: {machine()}")
        print(f"input {args.frames} x {args.size} x {args.size} uint16 OME-Zarr, net {args.net}")
        print("| scheduler | seconds (incl. cluster start) | Mpx/s | peak RSS GiB (tree) |")
        print("|---|---|---|---|")
        for w in [None] + list(args.workers):
            out = work / f"out{w}.ome.zarr"
            r = measure({"mode": "zarr", "input": str(src), "out": str(out), "net": args.net,
                         "workers": w})
            name = "this process (dask threads)" if w is None else f"LocalCluster, {w} worker(s)"
            print(f"| {name} | {r['seconds']:.1f} | {r['pixels'] / r['seconds'] / 1e6:.3f} | "
                  f"{_gib(r['tree_peak'])} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)


def cmd_equality(args) -> None:
    with workdir() as work:
        src = write_input(work / "in.ome.zarr", args.frames, args.size, chunk=256)
        model = _model(args.net)
        x = _level0(src)[:]
        print("| net | input | block plan | identical | max abs diff |")
        print("|---|---|---|---|---|")
        for label, kw in (("whole frames", {}), ("frames split in 256-px squares",
                                                  {"block_pixels": 2 * 256 * 256, "chunk": 256})):
            for dtype in (None, "float32"):
                ref = model.denoise(x, device="cpu", tta=False, tile_size=512, dtype=dtype)
                out = work / "o.ome.zarr"
                shutil.rmtree(out, ignore_errors=True)
                got = model.denoise_to_zarr(str(src), out, device="cpu", tta=False, tile_size=512,
                                            dtype=dtype, **kw).open()[0].compute()
                diff = float(np.abs(got.astype(np.float64) - ref).max())
                print(f"| {args.net} | {x.shape} {got.dtype} | {label} | "
                      f"{np.array_equal(got, ref)} | {diff:g} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--gb", type=float, default=8.0)
    m.add_argument("--size", type=int, default=2048)
    mem = sub.add_parser("memory")
    mem.add_argument("--input", required=True)
    mem.add_argument("--net", default="gauss", choices=["default", "tiny", "gauss"])
    mem.add_argument("--budget", default="2GB")
    mem.add_argument("--workers", type=int)
    mem.add_argument("--scratch")
    mem.add_argument("--keep", action="store_true", help="keep the finished output")
    mem.add_argument("--minutes", type=float, help="end the session after this long (the "
                     "output stays; --resume continues it)")
    mem.add_argument("--resume", action="store_true", help="continue an earlier session")
    b = sub.add_parser("budget")
    b.add_argument("--frames", type=int, default=4)
    b.add_argument("--size", type=int, default=4096)
    b.add_argument("--net", default="default", choices=["default", "tiny", "gauss"])
    b.add_argument("--budgets", default="512MB,1GB,2GB")
    b.add_argument("--train", type=float, default=0.0,
                   help="also train this many seconds at each budget, on a stack of "
                   "--train-frames frames (larger than the budget: the lazy path)")
    b.add_argument("--train-frames", type=int, default=24)
    for name in ("throughput", "scaling", "equality"):
        p = sub.add_parser(name)
        p.add_argument("--frames", type=int, default=12 if name != "equality" else 6)
        p.add_argument("--size", type=int, default=1024 if name != "equality" else 700)
        p.add_argument("--net", default="default" if name != "equality" else "tiny",
                       choices=["default", "tiny", "gauss"])
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    c = sub.add_parser("_child")
    c.add_argument("--spec", required=True)
    args = ap.parse_args(argv)
    {"make": cmd_make, "memory": cmd_memory, "budget": cmd_budget, "throughput": cmd_throughput,
     "scaling": cmd_scaling, "equality": cmd_equality, "_child": child}[args.cmd](args)


if __name__ == "__main__":
    main()
