"""The CUDA path, on a real GPU: mixed precision (bf16, and fp16 with loss scaling),
torch.compile against eager, recovery from a real out-of-memory, large frames and stacks, every
trainable method, a CUDA model used on the CPU, stack context, OME-Zarr output through a GPU
worker, and the Train panel's (Qt-free) training thread.

Skipped without a CUDA GPU. ``B2U_TEST_DEVICE=cpu`` runs the device-independent tests on the
CPU (smaller sizes) to check their logic before spending GPU time; those that mean something
only on CUDA skip there, saying why.
"""

import math
import os

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.device import amp_dtype
from napari_b2u.methods import get_method, method_names
from napari_b2u.sample_data import fmdd_like_stack

pytestmark = pytest.mark.gpu

#: every method that trains a network (the classical ones only calibrate)
TRAINABLE = [m for m in method_names() if get_method(m).trainable]


@pytest.fixture(scope="module")
def dev():
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("B2U_TEST_DEVICE", "").lower() == "cpu":
        return "cpu"
    pytest.skip("needs a CUDA GPU")


def cuda_only(dev, why):
    if dev != "cuda":
        pytest.skip(f"CUDA only (dry run on {dev}): {why}")


def small(dev, **kw):
    """A short run's settings, the same on every device (the error thresholds were measured
    with them: 150 steps take the MSE to ~0.3 of the input's on the CPU): a tiny network and
    the CPU preset's learning rate; no classical floor (the network itself is tested), no warm
    start (the CPU preset's pretrained weights would make the devices' runs unlike), the loss
    read every step, each frame alone."""
    return {"width": 16, "depth": 2, "patch_size": 32, "batch_size": 4, "lr": 1e-3,
            "device": dev, "compile": False, "floor": "none", "warm_start": "none",
            "log_every": 1, "context": 0, "seed": 0, **kw}


def noisy_stack(dev, n=8, seed=3, side=64):
    """(n, side, side) uint8 noisy frames of one scene and the clean image (0..255)."""
    return fmdd_like_stack(n, (side, side), seed=seed)


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


def denoised_mse(model, noisy, clean, dev) -> float:
    out = model.denoise(noisy, dtype="float32", tta=False, device=dev)
    assert np.isfinite(out).all()
    return mse(out, clean)


def train(stack, dev, **kw):
    """Train through api.make_trainer (the trainer stays inspectable): ``(model, trainer,
    events)``."""
    tr = api.make_trainer(stack, **small(dev, **kw))
    tr.preview.on = False  # nothing shows previews here
    events = list(tr)
    return tr.result(), tr, events


@pytest.fixture(scope="module")
def trained(dev):
    """A briefly trained B2U model and its training stack (for the inference tests)."""
    noisy, clean = noisy_stack(dev)
    model = api.train_stack(noisy, steps=5, progress=False, **small(dev))
    return model, noisy, clean


# ---- 1. bf16 autocast ------------------------------------------------------------------------
def test_bf16_training_lowers_the_error_like_fp32(dev):
    noisy, clean = noisy_stack(dev)
    steps, base, got = 150, mse(noisy, clean), {}
    for amp in (True, False):
        # the last weights, all frames trained on: no model choice to blur the comparison
        model, tr, events = train(noisy, dev, steps=steps, amp=amp, keep="last",
                                  val_fraction=0.0)
        assert tr.step == steps
        assert all(math.isfinite(e.loss) for e in events if e.loss is not None)
        got[amp] = denoised_mse(model, noisy, clean, dev)
        # the dtype autocast actually ran with (None: fp32); bf16 on any recent GPU
        want = amp_dtype(torch.device(dev)) if amp else None
        assert tr.amp is want
        assert model.info["train_config"]["amp"] is (want is not None)
    if dev == "cuda":
        assert amp_dtype(torch.device("cuda")) is torch.bfloat16  # an H100/H200 has bf16
    for amp, err in got.items():
        assert err < 0.6 * base, (amp, err, base)
    assert abs(got[True] - got[False]) <= 0.2 * got[False], got


