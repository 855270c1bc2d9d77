"""What the noise check reads on real frames, clipped and not (issue 28): the noise's correlation
at lags 1 and 2 along X and Y, the share of pixels it could use, the mask it picks, and the
correlation of the noise measured against the ground truth (the noisy frame minus an affine fit
of its high-SNR pair, over pixels that are not clipped).

Cases: every low/high-SNR pair in ``../shared/data/real/pairs`` as it is and with an offset
subtracted so that ``--fractions`` of its pixels read 0 (``benchmarks/real.py``'s
``clip<fraction>:`` cases; the truth is the unclipped frame's, the noise being the same).
Numpy only, seconds:

    python benchmarks/noise_check.py
    python benchmarks/noise_check.py --pairs gigadb_actin_confocal --fractions 0.5,0.55,0.6,0.7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real import DEFAULT_DATA, clip_background  # noqa: E402


def truth_correlation(noisy: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Lag-1 correlation along X and Y of noisy − (a·gt + b), over pairs of pixels neither of
    which is clipped (at the dtype's bounds)."""
    y, g = noisy.astype(np.float64), gt.astype(np.float64)
    info = np.iinfo(noisy.dtype) if noisy.dtype.kind in "ui" else None
    ok = (y > (info.min if info else -np.inf)) & (y < (info.max if info else np.inf))
    a = np.stack([g[ok], np.ones(int(ok.sum()))], 1)
    coef, *_ = np.linalg.lstsq(a, y[ok], rcond=None)
    r = np.where(ok, y - (coef[0] * g + coef[1]), 0.0)
    out = []
    for p, q, both in ((r[:, :-1], r[:, 1:], ok[:, :-1] & ok[:, 1:]),
                       (r[:-1], r[1:], ok[:-1] & ok[1:])):
        p, q = p[both] - p[both].mean(), q[both] - q[both].mean()
        out.append(float(np.sum(p * q) / np.sqrt(np.sum(p * p) * np.sum(q * q))))
    return out[0], out[1]


def main(argv=None) -> int:
    import tifffile

    from napari_b2u.noise import noise_report

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--pairs", default="", help="comma-separated pair names (default: all)")
    p.add_argument("--fractions", default="0.5", help="clipped fractions, comma-separated")
    a = p.parse_args(argv)
    root = a.data / "pairs"
    if not root.is_dir():
        raise SystemExit(f"no real pairs at {root}: give --data")
    names = ([n for n in a.pairs.split(",") if n] or
             sorted(f.name[:-len("_noisy.tif")] for f in root.glob("*_noisy.tif")))
    fractions = [float(f) for f in a.fractions.split(",") if f]
    print("| case | zeros | usable | X lag 1/2 | Y lag 1/2 | mask | truth X/Y lag 1 |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        noisy = tifffile.imread(root / f"{name}_noisy.tif")
        gt = tifffile.imread(root / f"{name}_gt.tif")
        tx, ty = truth_correlation(noisy, gt)
        for frac in [None] + fractions:
            img = noisy if frac is None else clip_background(noisy, frac)
            r = noise_report(img)
            label = name if frac is None else f"clip{frac:g}:{name}"
            print(f"| {label} | {100 * float((img == 0).mean()):.0f} % | "
                  f"{100 * r.usable:.0f} % | {r.corr_x[0]:+.2f} / {r.corr_x[1]:+.2f} | "
                  f"{r.corr_y[0]:+.2f} / {r.corr_y[1]:+.2f} | {r.mask} | "
                  f"{tx:+.2f} / {ty:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
