"""Training and inference speed: this project's engine against the published training loop.

"fast" is napari-b2u's Trainer (on CUDA: bf16 autocast, channels_last, torch.compile, fused
Adam; on-device crops; one vectorized masking op). "reference" re-implements the published B2U
loop literally: fp32, a Python loop over the s² cell positions building each masked copy with
its own mask and conv, host-side numpy crops moved to the device each step, the same U-Net.
Both run in the same process on the same data so the ratio holds.

    python benchmarks/speed.py                       # CPU: the CPU preset network, small sizes
    python benchmarks/speed.py --device cuda --full  # GPU: 48-wide U-Net, FMDD-size stacks
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_b2u import api  # noqa: E402
from napari_b2u.device import device_info, resolve_device  # noqa: E402
from napari_b2u.losses import lambda_schedule, lr_factor  # noqa: E402
from napari_b2u.methods import get_method, method_names  # noqa: E402
from napari_b2u.metrics import evaluate  # noqa: E402
from napari_b2u.models import UNet  # noqa: E402
from napari_b2u.sample_data import fmdd_like_stack  # noqa: E402

#: dense bf16 tensor-core peak, for "how far from the GPU's limit"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# ------------------------------------------------------------------------------------------
# FLOPs


def conv_flops(model: torch.nn.Module, shape) -> int:
    """Multiply-adds x 2 of every Conv2d for one forward pass of ``shape`` (B, C, H, W)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += 2 * k * out.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(shape, device=next(model.parameters()).device))
    for h in hs:
        h.remove()
    return total


def b2u_step_flops(model, batch, patch, cells, channels=1) -> int:
    """One B2U step: forward+backward (≈3 forwards) on B·s² masked copies, one no-grad
    forward on the B raw images."""
    f1 = conv_flops(model, (1, channels, patch, patch))
    return f1 * (3 * batch * cells**2 + batch)


# ------------------------------------------------------------------------------------------
# the published training loop, literally


def _ref_generate_mask(img, width, index):
    """The reference code's mask for cell position ``index``: built per copy, on the device."""
    n, c, h, w = img.shape
    cells = n * (h // width) * (w // width)
    mask = torch.zeros(cells * width**2, dtype=torch.int64, device=img.device)
    idx_list = torch.arange(0, width**2, 1, dtype=torch.int64, device=img.device)
    rd_idx = torch.full((cells,), index, dtype=torch.int64, device=img.device)
    rd_pair_idx = idx_list[rd_idx]
    rd_pair_idx += torch.arange(0, cells * width**2, width**2, dtype=torch.int64,
                                device=img.device)
    mask[rd_pair_idx] = 1
    mask = mask.type_as(img).view(n, h // width, w // width, width**2).permute(0, 3, 1, 2)
    return F.pixel_shuffle(mask, width).type(torch.int64)  # depth_to_space


def _ref_interpolate_mask(tensor, mask, mask_inv):
    n, c, h, w = tensor.shape
    kernel = np.array([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]])[None, None]
    kernel = torch.Tensor(kernel).to(tensor.device)
    kernel = kernel / kernel.sum()
    filtered = F.conv2d(tensor.view(n * c, 1, h, w), kernel, stride=1, padding=1)
    return filtered.view_as(tensor) * mask + tensor * mask_inv


def ref_masker_train(img, width):
    n, c, h, w = img.shape
    tensors = torch.zeros((n, width**2, c, h, w), device=img.device)
    masks = torch.zeros((n, width**2, 1, h, w), device=img.device)
    for i in range(width**2):  # the per-copy Python loop
        mask = _ref_generate_mask(img, width, i)
        mask_inv = torch.ones(mask.shape).to(img.device) - mask
        tensors[:, i, ...] = _ref_interpolate_mask(img, mask, mask_inv)
        masks[:, i, ...] = mask
    return tensors.view(-1, c, h, w), masks.view(-1, 1, h, w)


class ReferenceTrainer:
    """The published loop: host-side random crops, fp32, per-copy masking, plain Adam."""

    def __init__(self, frames: np.ndarray, device, width=48, depth=5, patch=128, batch=4,
                 cells=4, lr=1e-4, steps=1000, seed=0):
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.frames = frames.astype(np.float32) / 255.0  # (N, H, W), 8-bit / 255
        self.device, self.patch, self.batch, self.cells = device, patch, batch, cells
        self.net = UNet(1, 1, width, depth).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=1e-8)
        self.lr, self.steps, self.step = lr, steps, 0

    def _crops(self):
        n, h, w = self.frames.shape
        out = np.empty((self.batch, 1, self.patch, self.patch), np.float32)
        for b in range(self.batch):  # a Dataset's __getitem__ + collate, on the host
            i = self.rng.integers(n)
            y, x = self.rng.integers(h - self.patch + 1), self.rng.integers(w - self.patch + 1)
            out[b, 0] = self.frames[i, y:y + self.patch, x:x + self.patch]
        return torch.from_numpy(out).to(self.device)

    def train_step(self):
        p = self.step / self.steps
        for g in self.opt.param_groups:
            g["lr"] = self.lr * lr_factor(p)
        lam = lambda_schedule(p)
        noisy = self._crops()
        net_input, mask = ref_masker_train(noisy, self.cells)
        out = self.net(net_input)
        n, c, h, w = noisy.shape
        out = (out * mask).view(n, -1, c, h, w).sum(dim=1)
        diff = out - noisy
        with torch.no_grad():
            exp_diff = self.net(noisy) - noisy
        loss = torch.mean((diff + lam * exp_diff) ** 2) + torch.mean(diff**2)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def denoise(self, img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None].to(self.device)
        return self.net(x)[0, 0].cpu().numpy() * 255.0