# ---- 2. torch.compile ------------------------------------------------------------------------
def test_compiled_training_matches_eager(dev):
    """The same seed, data and first batches: the compiled step computes the eager step's loss
    (fp32 on both, so only the kernels differ). Few steps, stopped before the end phase (its
    passes in eval mode would compile again)."""
    if dev != "cuda":
        pytest.skip("torch.compile is the CUDA preset's (the CPU preset leaves it off); on 2 "
                    "CPU cores inductor takes over a minute")
    noisy, _ = noisy_stack(dev, n=4)
    losses, trainers = {}, {}
    for compiled in (False, True):
        tr = api.make_trainer(noisy, **small(dev, steps=50, amp=False, compile=compiled,
                                             val_fraction=0.0))
        tr.preview.on = False
        it = iter(tr)
        losses[compiled] = []
        for ev in it:
            losses[compiled].append(ev.loss)
            if ev.step >= 4:
                break
        it.close()  # keeps the weights so far
        trainers[compiled] = tr
    tr = trainers[True]
    assert tr.steps.compiled, tr.messages  # compile did not fall back to eager
    assert not any("torch.compile failed" in m for m in tr.messages), tr.messages
    eager, comp = np.array(losses[False]), np.array(losses[True])
    assert len(eager) == len(comp) == 4 and np.isfinite(comp).all()
    np.testing.assert_allclose(comp[0], eager[0], rtol=1e-3)  # the same weights and batch
    np.testing.assert_allclose(comp, eager, rtol=3e-2)  # a few updates later, still together


# ---- 3. fp16 and loss scaling ----------------------------------------------------------------
def test_fp16_training_uses_the_grad_scaler(dev, monkeypatch):
    cuda_only(dev, "fp16 autocast with a GradScaler is the path of GPUs without bf16")
    import napari_b2u.train.trainer as trainer_mod

    # a GPU without bf16 (a V100, a T4): the trainer asks the device module for its dtype
    monkeypatch.setattr(trainer_mod, "amp_dtype", lambda device: torch.float16)
    updates = []
    real_update = torch.amp.GradScaler.update

    def counting_update(self, *a, **k):
        updates.append(1)
        return real_update(self, *a, **k)

    monkeypatch.setattr(torch.amp.GradScaler, "update", counting_update)
    noisy, clean = noisy_stack(dev)
    steps = 150
    model, tr, events = train(noisy, dev, steps=steps, amp=True, keep="last", val_fraction=0.0)
    assert tr.amp is torch.float16 and tr.steps.scaler is not None
    assert len(updates) >= steps  # every step went through the scaler
    assert math.isfinite(tr.steps.scaler.get_scale()) and tr.steps.scaler.get_scale() > 0
    assert all(math.isfinite(e.loss) for e in events if e.loss is not None)
    assert not any("NaN" in m for m in tr.messages), tr.messages
    assert denoised_mse(model, noisy, clean, dev) < 0.6 * mse(noisy, clean)


# ---- 4. a real out-of-memory -----------------------------------------------------------------
class Ballast:
    """Holds most of the GPU's free memory, leaving ``leave`` bytes (1 GiB pieces)."""

    def __init__(self):
        self.held = []

    def fill(self, leave: int) -> int:
        torch.cuda.empty_cache()
        piece = 2**30
        while True:
            free = torch.cuda.mem_get_info()[0]
            want = free - leave
            if want <= 2**21:
                return free
            size = min(piece, want) // 2**21 * 2**21
            self.held.append(torch.empty(size, dtype=torch.uint8, device="cuda"))

    def free(self):
        self.held.clear()
        torch.cuda.empty_cache()


