"""What each method does where the data clip (issue 18): the error in clipped and unclipped
pixels of a synthetic 8-bit stack exported with a background subtraction (zeros) and a gain that
saturates (255s), as real exports often are (REAL-DATA-NOTES.md: up to 57 % zeros, 12 % 255s).

The truth in a clipped pixel is the clean image clipped the same way (a pixel at 0 or 255 carries
no more information). Rows: each method's output as is, and the same with the clipped input
pixels passed through unchanged (``keep``), which is what the safest default would do.

    python benchmarks/clipping.py [--steps 300] [--methods gauss,b2u,n2v,dbsn]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from napari_b2u import api
from napari_b2u.noise import clipping
from napari_b2u.sample_data import fmdd_like_stack


def rmse(a, b, where):
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2))) if where.any() else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--methods", default="gauss,b2u,n2v,dbsn")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    a = p.parse_args(argv)
    noisy, clean = fmdd_like_stack(a.frames, (a.size, a.size), photons=20, read_noise=0.02,
                                   offset=-12.0, gain=400.0, seed=7)
    truth = np.broadcast_to(np.clip(clean, 0, 255), noisy.shape)  # one clean image per stack
    low, high = noisy == 0, noisy == 255
    mid = ~(low | high)
    lo_f, hi_f = clipping(noisy)
    print(f"synthetic clipped stack: {a.frames} x {a.size}², {100 * lo_f:.0f} % at 0, "
          f"{100 * hi_f:.0f} % at 255 (steps {a.steps})")
    print("| method | output | RMSE at 0 | RMSE at 255 | RMSE elsewhere | RMSE all |")
    print("|---|---|---|---|---|---|")
    rows = [("noisy input", "", noisy.astype(np.float64))]
    for m in a.methods.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = api.train_stack(noisy, method=m, steps=a.steps, device="cpu",
                                    progress=False, floor="none")
        out = model.denoise(noisy, dtype="float32", tta=False).astype(np.float64)
        kept = np.where(low | high, noisy, out)
        rows += [(m, "as is", out), (m, "clipped kept", kept)]
    for name, how, out in rows:
        print(f"| {name} | {how} | {rmse(out, truth, low):.2f} | {rmse(out, truth, high):.2f} | "
              f"{rmse(out, truth, mid):.2f} | {rmse(out, truth, np.ones_like(mid)):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
