"""Denoising quality: B2U against baselines, on FMDD (when you have it) or FMDD-like synthetic sets.

Protocol (METHOD.md): per set, train on every view but the test view (19 on FMDD), test on the
test view's frames against its ground truth (FMDD: avg50.png; synthetic: the true clean image);
PSNR/SSIM after clamping and rounding to 8 bits, data range 255, MATLAB-style Gaussian SSIM.
Two regimes: `stack` (train on the other views' frames) and `single` (train on one frame of the
test view and denoise that frame — the common single-image case where overfitting bites).

    python benchmarks/quality.py --preset cpu-small                     # minutes on 2 CPU cores
    python benchmarks/quality.py --preset cpu --ablations               # ~1 h on 2 CPU cores
    python benchmarks/quality.py --preset gpu-full --device cuda        # full size
    python benchmarks/quality.py --fmdd-root /data/FMDD --preset gpu-full --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real import split_rows  # noqa: E402  (commas inside [...]: 'default[mask=box:3,3]')

from napari_b2u import api  # noqa: E402
from napari_b2u.denoise.denoiser import Denoiser
from napari_b2u.io.fmdd import TEST_VIEW, list_sets, load_view, split_views
from napari_b2u.metrics import evaluate  # noqa: E402
from napari_b2u.sample_data import fmdd_like_stack  # noqa: E402

#: B2U on FMDD, paper Table 4 (PSNR, SSIM)
PAPER_B2U = {"Confocal_FISH": (32.74, 0.897), "Confocal_MICE": (38.44, 0.964),
             "TwoPhoton_MICE": (34.03, 0.916)}

#: synthetic stand-ins for the three FMDD sets of the paper's table: photon level and read noise
SYNTHETIC = {
    "synth-confocal-fish": dict(photons=20.0, read_noise=0.02),
    "synth-confocal-mice": dict(photons=60.0, read_noise=0.01),
    "synth-twophoton-mice": dict(photons=12.0, read_noise=0.03),
    # what real data does (REAL-DATA-NOTES.md): a point-scanning confocal's noise correlated
    # with the right-hand neighbour, and an 8-bit export that clips (background subtracted, and
    # saturated)
    "synth-confocal-corrx": dict(photons=20.0, read_noise=0.02, corr_x=0.3),
    "synth-confocal-clipped": dict(photons=20.0, read_noise=0.02, offset=-12.0, gain=400.0),
    # both at once, as issue 28 asks: x-correlated noise and more than half the pixels at 0
    "synth-confocal-corrx-clipped": dict(photons=20.0, read_noise=0.02, corr_x=0.3,
                                         offset=-24.0, gain=400.0),
}
#: the sets run unless --sets says otherwise (the FMDD-like three of the paper's table)
DEFAULT_SETS = ["synth-confocal-fish", "synth-confocal-mice", "synth-twophoton-mice"]

PRESETS = {
    # views, frames per view, frame size, test frames evaluated, training steps (None: device
    # preset), BM3D frames
    "tiny": dict(views=2, frames=2, size=64, test_frames=1, steps=20, sets=DEFAULT_SETS),
    # minutes on 2 CPU cores: one set, the CPU preset's network, half its steps
    "cpu-small": dict(views=2, frames=4, size=128, test_frames=2, steps=150,
                      sets=["synth-confocal-fish"]),
    # about an hour on 2 CPU cores: all three sets at the CPU preset (300 steps)
    "cpu": dict(views=3, frames=4, size=128, test_frames=2, steps=None, sets=DEFAULT_SETS),
    "gpu-full": dict(views=20, frames=50, size=512, test_frames=50, steps=None,
                     sets=DEFAULT_SETS),
}

LEARNED = ["b2u", "n2v", "nbr2nbr", "b2s", "dbsn"]
DEFAULT_METHODS = ["noisy", "gaussian", "bm3d", *LEARNED]

#: ablations that decide defaults (run on the first set, stack regime); B2U unless `method`
ABLATIONS = {
    "b2u s=4": dict(cells=4),
    "b2u λ const 2": dict(method_params={"lambda_end": 2.0}),
    "b2u λ no hold": dict(method_params={"lambda_hold": 0.0}),
    "b2u lr 1e-4": dict(lr=1e-4),
    "b2u steps x1/3": dict(steps_factor=1 / 3),
    "b2u steps x3": dict(steps_factor=3),
    # the released scripts' plain likelihood instead of the paper's Eq. 8 (the default)
    "dbsn likelihood loss": dict(method="dbsn", method_params={"loss": "likelihood"}),
}


@dataclass
class DataSet:
    name: str
    train: np.ndarray  # (N, Y, X) frames of the training views
    test: np.ndarray  # (M, Y, X) noisy frames of the test view
    gt: np.ndarray  # (Y, X) ground truth of the test view, 0..255


@dataclass
class Row:
    set: str
    regime: str
    method: str
    psnr: float
    ssim: float
    train_s: float | None = None
    infer_s: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)


def synthetic_sets(views: int, frames: int, size: int, names=None) -> list[DataSet]:
    out = []
    for i, (name, noise) in enumerate(SYNTHETIC.items()):
        if names and name not in names:
            continue
        stacks = [fmdd_like_stack(frames, (size, size), seed=1000 * i + v, **noise)
                  for v in range(views)]
        test_noisy, test_clean = stacks[-1]
        train = np.concatenate([s[0] for s in stacks[:-1]])
        out.append(DataSet(name, train, test_noisy, test_clean))
    return out


def fmdd_sets(root, names=None, max_frames=None) -> list[DataSet]:
    out = []
    for set_dir in list_sets(root):
        if names and set_dir.name not in names:
            continue
        train_views, test_view = split_views(set_dir, TEST_VIEW)
        train = np.concatenate([load_view(set_dir, v, max_frames).noisy for v in train_views])
        test = load_view(set_dir, test_view, max_frames)
        if test.gt is None:
            raise SystemExit(f"{set_dir}: view {test_view} has no gt/{test_view}/avg50.png")
        out.append(DataSet(set_dir.name, train, test.noisy, test.gt.astype(np.float32)))
    return out


def score(stack: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    ps, ss = zip(*(evaluate(f, gt) for f in stack))
    return float(np.mean(ps)), float(np.mean(ss))


def parse_method(spec: str) -> tuple[str, dict]:
    """'b2u[mask=pixel;warm_start=none]' -> ('b2u', {...}); 'default' is api's defaults."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real import parse_row

    return parse_row(spec)