def test_out_of_memory_shrinks_and_finishes(dev):
    cuda_only(dev, "a real out-of-memory needs a GPU's fixed memory")
    rng = np.random.default_rng(0)
    stack = np.clip(rng.normal(100, 20, (4, 512, 512)), 0, 255).astype(np.uint8)
    opts = dict(width=48, depth=4, patch_size=256, amp=True, val_fraction=0.0, keep="last")
    # what training at batch 2 takes, so that what is left fits it (measured, not guessed)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_reserved()
    train(stack, dev, steps=2, batch_size=2, **opts)
    need2 = torch.cuda.max_memory_reserved() - before
    assert need2 > 0
    leave = 3 * need2 + 512 * 2**20  # batch 2 fits with room; batch 64 is ~30x its activations
    ballast = Ballast()
    try:
        left = ballast.fill(leave)
        assert left < leave + 2**30, (left, leave)
        model, tr, events = train(stack, dev, steps=3, batch_size=64, **opts)
        assert tr.step == 3
        assert any("out of GPU memory" in m for m in tr.messages), tr.messages
        assert any(e.message and "out of GPU memory" in e.message for e in events)
        assert 1 <= tr.batch_size < 64 and model.info["batch_size"] == tr.batch_size
        # denoising: a batch of 2048-px tiles one of whose fp32 activations alone is larger
        # than what is left: the batch shrinks, then (if need be) the tile
        n = leave // (2048**2 * 48 * 4) + 2
        frames = np.tile(stack[:1], (n, 4, 4))
        with pytest.warns(UserWarning, match="out of memory: retrying"):
            out = model.denoise(frames, dtype="float32", device=dev, tile_size=2048,
                                batch_size=n, tta=False)
        assert out.shape == frames.shape and np.isfinite(out).all()
    finally:
        ballast.free()
    # the GPU is usable again afterwards
    assert model.denoise(stack[:1], device=dev, tta=False).shape == (1, 512, 512)