# ------------------------------------------------------------------------------------------
# measurements


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
    return f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process)"


def time_fast(frames, dev, cells, width, depth, patch, batch, warmup, steps, compile_,
              method="b2u", **options):
    """ms/step of the engine, timed between two synchronized steps after warm-up. Returns
    (s/step, warm-up seconds, peak memory, FLOPs per B2U step or None for other methods)."""
    trainer = api.make_trainer(frames, axes="TYX", method=method, device=dev,
                               steps=warmup + steps, cells=cells, width=width, depth=depth,
                               patch_size=patch, batch_size=batch, val_fraction=0,
                               preview_every=0, compile=compile_, log_every=warmup + steps,
                               context=0, **options)  # the published loop is single-frame
    _reset_peak(dev)
    t_first = t0 = t1 = None
    for ev in trainer:
        if ev.step == 1:
            _sync(dev)
            t_first = time.perf_counter()
        if ev.step == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        if ev.step == warmup + steps and t1 is None:  # the last step's event (done or not)
            _sync(dev)
            t1 = time.perf_counter()
            trainer.stop()
    # FLOPs for B2U only (its step is s² + 1 forwards); the cells it really ran with
    flops = (b2u_step_flops(trainer.model, batch, patch, trainer.method.cells)
             if method == "b2u" else None)
    return (t1 - t0) / steps, t0 - t_first, _peak(dev), flops


def time_reference(frames, dev, cells, width, depth, patch, batch, warmup, steps):
    ref = ReferenceTrainer(frames, dev, width, depth, patch, batch, cells,
                           steps=warmup + steps)
    _reset_peak(dev)
    for _ in range(warmup):
        ref.train_step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        ref.train_step()
    _sync(dev)
    return (time.perf_counter() - t0) / steps, _peak(dev)


def time_to_quality(frames, clean, test, dev, cells, width, depth, patch, batch, steps,
                    every, compile_):
    """Wall time (evaluation excluded) until the visible PSNR on held-out frames is within
    0.1 dB of its final value, for the fast engine and the reference loop."""
    out = {}

    def psnr_of(fn):
        return float(np.mean([evaluate(fn(f), clean)[0] for f in test]))

    # fast
    trainer = api.make_trainer(frames, axes="TYX", device=dev, steps=steps, cells=cells,
                               width=width, depth=depth, patch_size=patch, batch_size=batch,
                               val_fraction=0, preview_every=0, compile=compile_, context=0)
    norm = trainer.data.normalization
    curve, train_t, t = [], 0.0, time.perf_counter()
    for ev in trainer:
        if not ev.done and (ev.step % every == 0):
            _sync(dev)
            train_t += time.perf_counter() - t
            model, meth = trainer.model, trainer.method

            def fn(f, model=model, meth=meth):
                x = torch.from_numpy(norm.apply(f[None, None].astype(np.float32))).to(dev)
                with torch.no_grad():
                    y = meth.predict(model, x, "visible").float().cpu().numpy()
                return norm.invert(y)[0, 0]

            curve.append((ev.step, train_t, psnr_of(fn)))
            t = time.perf_counter()
    out["fast"] = curve

    def reference(lr):
        ref = ReferenceTrainer(frames, dev, width, depth, patch, batch, cells, lr=lr,
                               steps=steps)
        curve, train_t = [], 0.0
        for s in range(1, steps + 1):
            t = time.perf_counter()
            ref.train_step()
            if s % every == 0:
                _sync(dev)
                train_t += time.perf_counter() - t
                curve.append((s, train_t, psnr_of(ref.denoise)))
            else:
                train_t += time.perf_counter() - t
        return curve

    # the published loop with its own lr, and with the fast path's lr: the second isolates
    # the engine's speed from the learning-rate choice
    out["reference"] = reference(1e-4)
    if trainer.base_lr != 1e-4:
        out[f"reference, lr {trainer.base_lr:g}"] = reference(trainer.base_lr)
    res = {}
    for k, c in out.items():
        final = c[-1][2]
        reach = next(tt for _, tt, p in c if p >= final - 0.1)
        res[k] = (final, reach, c[-1][1])
    return res