def train_learned(method: str, train: np.ndarray, kw: dict):
    """Train with the engine; return (best/kept Denoiser, last-step Denoiser, seconds).
    Method rows show the method itself (no classical floor); ``default`` is api's defaults."""
    kw = dict(kw)
    steps_factor = kw.pop("steps_factor", None)
    if method == "default":
        method = None
    else:
        kw.setdefault("floor", "none")
    trainer = api.make_trainer(train, axes="TYX", method=method, **kw)
    if steps_factor:
        trainer.config.steps = max(1, int(round(trainer.config.steps * steps_factor)))
    last_state = None
    t0 = time.perf_counter()
    for ev in trainer:
        if not ev.done and ev.step == trainer.config.steps:
            last_state = {k: v.detach().float().cpu().clone()
                          for k, v in trainer.model.state_dict().items()}
    seconds = time.perf_counter() - t0
    kept = trainer.result()
    last = Denoiser(kept.method_name, kept.method_params, kept.model_config,
                    last_state or kept.state_dict, kept.normalization, kept.info,
                    context=kept.context)
    return kept, last, seconds


def run_quality(sets: list[DataSet], regimes=("stack", "single"), methods=DEFAULT_METHODS,
                test_frames: int = 2, train_kw: dict | None = None, ablations: bool = False,
                device: str = "auto", log=print) -> list[Row]:
    from baselines import gaussian_best, vst_bm3d

    train_kw = dict(train_kw or {})
    # single-frame denoising: the test stacks are a few frames (stack context is measured by
    # benchmarks/stacks.py)
    train_kw.setdefault("context", 0)
    train_kw.setdefault("device", device)
    train_kw.setdefault("seed", 0)
    rows: list[Row] = []

    def add(row: Row):
        rows.append(row)
        log(f"  {row.set:22s} {row.regime:6s} {row.method:22s} {row.psnr:6.2f} {row.ssim:.3f}"
            + (f"  train {row.train_s:.0f}s" if row.train_s else "") + f"  {row.notes}")

    for ds in sets:
        for regime in regimes:
            if regime == "stack":
                train, test = ds.train, ds.test[:test_frames]
            else:  # one frame of the test view, denoised by a model trained on it alone
                train, test = ds.test[:1], ds.test[:1]
            for m in methods:
                if m == "noisy":
                    add(Row(ds.name, regime, "noisy input", *score(test, ds.gt)))
                elif m == "gaussian":
                    out, s = gaussian_best(test, ds.gt)
                    add(Row(ds.name, regime, "Gaussian (oracle σ)", *score(out, ds.gt),
                            notes=f"sigma {s}"))
                elif m == "bm3d":
                    t = time.perf_counter()
                    outs, params = zip(*(vst_bm3d(f) for f in test))
                    a, b = np.mean([p[0] for p in params]), np.mean([p[1] for p in params])
                    add(Row(ds.name, regime, "VST+BM3D", *score(np.stack(outs), ds.gt),
                            infer_s=time.perf_counter() - t,
                            notes=f"estimated a={a:.2f} b={b:.1f}"))
                elif parse_method(m)[0] in LEARNED + ["default"]:
                    name, opts = parse_method(m)
                    kept, last, secs = train_learned(name, train, {**train_kw, **opts})
                    note = f"{kept.info['steps']} steps, kept {kept.info['chosen']}"
                    for out_name in kept.outputs[:2]:
                        t = time.perf_counter()
                        den = kept.denoise(test, axes="TYX", output=out_name, dtype="float32",
                                           device=device)
                        label = f"{m} {out_name}" if len(kept.outputs) > 1 else m
                        if kept.method_name != (name or "b2u"):
                            label = f"{m} ({kept.method_name})"
                        add(Row(ds.name, regime, label, *score(den, ds.gt), train_s=secs,
                                infer_s=time.perf_counter() - t, notes=note,
                                extra={"readout": kept.readout(),
                                       "history": kept.info["history"]}))
                    if regime == "single" and kept.info["chosen"] != "last":
                        den = last.denoise(test, axes="TYX", dtype="float32", device=device)
                        add(Row(ds.name, regime, f"{m} {kept.outputs[0]} (last step)",
                                *score(den, ds.gt), notes="without validation-based selection"))
                else:
                    raise SystemExit(f"unknown method {m!r}")
        if ablations and ds is sets[0]:
            for label, kw in ABLATIONS.items():
                kw = dict(kw)
                method = kw.pop("method", "b2u")
                kept, _, secs = train_learned(method, ds.train, {**train_kw, **kw})
                # B2U ablations: the fast visible output; other methods: both of their outputs
                outs = kept.outputs[:1] if method == "b2u" else kept.outputs[:2]
                for out_name in outs:
                    den = kept.denoise(ds.test[:test_frames], axes="TYX", output=out_name,
                                       dtype="float32", device=device)
                    add(Row(ds.name, "stack", label if len(outs) == 1 else f"{label}, {out_name}",
                            *score(den, ds.gt), train_s=secs,
                            notes=f"{kept.info['steps']} steps, {out_name}"))
    return rows


