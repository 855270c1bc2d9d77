"""Pretrain the generic fluorescence model that ``warm_start="pretrained"`` starts from.

Supervised training on the project's own synthetic generator (napari_b2u.sample_data:
``random_scene`` — cells, filaments, actin-like bundles, mitochondria-like worms, membranes,
nuclei, puncta, textures at random density, PSF and background — and ``random_noisy_batch`` —
Poisson–Gaussian noise from 1.5 to 300 photons at full scale, read noise, a random 8-bit export
with clipping, 15 % of samples with noise correlated along X or Y). No real image is used, so
every real image scores warm start as unseen data, and the weights carry no third-party licence.

The network learns f(y) ≈ clean on the visible input; on a fraction of the steps also the blind
branch h(f(Ωy)) of B2U (s = 2), so that fine-tuning with the re-visible loss starts from a
network whose two branches agree. The result is a napari-b2u model file (method b2u, 8-bit
normalization) written into the package:

    python benchmarks/pretrain.py --width 24 --depth 4 --minutes 90        # the CPU network
    python benchmarks/pretrain.py --width 48 --depth 5 --minutes 240       # the GPU network
    python benchmarks/pretrain.py ... --eval ../shared/data/real           # report only

``--eval`` only reports PSNR on real noisy/ground-truth pairs after training (nothing is chosen
by it).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import napari_b2u
from napari_b2u.data import Normalization
from napari_b2u.denoise.denoiser import Denoiser
from napari_b2u.device import amp_dtype
from napari_b2u.masking import global_mask, mask_mapper
from napari_b2u.methods import get_method
from napari_b2u.sample_data import random_noisy_batch, random_scene

PACKAGE_DIR = Path(napari_b2u.__file__).resolve().parent / "pretrained"


def train(width: int, depth: int, minutes: float, steps: int | None, patch: int, batch: int,
          lr: float, pool_size: int, blind_every: int, seed: int, log=print, init=None):
    rng = np.random.default_rng(seed)
    side = patch + patch // 2
    t = time.perf_counter()
    pool = np.stack([random_scene((side, side), rng) for _ in range(pool_size)])
    log(f"scene pool: {pool_size} scenes of {side}² in {time.perf_counter() - t:.0f} s")
    method = get_method("b2u")
    config = method.model_config(1, width, depth)
    torch.manual_seed(seed)
    net = method.build(config)
    if init is not None:  # go on from an earlier pretrained model (a Denoiser) of this network
        if init.model_config != config:
            raise SystemExit(f"--init is a {init.model_config} network, not {config}")
        net.load_state_dict(init.state_dict)
    # the CPU preset's speed-ups: bf16 where the CPU computes it natively, channels-last
    amp = amp_dtype(torch.device("cpu"))
    net.to(memory_format=torch.channels_last)
    log(f"mixed precision: {amp or 'off (fp32)'}; channels-last")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    budget = minutes * 60.0
    t0, step, acc = time.perf_counter(), 0, []
    while True:
        elapsed = time.perf_counter() - t0
        frac = min(1.0, max(step / steps if steps else 0.0, elapsed / budget if minutes else 0.0))
        if frac >= 1.0:
            break
        if step % 200 == 0:  # renew a tenth of the pool: more scenes than memory holds
            k = max(1, pool_size // 10)
            for i in rng.choice(pool_size, k, replace=False):
                pool[i] = random_scene((side, side), rng)
        idx = rng.integers(0, pool_size, batch)
        y0, x0 = rng.integers(0, side - patch + 1, (2, batch))
        crops = np.stack([pool[i, a:a + patch, b:b + patch] for i, a, b in zip(idx, y0, x0)])
        rot = rng.integers(0, 4)
        crops = np.rot90(crops, rot, axes=(1, 2))
        if rng.random() < 0.5:
            crops = crops[:, :, ::-1]
        noisy, target = random_noisy_batch(np.ascontiguousarray(crops), rng)
        y = torch.from_numpy(noisy)[:, None].contiguous(memory_format=torch.channels_last)
        x = torch.from_numpy(target)[:, None]
        for g in opt.param_groups:  # cosine from lr to lr / 10
            g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = torch.mean((net(y).float() - x) ** 2)
            if blind_every and step % blind_every == 0:
                masked = global_mask(y, 2).contiguous(memory_format=torch.channels_last)
                blind = mask_mapper(net(masked).float(), 2)
                loss = loss + torch.mean((blind - x) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc.append(float(loss.detach()))
        if step % 1000 == 0:
            log(f"step {step}: loss {np.mean(acc):.3g}, {elapsed / 60:.1f} min, "
                f"{step / max(elapsed, 1e-9):.1f} steps/s")
            acc = []
    return net, config, step, time.perf_counter() - t0


def evaluate(net, root: Path, log=print) -> dict:
    """PSNR after the affine fit of the benchmark on the real pairs and a few W2S frames."""
    import tifffile
    from real import affine_psnr  # benchmarks/real.py

    files = sorted((root / "pairs").glob("*_noisy.tif")) + sorted(
        (root / "w2s" / "noisy").glob("w2s_00[1-3]_ch0.tif"))
    out = {}
    net.eval()
    with torch.no_grad():
        for f in files:
            gt_path = (f.with_name(f.name.replace("_noisy", "_gt")) if "pairs" in f.parts
                       else root / "w2s" / "gt" / f.name)
            noisy, gt = tifffile.imread(f), tifffile.imread(gt_path)
            x = torch.from_numpy(noisy.astype(np.float32) / 255)[None, None]
            den = get_method("b2u").run(net, x)[0, 0].numpy()
            out[f.stem] = round(affine_psnr(den, gt), 2)
    log(f"real-data PSNR of the pretrained network alone (not used for any choice): {out}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--minutes", type=float, default=90.0)
    p.add_argument("--steps", type=int, help="stop after this many steps (else --minutes)")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=1500, help="scenes kept in memory")
    p.add_argument("--blind-every", type=int, default=4,
                   help="supervise the blind branch too on every N-th step (0: never)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="start from this pretrained model file (same "
                   "network) instead of random weights")
    p.add_argument("--out", help="model file (default: the package's pretrained/ folder)")
    p.add_argument("--eval", type=Path, help="report PSNR on this real-data folder afterwards")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = datetime.datetime.now()
    start = Denoiser.load(a.init) if a.init else None
    net, config, steps, seconds = train(a.width, a.depth, a.minutes if not a.steps else 0,
                                        a.steps, a.patch, a.batch, a.lr, a.pool, a.blind_every,
                                        a.seed, init=start)
    command = "python benchmarks/pretrain.py " + " ".join(sys.argv[1:] if argv is None
                                                          else argv)
    before = start.info if start is not None else {}
    total = steps + int(before.get("steps", 0))  # continued: the earlier run's steps too
    desc = (f"napari-b2u generic fluorescence model (U-Net {a.width} wide, {a.depth} levels), "
            f"supervised on synthetic scenes, {total} steps")
    info = {"description": desc, "steps": total, "seconds": round(seconds), "command": command,
            "date": t_start.date().isoformat(), "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "data": "napari_b2u.sample_data.random_scene + "
            "random_noisy_batch (synthetic only; no real images)",
            "chosen": "last", "axes": "YX", "split": "synthetic, no validation"}
    if a.init:
        info["continued_from"] = {k: before.get(k) for k in ("description", "command", "date",
                                                              "steps", "seconds")}
    model = Denoiser("b2u", dict(get_method("b2u").params), config,
                     {k: v.detach().float().cpu() for k, v in net.state_dict().items()},
                     Normalization([0.0], [255.0], mode="range", source_dtype="uint8"), info)
    out = Path(a.out) if a.out else PACKAGE_DIR / f"generic_unet_w{a.width}_d{a.depth}.b2u"
    model.save(out)
    print(f"wrote {out}: {steps} steps in {seconds / 60:.1f} min ({command})")
    if a.eval:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        evaluate(net, a.eval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