def time_inference(dev, width, depth, shape, output="visible", tile_size=None):
    noisy = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    model = api.train_stack(noisy[:1, :128, :128], steps=1, device=dev, width=width,
                            depth=depth, patch_size=64, progress=False, val_fraction=0,
                            compile=False, context=0)
    model.denoise(noisy[:1, :256, :256], device=dev)  # warm-up
    _reset_peak(dev)
    _sync(dev)
    t = time.perf_counter()
    model.denoise(noisy, device=dev, output=output, tile_size=tile_size)
    _sync(dev)
    sec = time.perf_counter() - t
    return noisy.size / 1e6 / sec, sec, _peak(dev)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--full", action="store_true",
                    help="48-wide 5-level U-Net, patch 128, FMDD-size inference stacks")
    ap.add_argument("--steps", type=int, help="timed steps per configuration")
    ap.add_argument("--ttq-steps", type=int, help="steps of the time-to-quality runs (0: skip)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--parts", default="train,methods,ttq,inference,precision",
                    help="which tables: train (fast vs reference), methods, ttq, inference, "
                         "precision (mixed precision and memory layout of the engine)")
    a = ap.parse_args(argv)
    parts = set(a.parts.split(","))
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    full = a.full or gpu
    width, depth, patch = (48, 5, 128) if full else (24, 4, 64)
    batch = 4
    steps = a.steps or (200 if gpu else 10)
    warmup = 30 if gpu else 3
    compile_ = gpu and not a.no_compile
    info = device_info(dev)
    print(f"speed benchmark on {info.describe()}, torch {torch.__version__}; U-Net width "
          f"{width} depth {depth}, batch {batch}, patch {patch}; compile {compile_}")
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in info.name), None)

    frames, clean = fmdd_like_stack(8 if not full else 20, (256, 256) if not full else (512, 512))
    if dev.type != "cuda":
        print("(peak memory on CPU: the process's maximum resident size so far, not per row)")
    if "train" in parts:
        train_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_, peak)
    if "methods" in parts:
        methods_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_)
    ttq = a.ttq_steps if a.ttq_steps is not None else (2000 if gpu else 60)
    if ttq and "ttq" in parts:
        ttq_table(frames, clean, dev, width, depth, patch, batch, ttq, compile_)
    if "inference" in parts:
        inference_table(dev, width, depth, full)
    if "precision" in parts:
        precision_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_)


def precision_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_):
    """The engine's training step with and without mixed precision (bf16 where the device
    computes it natively: CUDA, CPUs with AVX512-BF16/AMX) and channels-last memory; then the
    inference of one network in both layouts (always fp32)."""
    from napari_b2u.device import amp_dtype

    print(f"\nmixed precision on this device: {amp_dtype(dev) or 'not available (fp32)'}")
    print("| amp | channels-last | ms/step | steps/s |")
    print("|---|---|---|---|")
    for amp in (False, True):
        if amp and amp_dtype(dev) is None:
            continue
        for cl in (False, True):
            sec, _, _, _ = time_fast(frames, dev, 2, width, depth, patch, batch, warmup,
                                     steps * 3, compile_, amp=amp, channels_last=cl)
            print(f"| {amp} | {cl} | {sec * 1e3:.1f} | {1 / sec:.1f} |")
    model = api.train_stack(frames, steps=1, width=width, depth=depth, patch_size=patch,
                            device=dev, progress=False, floor="none", val_fraction=0,
                            warm_start="none", context=0)
    net = model.model(dev)
    x = torch.from_numpy(frames[:4, None].astype(np.float32) / 255).to(dev)
    print("\n| inference layout | Mpx/s (one view, fp32) |")
    print("|---|---|")
    for cl in (False, True):
        net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xin = x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        with torch.no_grad():
            net(xin)  # warm-up
            _sync(dev)
            t = time.perf_counter()
            for _ in range(3):
                net(xin)
            _sync(dev)
        print(f"| {'channels-last' if cl else 'NCHW'} | "
              f"{3 * x.numel() / (time.perf_counter() - t) / 1e6:.2f} |")