def format_table(rows: list[Row], paper: bool = False) -> str:
    lines = ["| set | regime | method | PSNR (dB) | SSIM | train (s) | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = f"{r.train_s:.0f}" if r.train_s else ""
        lines.append(f"| {r.set} | {r.regime} | {r.method} | {r.psnr:.2f} | {r.ssim:.3f} | {t} "
                     f"| {r.notes} |")
    if paper:
        for k, (p, s) in PAPER_B2U.items():
            lines.append(f"| {k} | stack | B2U, paper Table 4 | {p:.2f} | {s:.3f} | | reference |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-small", choices=PRESETS)
    ap.add_argument("--fmdd-root", help="FMDD root (default: synthetic FMDD-like sets)")
    ap.add_argument("--sets", nargs="*", help="set names to run (default: all)")
    ap.add_argument("--regimes", default="stack,single")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--steps", type=int, help="training steps (default: preset / device preset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ablations", action="store_true",
                    help="also run the ablations (B2U settings, D-BSN loss)")
    ap.add_argument("--json", help="write all rows (with validation histories) to this file")
    a = ap.parse_args(argv)
    pr = PRESETS[a.preset]
    t0 = time.perf_counter()
    if a.fmdd_root:
        sets = fmdd_sets(a.fmdd_root, a.sets, max_frames=pr["frames"])
    else:
        sets = synthetic_sets(pr["views"], pr["frames"], pr["size"], a.sets or pr["sets"])
    kw = {"steps": a.steps or pr["steps"], "progress": False}
    if a.preset == "tiny":
        kw.update(width=16, depth=2, patch_size=32)
    kw = {k: v for k, v in kw.items() if v is not None and k != "progress"}
    print(f"quality benchmark: preset {a.preset}, {len(sets)} set(s), device {a.device}")
    rows = run_quality(sets, a.regimes.split(","), split_rows(a.methods), pr["test_frames"], kw,
                       a.ablations, a.device)
    print()
    print(format_table(rows, paper=bool(a.fmdd_root)))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in rows], indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
