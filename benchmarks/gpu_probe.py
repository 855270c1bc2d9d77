"""Where a GPU step and a GPU inference pass spend their time: short diagnostics for a device
session (seconds each), printed as tables.

    python benchmarks/gpu_probe.py [--device cuda] [--parts steps,profile,net,pipeline]

steps: ms/step of the engine (eager) at s = 4 and 2, with cuDNN's autotuner off and on;
profile: the top operators of 20 eager steps (torch.profiler, CPU and device time);
net: the bare network's inference Mpx/s on a batch of 512² frames in fp32 (TF32 convolutions),
bf16 and fp16 autocast, NCHW and channels-last: the ceiling the pipeline is measured against;
pipeline: ``Denoiser.denoise`` of a (50, 512, 512) stack, one view and the "auto" ensemble.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import _sync, time_fast  # noqa: E402

from napari_b2u import api  # noqa: E402
from napari_b2u.device import resolve_device  # noqa: E402
from napari_b2u.models import UNet  # noqa: E402
from napari_b2u.sample_data import fmdd_like_stack  # noqa: E402


def steps_table(frames, dev, width, depth, patch, steps):
    print("\n| s | cuDNN autotuner | ms/step (eager) |")
    print("|---|---|---|")
    for cells in (4, 2):
        for bench in (False, True):
            torch.backends.cudnn.benchmark = bench
            sec, _, _, _ = time_fast(frames, dev, cells, width, depth, patch, 4, 20, steps,
                                     False)
            print(f"| {cells} | {bench} | {sec * 1e3:.2f} |", flush=True)
    torch.backends.cudnn.benchmark = False


def profile_table(frames, dev, width, depth, patch):
    from torch.profiler import ProfilerActivity, profile

    tr = api.make_trainer(frames, axes="TYX", device=dev, steps=60, cells=4, width=width,
                          depth=depth, patch_size=patch, batch_size=4, val_fraction=0,
                          preview_every=0, compile=False, context=0, floor="none",
                          warm_start="none")
    it = iter(tr)
    for _ in range(20):  # warm-up
        next(it)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    _sync(dev)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(20):
            next(it)
        _sync(dev)
    print(f"\n20 eager steps under the profiler: {(time.perf_counter() - t) * 50:.1f} ms/step")
    key = "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=60))
    if dev.type == "cuda":
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12,
                                        max_name_column_width=60))
    it.close()


@torch.no_grad()
def net_table(dev, width, depth, batch=16, side=512):
    net = UNet(1, 1, width, depth).to(dev).eval()
    x = torch.rand(batch, 1, side, side, device=dev)
    print(f"\n| bare network, batch {batch} × {side}² | layout | Mpx/s |")
    print("|---|---|---|")
    for name, dtype in (("fp32 (TF32 convs)", None), ("bf16 autocast", torch.bfloat16),
                        ("fp16 autocast", torch.float16)):
        for cl in (False, True):
            fmt = torch.channels_last if cl else torch.contiguous_format
            net.to(memory_format=fmt)
            xin = x.contiguous(memory_format=fmt)
            ctx = (torch.autocast(dev.type, dtype=dtype) if dtype is not None
                   else torch.autocast(dev.type, enabled=False))
            with ctx:
                net(xin)
                _sync(dev)
                t = time.perf_counter()
                for _ in range(5):
                    net(xin)
                _sync(dev)
            mps = 5 * x.numel() / (time.perf_counter() - t) / 1e6
            print(f"| {name} | {'channels-last' if cl else 'NCHW'} | {mps:.1f} |", flush=True)


def pipeline_table(frames, dev, width, depth):
    model = api.train_stack(frames[:4], steps=1, width=width, depth=depth, device=dev,
                            progress=False, floor="none", val_fraction=0, warm_start="none",
                            context=0, compile=False)
    stack = np.tile(frames, (3, 1, 1))[:50]
    print(f"\n| Denoiser.denoise {stack.shape} {stack.dtype} | views | Mpx/s | seconds |")
    print("|---|---|---|---|")
    model.denoise(stack[:2], device=dev)  # warm-up
    for tta in (False, "auto"):
        _sync(dev)
        t = time.perf_counter()
        model.denoise(stack, device=dev, tta=tta)
        _sync(dev)
        sec = time.perf_counter() - t
        views = model.plan((50, 1, 512, 512), "visible", dev, tta=tta)[2]
        print(f"| {tta} | {views} | {stack.size / 1e6 / sec:.1f} | {sec:.2f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--parts", default="steps,profile,net,pipeline")
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    width, depth, patch = (48, 5, 128) if gpu else (24, 4, 64)
    parts = a.parts.split(",")
    frames, _ = fmdd_like_stack(20 if gpu else 4, (512, 512))
    print(f"probe on {dev}, torch {torch.__version__}, U-Net {width}×{depth}, patch {patch}")
    if "steps" in parts:
        steps_table(frames, dev, width, depth, patch, a.steps)
    if "profile" in parts:
        profile_table(frames, dev, width, depth, patch)
    if "net" in parts:
        net_table(dev, width, depth, *((16, 512) if gpu else (2, 128)))
    if "pipeline" in parts:
        pipeline_table(frames, dev, width, depth)


if __name__ == "__main__":
    main()