def train_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_, peak):
    print("\n| mode | s | ms/step | patches/s | peak memory | GFLOP/step | achieved TFLOP/s |"
          + (" % of bf16 peak |" if peak else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if peak else ""))
    results = {}
    for cells in (4, 2):
        fast, compile_s, mem_f, flops = time_fast(frames, dev, cells, width, depth, patch,
                                                  batch, warmup, steps, compile_)
        ref, mem_r = time_reference(frames, dev, cells, width, depth, patch, batch, warmup,
                                    steps)
        results[cells] = (fast, ref)
        for mode, sec, mem in (("reference", ref, mem_r), ("fast", fast, mem_f)):
            tf = flops / sec / 1e12
            print(f"| {mode} | {cells} | {sec * 1e3:.1f} | {batch / sec:.1f} | {mem} | "
                  f"{flops / 1e9:.1f} | {tf:.3f} |" + (f" {100 * tf / peak:.1f} |" if peak
                                                        else ""))
    for cells, (fast, ref) in results.items():
        print(f"\ns = {cells}: reference / fast = {ref / fast:.2f}x fewer ms per step")



def methods_table(frames, dev, width, depth, patch, batch, warmup, steps, compile_):
    # every method through the same engine, same data, network width and patch (each with its
    # own network: D-BSN is its dilated blind-spot net; cells only matter to b2u/b2s)
    print("\n| method | ms/step | patches/s | peak memory |")
    print("|---|---|---|---|")
    for m in method_names():
        if not get_method(m).trainable:  # the classical filters have no training step
            continue
        sec, _, mem, _ = time_fast(frames, dev, None, width, depth, patch, batch, warmup,
                                   steps, compile_, method=m)
        print(f"| {m} | {sec * 1e3:.1f} | {batch / sec:.1f} | {mem} |")



def ttq_table(frames, clean, dev, width, depth, patch, batch, ttq, compile_):
    test, train = frames[-2:], frames[:-2]
    r = time_to_quality(train, clean, test, dev, 2, width, depth, patch, batch, ttq,
                        max(1, ttq // 20), compile_)
    print(f"\ntime to quality (s = 2, {ttq} steps, visible PSNR on 2 held-out frames):")
    print("| mode | final PSNR (dB) | time to within 0.1 dB (s) | total train time (s) |")
    print("|---|---|---|---|")
    for k, (final, reach, total) in r.items():
        print(f"| {k} | {final:.2f} | {reach:.1f} | {total:.1f} |")


def inference_table(dev, width, depth, full):
    # the 2048² frames tiled (with overlap), as frames that do not fit are denoised: on CUDA
    # forced to 1024² tiles (its default tile is 2048); on CPU the default tiles (1024², and
    # 448² for the weighted output so that a cancel waits at most one ~1.5 s tile)
    shapes = ([((50, 512, 512), None), ((10, 2048, 2048), 1024)] if full
              else [((4, 512, 512), None), ((1, 2048, 2048), None)])
    print("\n| inference stack | tiles | output | MP/s | seconds | peak memory |")
    print("|---|---|---|---|---|---|")
    for shape, tile in shapes:
        for output in ("visible", "weighted"):
            mps, sec, mem = time_inference(dev, width, depth, shape, output, tile)
            tiles = (f"{tile}² + overlap" if tile else
                     "default tiles + overlap" if shape[-1] > 1024 else "whole frames")
            print(f"| {shape} | {tiles} | {output} | {mps:.2f} | {sec:.1f} | {mem} |")


if __name__ == "__main__":
    main()
