"""Turn the quality benchmark's JSON (``quality.py --json``) into the compact tables of
docs/benchmarks.md: one row per method, one PSNR/SSIM column per set and regime, the best
learned result of each column in bold, training seconds alongside.

    python benchmarks/report.py results.json [rerun.json ...]   # later files replace rows
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: rows that are not a learned model (no training time, not in the "best learned" contest)
NOT_LEARNED = ("noisy input", "Gaussian (oracle σ)", "VST+BM3D")


def load_rows(paths) -> list[dict]:
    """Rows of all files in order; a later file's row replaces an earlier one of the same set,
    regime and method (a re-run of some methods updates a full run)."""
    rows: dict[tuple, dict] = {}
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            rows[(r["set"], r["regime"], r["method"])] = r
    return list(rows.values())


def pivot(rows: list[dict], regime: str) -> str:
    rows = [r for r in rows if r["regime"] == regime]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["set"], r["method"]): r for r in rows}
    best = {}
    for s in sets:
        learned = [r for r in rows if r["set"] == s and r["method"] not in NOT_LEARNED]
        if learned:
            best[s] = max(r["psnr"] for r in learned)
    head = "| method | " + " | ".join(f"{s} PSNR / SSIM | train (s)" for s in sets) + " |"
    lines = [head, "|---|" + "---|---|" * len(sets)]
    for m in methods:
        parts = []
        for s in sets:
            r = cell.get((s, m))
            if r is None:
                parts += ["", ""]
                continue
            v = f"{r['psnr']:.2f} / {r['ssim']:.3f}"
            if m not in NOT_LEARNED and abs(r["psnr"] - best.get(s, -1)) < 1e-9:
                v = f"**{v}**"
            parts += [v, f"{r['train_s']:.0f}" if r.get("train_s") else ""]
        lines.append(f"| {m} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def readouts(rows: list[dict]) -> str:
    """The fitted noise of the methods that estimate it, one line per model."""
    lines = ["| set | regime | method | fitted gain | fitted read σ |", "|---|---|---|---|---|"]
    seen = set()
    for r in rows:
        ro = (r.get("extra") or {}).get("readout") or {}
        key = (r["set"], r["regime"], r["method"].split()[0])
        if "noise_gain" in ro and key not in seen:
            seen.add(key)
            lines.append(f"| {r['set']} | {r['regime']} | {key[2]} | {ro['noise_gain']:.2f} | "
                         f"{ro['noise_sigma']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+")
    a = ap.parse_args(argv)
    rows = load_rows(a.json)
    for regime in dict.fromkeys(r["regime"] for r in rows):
        print(f"\n{regime}:\n")
        print(pivot(rows, regime))
    ro = readouts(rows)
    if ro.count("\n") > 1:
        print("\nfitted noise (raw 8-bit units):\n")
        print(ro)


if __name__ == "__main__":
    main()