# ---- 5. large frames and stacks --------------------------------------------------------------
def test_large_frame_and_long_stack(dev, trained):
    model, noisy, _ = trained
    side, stack_shape = (4096, (50, 512, 512)) if dev == "cuda" else (1024, (4, 256, 256))
    reps = side // noisy.shape[-1]
    frame = np.tile(noisy[0], (reps, reps)).astype(np.uint16)  # the training data's range
    out = model.denoise(frame, dtype="float32", device=dev)  # tiled, ensembled ("auto")
    assert out.shape == frame.shape and out.dtype == np.float32 and np.isfinite(out).all()
    n, h, w = stack_shape
    stack = np.tile(noisy, (math.ceil(n / len(noisy)), h // noisy.shape[1],
                            w // noisy.shape[2]))[:n]
    out = model.denoise(stack, device=dev)
    assert out.shape == stack.shape and out.dtype == np.uint8  # the input's dtype
    # frames are denoised independently: the first frame alone gives the same pixels
    one = model.denoise(stack[:1], device=dev)
    np.testing.assert_allclose(one[0].astype(int), out[0].astype(int), atol=1)


# ---- 6. every trainable method ---------------------------------------------------------------
@pytest.mark.parametrize("method", TRAINABLE)
def test_every_trainable_method_trains_and_denoises(dev, method):
    noisy, _ = noisy_stack(dev, n=6)
    model, tr, events = train(noisy, dev, method=method, steps=5)
    assert tr.step == 5 and str(tr.device).startswith(dev)
    if dev == "cuda":
        assert tr.amp is torch.bfloat16  # the CUDA preset trains in bf16
    assert all(math.isfinite(e.loss) for e in events if e.loss is not None)
    for output in model.outputs:
        out = model.denoise(noisy[:2], output=output, dtype="float32", device=dev, tta=2)
        assert out.shape == noisy[:2].shape and np.isfinite(out).all(), output


# ---- 7. trained on the GPU, used on the CPU --------------------------------------------------
def test_a_gpu_model_loads_and_denoises_on_the_cpu(dev, trained, tmp_path):
    model, noisy, _ = trained
    assert model.info["device"].startswith(dev)
    path = model.save(tmp_path / "gpu.b2u")
    loaded = api.load(path)
    assert all(t.device.type == "cpu" for t in loaded.state_dict.values())
    on_dev = model.denoise(noisy[:3], dtype="float32", device=dev, tta=False)
    on_cpu = loaded.denoise(noisy[:3], dtype="float32", device="cpu", tta=False)
    # TF32 convolutions on the GPU: close, not identical
    diff = np.abs(on_cpu - on_dev)
    assert diff.max() < 0.02 * 255 and diff.mean() < 0.002 * 255, (diff.max(), diff.mean())


# ---- 8. stack context ------------------------------------------------------------------------
def test_stack_context_trains_and_denoises(dev):
    noisy, _ = noisy_stack(dev, n=6)
    model, tr, _ = train(noisy, dev, steps=10, context=1, axes="TYX")
    assert model.context == {"frames": 1, "axis": "T"}
    assert model.model_config["in_channels"] == 3
    out = model.denoise(noisy, axes="TYX", dtype="float32", device=dev, tta=False)
    assert out.shape == noisy.shape and np.isfinite(out).all()
    # each frame gets its own neighbours however the stack is cut into batches (bit-equal on
    # the CPU; other batch sizes may take other cuDNN kernels on a GPU)
    one = model.denoise(noisy, axes="TYX", dtype="float32", device=dev, tta=False,
                        batch_size=1)
    assert np.abs(one - out).max() < 0.5 and np.abs(one - out).mean() < 0.05


# ---- 9. OME-Zarr output ----------------------------------------------------------------------
def _zarr_stack():
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (150, 170)).astype(np.float64)
    return np.clip(base + rng.normal(0, 20, (5, 150, 170)), 0, 255).astype(np.uint8)


def close(got, ref):
    """The in-memory pixels (0..255): bit-equal on the CPU (test_bigdata.py); on a GPU the same
    tiles and batches may still meet other cuDNN kernels (TF32) — a misplaced tile or block
    would be off by whole grey levels."""
    diff = np.abs(got.astype(np.float64) - ref)
    assert diff.max() < 0.5 and diff.mean() < 0.02, (diff.max(), diff.mean())


def test_ome_zarr_output_on_the_device_equals_in_memory(dev, trained, tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("dask.array")
    pytest.importorskip("ome_zarr")
    model, _, _ = trained
    x = _zarr_stack()
    opts = dict(tile_size=48, tile_overlap=8, device=dev, tta=False, batch_size=2)
    ref = model.denoise(x, dtype="float32", **opts)
    res = model.denoise_to_zarr(x, tmp_path / "o.ome.zarr", dtype="float32", chunk=32,
                                block_pixels=40 * 40 * 2, **opts)
    got = res.open()[0].compute()
    assert got.shape == ref.shape and got.dtype == np.float32
    close(got, ref)


def test_ome_zarr_through_one_worker_per_gpu(dev, trained, tmp_path):
    """``workers=1``: on a GPU machine, a worker process that sees only its GPU (on the CPU
    dry run, one in-process worker)."""
    pytest.importorskip("zarr")
    pytest.importorskip("dask.array")
    pytest.importorskip("ome_zarr")
    pytest.importorskip("distributed")
    from napari_b2u.denoise.cluster import visible_gpus

    model, _, _ = trained
    assert bool(visible_gpus()) is (dev == "cuda")
    x = _zarr_stack()
    opts = dict(tile_size=48, tile_overlap=8, device=dev, tta=False, batch_size=2)
    ref = model.denoise(x, dtype="float32", **opts)
    res = model.denoise_to_zarr(x, tmp_path / "w.ome.zarr", dtype="float32", workers=1,
                                processes=dev == "cuda", **opts)
    close(res.open()[0].compute(), ref)


# ---- 10. the Train panel's training thread ---------------------------------------------------
def test_train_panel_job_runs_and_stops_on_the_device(dev):
    """The generator the Train widget's worker runs (Qt-free): it reports the device, trains,
    and a stop keeps the model trained so far."""
    from napari_b2u._widgets._train_job import Control, train_job
    from napari_b2u.denoise.denoiser import Denoiser

    noisy, _ = noisy_stack(dev, n=6)
    kwargs = small(dev, steps=10_000)
    ctl = Control(preview=(0, None))
    job = train_job(ctl, noisy, "TYX", None, kwargs)
    packets = []
    try:
        while True:
            p = next(job)
            packets.append(p)
            assert p.kind != "error", p.error
            if p.kind == "progress" and p.event.step >= 5 and not ctl.stop_requested.is_set():
                ctl.stop()
    except StopIteration as stop:
        result = stop.value
    ready = packets[0]
    assert ready.kind == "ready" and ready.info.device.startswith(dev)
    assert ready.info.compile is False
    assert packets[-1].event.done and packets[-1].event.stopped
    assert isinstance(result, Denoiser)
    assert 5 <= result.info["steps"] < 10_000
    assert ctl.trainer is None  # the job let go of the trainer
    rows = [r for p in packets for r in p.rows]
    assert rows and all(math.isfinite(r[1]["loss"]) for r in rows if r[1])
