"""Denoising quality on real noisy microscopy with high-SNR ground truth, at the budgets users have.

Data: ``../shared/data/real`` (see its README; W2S widefield frames and low/high-SNR pairs, cited
in docs/benchmarks.md). Score: PSNR (data range 255) after a least-squares affine fit of each
output frame to its ground truth (each image was scaled to 8 bits on its own), averaged over
frames; the same for every row and for the noisy input.

Cases: ``w2s-stack`` (W2S channel 0, fields 001–020, one 20-frame stack: train on it, denoise
it), ``pair:<name>`` (each low/high-SNR pair: train on the noisy frame alone), ``w2s:<NNN_chC>``
(single W2S frames) and ``clip:<case>`` (that case's noisy image with an offset subtracted so that
at least half of its pixels clip at 0, as a confocal's background subtraction does; the ground
truth is left alone, the affine fit of the score absorbs the offset; ``clip0.6:<case>``: 60 %).
Rows: ``noisy``;
``gaussian`` (σ chosen against the ground truth: an oracle);
``bm3d`` (VST+BM3D with noise parameters estimated from the noisy image); ``bm3d-oracle`` (the
same with the parameters fitted against the ground truth: the strong anchor); ``bm3d-colored``
(that, with the noise's spatial correlation fitted against the ground truth too and BM3D given its
power spectrum, strength chosen against the truth: the tuned anchor for scan-correlated noise);
``n2v-peer``
(CAREamics Noise2Void with the same wall-clock budget, run in its own venv:
../shared/tools/install-careamics-peer.sh); ``default`` (``api.train_stack(stack,
max_time=BUDGET)``, nothing else set, and ``model.denoise(stack)``); any method name (that method,
its defaults, no classical floor); and variants ``name[key=value;...]`` for ablations
(e.g. ``b2u[warm_start=none]``, ``default[tta=false]``: ``tta`` is an inference option).

    python benchmarks/real.py                                   # the default rows, ~40 min CPU
    python benchmarks/real.py --cases pair:gigadb_actin_20x --methods default,bm3d
    python benchmarks/real.py --methods "default,b2u[warm_start=none],gauss" --json r.json
    python benchmarks/real.py --device cuda --budget 60          # the GPU rows
    python benchmarks/real.py --cases clip:pair:gigadb_actin_confocal --threads 1

Every learned row trains for ``--budget`` seconds (120 on CPU, 60 on a GPU by default); run one
benchmark at a time on an otherwise idle machine, since the budget is wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
W2S_SINGLES = ["003_ch1", "012_ch2", "018_ch0"]
DEFAULT_ROWS = ["noisy", "gaussian", "bm3d", "bm3d-oracle", "n2v-peer", "default"]
GAUSS_SIGMAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 2.3, 2.6, 3.0, 3.5)


def affine_psnr(out: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (range 255) of ``out`` after the least-squares fit a·out + b to ``gt``."""
    o = np.asarray(out, np.float64).ravel()
    g = np.asarray(gt, np.float64).ravel()
    a = np.stack([o, np.ones_like(o)], 1)
    coef, *_ = np.linalg.lstsq(a, g, rcond=None)
    mse = float(np.mean((a @ coef - g) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def score(out: np.ndarray, gt: np.ndarray) -> float:
    """Mean of the per-frame affine-fit PSNR of (N, Y, X) or (Y, X) arrays."""
    if out.ndim == 2:
        return affine_psnr(out, gt)
    return float(np.mean([affine_psnr(o, g) for o, g in zip(out, gt)]))


def record(results: dict, case: str, row: str, res: dict, path, meta: dict) -> None:
    """Keep a row's result, print it as a JSON line and, with ``path``, rewrite the JSON file
    (a long run keeps what it measured when it is cut short)."""
    results.setdefault(case, {})[row] = res
    print(json.dumps({"case": case, "row": row, **_rounded(res)}), flush=True)
    if path:
        path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


# ---- cases -------------------------------------------------------------------------------------
def case_names(root: Path) -> list[str]:
    pairs = sorted(p.name[:-len("_noisy.tif")] for p in (root / "pairs").glob("*_noisy.tif"))
    return ["w2s-stack"] + [f"pair:{p}" for p in pairs] + [f"w2s:{s}" for s in W2S_SINGLES]


#: the fraction of pixels a ``clip:`` case clips at 0
CLIP_FRACTION = 0.5


def clip_background(noisy: np.ndarray, fraction: float = CLIP_FRACTION) -> np.ndarray:
    """``noisy`` minus the smallest offset that puts ``fraction`` of its pixels at 0 or below,
    clipped at 0, in its own dtype."""
    v = np.sort(noisy, axis=None)[int(np.ceil(fraction * noisy.size)) - 1]
    return np.clip(noisy.astype(np.float64) - float(v), 0, None).astype(noisy.dtype)


def load_case(root: Path, name: str, crop: int | None = None):
    """(noisy, gt, axes) of a case; ``crop``: the central crop×crop pixels (fast tests)."""
    import tifffile

    if name.startswith("clip"):  # clip:<case> (half the pixels) or clip<fraction>:<case>
        head, rest = name.split(":", 1)
        noisy, gt, axes = load_case(root, rest, crop)
        return clip_background(noisy, float(head[4:] or CLIP_FRACTION)), gt, axes
    if name == "w2s-stack":
        ids = [f"{i:03d}" for i in range(1, 21)]
        noisy = np.stack([tifffile.imread(root / "w2s" / "noisy" / f"w2s_{i}_ch0.tif")
                          for i in ids])
        gt = np.stack([tifffile.imread(root / "w2s" / "gt" / f"w2s_{i}_ch0.tif") for i in ids])
        axes = "TYX"
    elif name.startswith("pair:"):
        base = name[5:]
        noisy = tifffile.imread(root / "pairs" / f"{base}_noisy.tif")
        gt = tifffile.imread(root / "pairs" / f"{base}_gt.tif")
        axes = "YX"
    elif name.startswith("w2s:"):
        f = f"w2s_{name[4:]}.tif"
        noisy = tifffile.imread(root / "w2s" / "noisy" / f)
        gt = tifffile.imread(root / "w2s" / "gt" / f)
        axes = "YX"
    else:
        raise ValueError(f"unknown case {name!r}; cases: {', '.join(case_names(root))}")
    if crop:
        h, w = noisy.shape[-2:]
        y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        noisy = noisy[..., y0:y0 + crop, x0:x0 + crop]
        gt = gt[..., y0:y0 + crop, x0:x0 + crop]
    return np.ascontiguousarray(noisy), np.ascontiguousarray(gt), axes


# ---- rows --------------------------------------------------------------------------------------
def parse_row(spec: str) -> tuple[str, dict]:
    """'b2u[warm_start=none;ema=0.99]' -> ('b2u', {'warm_start': 'none', 'ema': 0.99})."""
    if "[" not in spec:
        return spec, {}
    name, _, rest = spec.partition("[")
    opts = {}
    for item in rest.rstrip("]").split(";"):
        if item.strip():
            k, _, v = item.partition("=")
            opts[k.strip()] = _value(v.strip())
    return name, opts


def _value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def frames(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 3 else a[None]


def run_classical(row: str, noisy: np.ndarray, gt: np.ndarray) -> dict:
    t = time.perf_counter()
    if row == "noisy":
        out = noisy.astype(np.float64)
        extra = {}
    elif row == "gaussian":
        from scipy import ndimage

        best = None
        for s in GAUSS_SIGMAS:
            cand = np.stack([ndimage.gaussian_filter(f.astype(np.float64), s)
                             for f in frames(noisy)]).reshape(noisy.shape)
            p = score(cand, gt)
            if best is None or p > best[0]:
                best = (p, s, cand)
        out, extra = best[2], {"sigma": best[1]}
    elif row in ("bm3d", "bm3d-oracle"):
        from napari_b2u.methods.classical import vst_bm3d
        from napari_b2u.noise import estimate_poisson_gaussian

        outs, fits = [], []
        truth = np.broadcast_to(gt, noisy.shape)
        for f, g in zip(frames(noisy), frames(truth)):
            a, b = (oracle_noise(f, g) if row == "bm3d-oracle" else
                    estimate_poisson_gaussian(f))
            fits.append((float(a), float(b)))
            outs.append(vst_bm3d(f, a, b))
        out, extra = np.stack(outs).reshape(noisy.shape), {"noise": fits[len(fits) // 2]}
    elif row == "bm3d-colored":
        out, extra = colored_bm3d(noisy, gt)
    else:
        raise ValueError(row)
    return {"psnr": score(out, gt), "infer_s": time.perf_counter() - t, **extra}


CLASSICAL_ROWS = ("noisy", "gaussian", "bm3d", "bm3d-oracle", "bm3d-colored")
#: strengths (multiples of the fitted noise spectrum) the colored oracle tries on the first frame
PSD_SCALES = (0.75, 1.0, 1.5, 2.0, 3.0)


def colored_bm3d(noisy: np.ndarray, gt: np.ndarray, lags: int = 3) -> tuple[np.ndarray, dict]:
    """VST + BM3D told the noise's power spectrum, everything fitted against the ground truth:
    (a, b) as ``bm3d-oracle``, then the autocorrelation of the stabilized residual at lags up to
    ``lags`` (less its value at the farthest lags: the pair's slowly varying mismatch is not
    noise; circular shifts, so the frame's edges pair up, a small bias at lags ≤ 3) as BM3D's PSD,
    scaled by the multiple of ``PSD_SCALES`` that scores best on the first frame (as the oracle
    Gaussian picks its σ)."""
    from napari_b2u.methods.classical import gat, vst_bm3d

    if not hasattr(np, "trapz"):  # the bm4d package's PSD path calls np.trapz, gone in numpy 2
        np.trapz = np.trapezoid
    truth = np.broadcast_to(gt, noisy.shape)
    outs, scale, info = [], None, {}
    for f, g in zip(frames(noisy), frames(truth)):
        f = np.asarray(f, np.float64)
        a, b = oracle_noise(f, g)
        keep, mean = truth_fit(f, g)
        r = np.where(keep, gat(f, a, b) - gat(mean, a, b), 0.0)
        r = np.where(keep, r - r[keep].mean(), 0.0)
        # circular autocorrelation; lag (dy, dx) sits at [dy % H, dx % W]
        full = np.real(np.fft.ifft2(np.abs(np.fft.fft2(r)) ** 2)) / max(int(keep.sum()), 1)
        at = np.ix_(np.arange(-lags, lags + 1) % f.shape[0],
                    np.arange(-lags, lags + 1) % f.shape[1])
        ac = full[at]
        ac -= np.median(np.concatenate([ac[0], ac[-1], ac[1:-1, 0], ac[1:-1, -1]]))
        kern = np.zeros(f.shape)
        kern[at] = ac
        # BM3D's PSD convention: |FFT|² of the noise kernel times the pixel count
        psd = np.abs(np.real(np.fft.fft2(kern))) * f.size
        if scale is None:  # chosen on the first frame, against its truth
            tries = {m: vst_bm3d(f, a, b, psd * m) for m in PSD_SCALES}
            scale = max(tries, key=lambda m: affine_psnr(tries[m], g))
            out = tries[scale]
            info = {"noise": (float(a), float(b)), "psd_scale": scale,
                    "corr_x1": round(float(ac[lags, lags + 1] / ac[lags, lags]), 3),
                    "corr_y1": round(float(ac[lags + 1, lags] / ac[lags, lags]), 3)}
        else:
            out = vst_bm3d(f, a, b, psd * scale)
        outs.append(out)
    return np.stack(outs).reshape(noisy.shape), info


def truth_fit(noisy: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels not at the noisy frame's min or max, the truth's affine fit to the noisy frame
    over those pixels): the noise-free mean the oracle rows measure the noise against."""
    # a clipped pixel's residual is not the noise's
    keep = (noisy > noisy.min()) & (noisy < noisy.max())
    coef, *_ = np.linalg.lstsq(np.stack([gt[keep], np.ones(keep.sum())], 1), noisy[keep],
                               rcond=None)
    return keep, coef[0] * gt + coef[1]


def oracle_noise(noisy: np.ndarray, gt: np.ndarray, bins: int = 24) -> tuple[float, float]:
    """(a, b) of the noise variance a · mean + b of ``noisy``, fitted against its ground truth
    (the strong anchor a tuned user reaches): the mean is the affine fit of the truth to the
    noisy frame, the variance of the residual is taken per intensity bin (clipped pixels left
    out) and fitted by weighted least squares."""
    y = np.asarray(noisy, np.float64).ravel()
    keep, mean = truth_fit(y, np.asarray(gt, np.float64).ravel())
    mean = mean[keep]
    r2 = (y[keep] - mean) ** 2
    edges = np.quantile(mean, np.linspace(0, 1, bins + 1))
    xs, vs, ws = [], [], []
    for e0, e1 in zip(edges[:-1], edges[1:]):
        sel = (mean >= e0) & (mean <= e1)
        if sel.sum() > 50:
            xs.append(mean[sel].mean())
            vs.append(r2[sel].mean())
            ws.append(sel.sum())
    w = np.sqrt(np.asarray(ws, np.float64))
    fit, *_ = np.linalg.lstsq(np.stack([xs, np.ones(len(xs))], 1) * w[:, None],
                              np.asarray(vs) * w, rcond=None)
    return max(float(fit[0]), 1e-3), float(fit[1])


def run_learned(name: str, opts: dict, noisy, gt, axes, budget, device, seed,
                curve: int = 0) -> dict:
    """``curve``: every that many steps, the network's one-pass output on the whole first frame
    (a training preview), scored after training: how soon the quality is reached."""
    import torch

    from napari_b2u import api

    opts = dict(opts)
    tta = opts.pop("tta", "auto")
    kw = {} if name == "default" else {"method": name, "floor": opts.pop("floor", "none")}
    seen: list = []

    def keep_preview(ev) -> None:  # training's previews only, not the end phase's
        if ev.previews is not None and ev.phase is None:
            seen.append((ev.elapsed, ev.step, ev.previews.images["visible"][0]))

    if curve:  # previews of the whole first frame, kept and scored after training
        opts.update(preview_every=curve, preview_size=max(noisy.shape[-2:]))
        kw["callback"] = keep_preview
    gpu = str(device).startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = api.train_stack(noisy, axes=axes, max_time=budget, device=device,
                                progress=False, seed=seed, **kw, **opts)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    out = model.denoise(noisy, axes=axes, dtype="float32", device=device, tta=tta)
    t_inf = time.perf_counter() - t
    info = model.info
    res = {"psnr": score(out, gt), "train_s": t_train, "steps": info["steps"],
           "infer_s": t_inf, "kept": model.method_name + ": " + str(info["chosen"]),
           "warm_start": info.get("warm_start"),
           "context": (info.get("context") or {}).get("chosen", 0)}
    if tta is not False and tta != "false":  # the one-pass output too, to show what TTA buys
        res["psnr_one_pass"] = score(model.denoise(noisy, axes=axes, dtype="float32",
                                                   device=device, tta=False), gt)
    if gpu:  # training and denoising together: what a laptop GPU must hold
        res["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if seen:
        first_gt = frames(gt)[0]
        res["curve"] = [(round(e, 2), s, round(affine_psnr(img, first_gt), 3))
                        for e, s, img in seen]
        final = res["curve"][-1][2]
        res["reach_s"] = next(e for e, _, q in res["curve"] if q >= final - 0.1)
    return res


def run_peer(python: str, noisy, gt, axes, budget) -> dict:
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(src, noisy)
        peer_axes = {"TYX": "SYX", "ZYX": "SYX", "YX": "YX"}[axes]
        t = time.perf_counter()
        proc = subprocess.run([python, str(here / "careamics_peer.py"), str(src), str(dst),
                               peer_axes, str(budget)], capture_output=True, text=True,
                              cwd=tmp)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1][:200] if proc.stderr
                    else f"exit {proc.returncode}"}
        out = np.load(dst)
        times = json.loads((Path(tmp) / "out.json").read_text())
    return {"psnr": score(out, gt), **times, "wall_s": time.perf_counter() - t}


# ---- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("B2U_REAL_DATA",
                                                                    DEFAULT_DATA)))
    p.add_argument("--cases", help="comma-separated (default: all; see the module doc)")
    p.add_argument("--methods", default=",".join(DEFAULT_ROWS),
                   help=f"comma-separated rows (default {','.join(DEFAULT_ROWS)})")
    p.add_argument("--budget", type=float, help="training seconds (default 120 CPU, 60 GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=int, help="central crop of each case (fast tests)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--careamics-python",
                   default=str(Path(__file__).resolve().parents[1] / ".venv-careamics" / "bin"
                               / "python"),
                   help="python of the CAREamics peer venv (the n2v-peer row)")
    p.add_argument("--json", type=Path, help="merge results into this JSON file")
    p.add_argument("--curve", type=int, default=0, metavar="STEPS",
                   help="learned rows: score the network's one-pass output on the first frame "
                        "every STEPS steps (a preview; records 'curve' and 'reach_s', the "
                        "seconds until it is within 0.1 dB of its last value)")
    a = p.parse_args(argv)
    if not (a.data / "pairs").is_dir():
        print(f"no real data at {a.data} (pairs/, w2s/): give --data", file=sys.stderr)
        return 2
    budget = a.budget or (60.0 if a.device.startswith("cuda") else 120.0)
    cases = a.cases.split(",") if a.cases else case_names(a.data)
    rows = split_rows(a.methods)
    import torch

    from napari_b2u.device import device_info

    if a.threads:
        torch.set_num_threads(a.threads)

    meta = {"date": time.strftime("%Y-%m-%d"), "device": device_info(a.device).describe(),
            "torch": str(torch.__version__), "budget_s": budget, "crop": a.crop,
            "command": "python benchmarks/real.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv)}
    results: dict = {}
    if a.json and a.json.exists():
        results = json.loads(a.json.read_text()).get("results", {})
    print(f"# real-data benchmark, {meta['device']}, budget {budget:g} s", flush=True)
    for case in cases:
        noisy, gt, axes = load_case(a.data, case, a.crop)
        for row in rows:
            name, opts = parse_row(row)
            if name in CLASSICAL_ROWS:
                res = run_classical(name, noisy, gt)
            elif name == "n2v-peer":
                if not Path(a.careamics_python).exists():
                    res = {"error": f"no CAREamics peer at {a.careamics_python}"}
                else:
                    res = run_peer(a.careamics_python, noisy, gt, axes, budget)
            else:
                res = run_learned(name, opts, noisy, gt, axes, budget, a.device, a.seed,
                                  a.curve)
            record(results, case, row, res, a.json, meta)
    print()
    print(table(results, cases, rows))
    return 0


def split_rows(spec: str) -> list[str]:
    """Commas inside [...] belong to the row."""
    rows, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            rows.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        rows.append(cur.strip())
    return rows


def _rounded(res: dict) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}


def table(results: dict, cases=None, rows=None) -> str:
    """Markdown: PSNR per row and case (best learned/classical in bold), then the mean."""
    cases = cases or list(results)
    rows = rows or sorted({r for c in results.values() for r in c})
    head = "| row | " + " | ".join(cases) + " | mean |"
    lines = [head, "|" + "---|" * (len(cases) + 2)]
    best = {c: max((results[c][r]["psnr"] for r in rows if r != "noisy" and
                    "psnr" in results.get(c, {}).get(r, {})), default=None) for c in cases}
    for r in rows:
        cells, vals = [], []
        for c in cases:
            res = results.get(c, {}).get(r, {})
            if "psnr" not in res:
                cells.append("–")
                continue
            v = res["psnr"]
            vals.append(v)
            cells.append(f"**{v:.2f}**" if v == best[c] else f"{v:.2f}")
        mean = f"{np.mean(vals):.2f}" if len(vals) == len(cases) else "–"
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
