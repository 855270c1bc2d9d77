"""Does ``max_time`` bound the whole call, and how fast does Stop act? (issue 30, items 1–2)

Rows:
- ``budget`` — ``api.make_trainer(frame, max_time=B)`` with the defaults, iterated to the end:
  the wall-clock of the whole call (setup, training, the end phase: the last validation, the
  weights' choice, the comparison with a classical filter, the final preview), the time of the
  last training step, and the end phase's share of the wall-clock.
- ``stop`` — a run in a worker thread, as the napari panel runs it; Stop is pressed from the
  main thread at a few moments during training, and once in the end phase: the seconds from the
  click until the run has ended (the model kept), and the steps counted after the click.

    python benchmarks/endphase.py --budgets 60,120 --json docs/benchmark_logs/endphase.json

Run it alone on an otherwise idle machine (the budgets are wall-clock). It runs on older
versions of the package too (events without ``phase``), to measure before/after.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import tifffile

DEFAULT_FRAME = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
                 / "pairs" / "gigadb_mito_60x_noisy.tif")


def budget_row(frame: np.ndarray, budget: float) -> dict:
    from napari_b2u import api

    t0 = time.perf_counter()
    trainer = api.make_trainer(frame, max_time=budget)
    last_step, phases = None, []
    for ev in trainer:
        now = time.perf_counter() - t0
        phase = getattr(ev, "phase", None)
        if phase:
            phases.append((round(now, 1), phase))
        elif not ev.done:
            last_step = now
    wall = time.perf_counter() - t0
    info = trainer.result().info
    return {"row": "budget", "budget_s": budget, "wall_s": round(wall, 1),
            "over_budget_pct": round(100 * (wall / budget - 1), 1),
            "last_step_s": round(last_step, 1), "steps": info["steps"],
            "end_phase_s": round(wall - last_step, 1),
            "end_share_pct": round(100 * (wall - last_step) / wall, 1),
            "chosen": info["chosen"], "phases": phases,
            "messages": [m for m in info.get("messages", []) if "time" in m]}


def stop_row(frame: np.ndarray, at: float | str, steps: int = 10**6) -> dict:
    """Press Stop ``at`` seconds after the first step (or ``"end"``: in the end phase of a
    ``steps``-step run, 0.3 s after it began) from this thread, as the GUI does."""
    from napari_b2u import api

    trainer = api.make_trainer(frame, steps=steps)
    first, in_end, done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def run():
        for ev in trainer:
            if not ev.done:
                first.set()
                if getattr(ev, "phase", None) or ev.step >= steps:
                    in_end.set()  # older versions: the last step's event, then the end phase
        seen["end"] = time.perf_counter()
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    first.wait()
    if at == "end":
        in_end.wait()
        time.sleep(0.3)
    else:
        time.sleep(float(at))
    step_at_click = trainer.state.step
    clicked = time.perf_counter()
    trainer.stop()
    done.wait()
    worker.join()
    result = trainer.result()
    return {"row": "stop", "at": at, "step_at_click": step_at_click,
            "latency_s": round(seen["end"] - clicked, 2),
            "steps_after_click": trainer.state.step - step_at_click,
            "kept": result.info["chosen"] if result is not None else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frame", default=str(DEFAULT_FRAME), help="a 2D noisy frame (TIFF)")
    p.add_argument("--budgets", default="60,120", help="time budgets in seconds, comma-separated")
    p.add_argument("--stops", default="2,5,9,14,end", help="Stop moments: seconds, or 'end'")
    p.add_argument("--end-steps", type=int, default=300, help="steps of the 'end' stop run")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", help="write the rows to this JSON file")
    args = p.parse_args(argv)

    import torch

    import napari_b2u

    torch.set_num_threads(args.threads)
    frame = tifffile.imread(args.frame)
    rows = []
    for b in [float(v) for v in args.budgets.split(",") if v]:
        rows.append(budget_row(frame, b))
        r = rows[-1]
        print(f"budget {b:5.0f} s: wall {r['wall_s']:6.1f} s ({r['over_budget_pct']:+.1f} %), "
              f"last step at {r['last_step_s']:.1f} s, end phase {r['end_phase_s']:.1f} s "
              f"({r['end_share_pct']:.1f} % of the run), {r['steps']} steps, kept {r['chosen']}",
              flush=True)
    for at in [v for v in args.stops.split(",") if v]:
        rows.append(stop_row(frame, at if at == "end" else float(at),
                             args.end_steps if at == "end" else 10**6))
        r = rows[-1]
        print(f"stop at {at!s:>4}: {r['latency_s']:.2f} s to the end, "
              f"{r['steps_after_click']} step(s) counted after the click "
              f"(step {r['step_at_click']})",
              flush=True)
    if args.json:
        meta = {"version": napari_b2u.__version__, "frame": args.frame, "threads": args.threads,
                "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
