import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.config import TrainConfig
from napari_b2u.device import cpu_bf16_native
from napari_b2u.train.crops import CropSampler
from napari_b2u.train.trainer import Trainer

from .conftest import TINY, TINY_T, mean_psnr


def test_short_training_raises_psnr(small_stack):
    """Observed on 2 CPU cores: 28.3 -> 34.3 dB (+6.1 dB) in 120 tiny-net steps (4.5 s);
    assert a safe +4 dB."""
    noisy, clean = small_stack
    before = mean_psnr(noisy, clean)
    model = api.train_stack(noisy, steps=120, lr=3e-3, seed=0, **TINY)
    after = mean_psnr(model.denoise(noisy, dtype="float32"), clean)
    assert after - before > 4.0, (before, after)


def test_events_report_progress_and_previews(small_stack):
    noisy, _ = small_stack
    events = []
    api.train_stack(noisy, steps=12, preview_every=5, preview_seconds=0, val_every=4,
                    callback=events.append, **TINY)
    steps = [e.step for e in events if not e.done and e.phase is None]
    assert steps == list(range(1, 13))
    # then the end phase, a stage at a time (this run's last step was validated)
    assert [e.phase for e in events if e.phase] == ["preparing to choose the model…",
                                                    "drawing the final preview…"]
    last = events[-1]
    assert last.done and not last.stopped and last.step == 12 and last.eta == 0
    assert all(e.total_steps == 12 for e in events)
    assert all(e.loss is not None and e.loss > 0 for e in events)
    assert set(events[0].terms) == {"loss", "revisible", "regularizer"}
    assert events[0].schedule == pytest.approx(2.0) == events[0].lam  # lam: the old name
    lrs = [e.lr for e in events]
    assert lrs[0] > lrs[-2]  # halved along the way
    assert [e.step for e in events if e.validated] == [4, 8, 12]
    with_prev = [e for e in events if e.previews]
    assert [e.step for e in with_prev[:2]] == [5, 10]
    pv = with_prev[0].previews
    assert pv.frame == 0 and pv.region == (0, 0, 64, 64)
    assert {"input", "blind", "visible", "weighted"} <= set(pv.images)
    assert pv.images["visible"].shape == (1, 64, 64)
    assert pv.images["visible"].dtype == np.float32
    # previews are in the input's units (0..255 here), not normalized
    assert pv.images["input"].max() > 20
    assert last.previews is not None  # final preview of the kept model


def test_no_previews_without_a_callback(small_stack, monkeypatch):
    """Nobody sees previews without a callback, so training does not compute them; with one
    (or with preview_every given) it does."""
    import napari_b2u.train.events as engine

    noisy, _ = small_stack
    calls = []
    real = engine.compute_preview
    monkeypatch.setattr(engine, "compute_preview", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = api.train_stack(noisy, steps=6, preview_seconds=0, **TINY)
    # none computed, but the interval stays in the model (a resumed run in napari previews)
    assert calls == [] and model.info["train_config"]["preview_every"] == 25
    api.train_stack(noisy, steps=6, preview_every=3, preview_seconds=0, **TINY)
    assert len(calls) == 3  # steps 3 and 6, and the kept model's
    calls.clear()
    events = []
    api.train_stack(noisy, steps=6, preview_seconds=0, callback=events.append, **TINY)
    assert calls and any(e.previews is not None for e in events)


def test_stop_midrun_returns_usable_model(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=1000, **{k: v for k, v in TINY.items()
                                                   if k != "progress"})
    for ev in trainer:
        if ev.step == 7:
            trainer.stop()
    assert ev.done and ev.stopped and ev.step == 7
    model = trainer.result()
    assert model.info["steps"] == 7
    out = model.denoise(noisy, dtype="float32")
    assert out.shape == (8, 64, 64) and np.isfinite(out).all()


def test_callback_false_stops(small_stack):
    noisy, _ = small_stack
    model = api.train_stack(noisy, steps=500, callback=lambda e: e.step < 3, **TINY)
    assert model.info["steps"] == 3


def test_closing_generator_keeps_model(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=100, width=16, depth=2, patch_size=32, device="cpu")
    it = iter(trainer)
    for _ in range(4):
        next(it)
    it.close()  # e.g. a cancelled worker
    assert trainer.result().info["steps"] == 4


def test_deterministic_with_seed(small_stack):
    noisy, _ = small_stack
    a = api.train_stack(noisy, steps=5, seed=11, **TINY)
    b = api.train_stack(noisy, steps=5, seed=11, **TINY)
    c = api.train_stack(noisy, steps=5, seed=12, **TINY)
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_time_budget(small_stack, monkeypatch):
    """max_time is the wall-clock of the whole call: training ends early enough for the end
    phase (the weights' choice, the floor, the final preview), which is cut short at the
    budget's end at the latest (tests/test_endphase.py)."""
    import types

    from napari_b2u.train import endphase, steps, trainer
    from napari_b2u.train import events as events_mod

    # the engine's clock advances 0.1 s per reading, so the test does not depend on how fast
    # this machine runs (about 3 readings per step: ~0.3 s per step)
    ticks = iter(range(10**6))
    clock = types.SimpleNamespace(perf_counter=lambda: 0.1 * next(ticks))
    for module in (trainer, steps, endphase, events_mod):
        monkeypatch.setattr(module, "time", clock)
    noisy, _ = small_stack
    events = []
    model = api.train_stack(noisy, max_time=4.0, callback=events.append,
                            **{**TINY, "floor": "gauss"})
    train = [e for e in events if not e.done and e.phase is None]
    assert len(train) == model.info["steps"] >= 5
    # training ends before the budget, leaving the end phase its share (this clock charges
    # every reading of it, not the network's work: tests/test_endphase.py checks the +5 %)
    assert train[-1].elapsed < 4.0
    assert model.info["seconds"] == pytest.approx(events[-1].elapsed, abs=0.01)
    assert events[-1].progress == 1.0
    # λ ramps with the fraction of time used
    assert train[-1].schedule > 2.0


def test_validation_keeps_best_model(small_stack):
    """The returned weights are those of the lowest validation error seen."""
    noisy, _ = small_stack
    # a high lr makes validation bumpy
    trainer = api.make_trainer(noisy, steps=30, val_every=3, lr=3e-2, width=16, depth=2,
                               patch_size=32, device="cpu", floor="none")
    for _ in trainer:
        pass
    model = trainer.result()
    hist = model.info["history"]
    best = min(hist, key=lambda r: r["val_error"])
    assert len(hist) == 10
    # re-measure the kept model on the same held-out crops
    m = model.model("cpu")
    with torch.no_grad():
        err = trainer.method.validation_error(m, torch.from_numpy(
            __import__("napari_b2u.train.crops", fromlist=["x"]).validation_crops(
                trainer.data.val_inputs, max(trainer.patch_size, min(128, 2 * trainer.patch_size)),
                trainer.config.val_patches))).item()
    assert err == pytest.approx(best["val_error"], rel=1e-4)
    if best["step"] != 30:
        assert model.info["chosen"].startswith("best")


def test_single_frame_holds_out_a_region():
    from napari_b2u.sample_data import fmdd_like_stack

    noisy, _ = fmdd_like_stack(1, (96, 64), seed=0)
    trainer = api.make_trainer(noisy[0], steps=2, width=16, depth=2, patch_size=32,
                               device="cpu")
    assert "bottom 16 pixels" in trainer.data.split
    assert trainer.data.train.shape[-2:] == (80, 64)
    assert trainer.data.val.shape[-2:] == (16, 64)
    # training crops never reach the held-out band: it is not in the sampled tensor at all
    assert trainer.sampler.data.shape[-2] == 80
    assert trainer.result().info["steps"] == 2


def test_many_frames_hold_out_frames(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=1, width=16, depth=2, patch_size=32, device="cpu")
    assert trainer.data.train.shape[0] + trainer.data.val.shape[0] == 8
    assert trainer.data.val.shape[0] == 1


def test_sampler_crops_come_from_the_data():
    frames = np.arange(2 * 1 * 10 * 12, dtype=np.float32).reshape(2, 1, 10, 12)
    s = CropSampler(frames, torch.device("cpu"), seed=0, augment=False)
    batch = s.sample(16, 4).numpy()
    for crop in batch:
        v = crop[0, 0, 0]
        f, rem = divmod(int(v), 120)
        y, x = divmod(rem, 12)
        np.testing.assert_array_equal(crop[0], frames[f, 0, y:y + 4, x:x + 4])


def test_sampler_augmentation_is_a_dihedral_transform():
    frames = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    s = CropSampler(frames, torch.device("cpu"), seed=1, augment=True)
    full = frames[0, 0]
    group = []
    for k in range(4):
        r = np.rot90(full, k)
        group += [r, r.T]
    seen = set()
    for crop in s.sample(64, 8).numpy():
        hits = [i for i, g in enumerate(group) if np.array_equal(crop[0], g)]
        assert hits
        seen.add(hits[0])
    assert len(seen) == 8


def test_config_presets_follow_device():
    from napari_b2u.config import PRESETS, resolve_config

    cfg = resolve_config(TrainConfig(), torch.device("cpu"))
    assert cfg.width == PRESETS["cpu"]["width"] and cfg.patch_size == PRESETS["cpu"]["patch_size"]
    assert cfg.amp is cpu_bf16_native() and cfg.channels_last is True
    cfg = resolve_config(TrainConfig(patch_size=96, width=8), torch.device("cpu"))
    assert cfg.patch_size == 96 and cfg.width == 8
    with pytest.raises(ValueError, match="steps"):
        resolve_config(TrainConfig(steps=0), torch.device("cpu"))


@pytest.mark.parametrize("native", [False, True])
def test_cpu_mixed_precision_only_where_bf16_is_native(small_stack, monkeypatch, native):
    """CPU training autocasts to bf16 where the CPU computes it natively and stays fp32
    elsewhere (emulated bf16 is slower); either way the kept weights are fp32 and denoise."""
    from napari_b2u import config, device

    monkeypatch.setattr(device, "cpu_bf16_native", lambda: native)
    noisy, clean = small_stack
    trainer = api.make_trainer(noisy, steps=60, lr=3e-3, seed=0, **TINY_T)
    assert trainer.config.amp is native
    assert trainer.amp == (torch.bfloat16 if native else None)
    assert config.resolve_config(TrainConfig(), torch.device("cpu")).amp is native
    for _ in trainer:
        pass
    model = trainer.result()
    assert all(v.dtype == torch.float32 for v in model.state_dict.values()
               if v.is_floating_point())
    out = model.denoise(noisy)
    assert out.dtype == noisy.dtype
    assert mean_psnr(out, clean) > mean_psnr(noisy, clean) + 2
    # asked for explicitly, fp32 it is
    assert api.make_trainer(noisy, steps=1, amp=False, **TINY_T).amp is None


def test_training_length_in_epochs(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, epochs=1.5, **TINY_T)
    n, _, h, w = trainer.data.train.shape  # 8 frames of 64²: 7 train, 1 held out
    expected = int(np.ceil(1.5 * n * h * w / (4 * 32**2)))
    assert (n, h, w) == (7, 64, 64) and trainer.config.steps == expected == 11
    events = list(trainer)
    assert events[-1].done and trainer.result().info["steps"] == expected
    assert events[-1].total_steps == expected
    with pytest.raises(ValueError, match="steps or as epochs"):
        api.make_trainer(noisy, steps=5, epochs=1, **TINY_T)
    with pytest.raises(ValueError, match="epochs=0 is not allowed: it must be a number > 0"):
        api.make_trainer(noisy, epochs=0, **TINY_T)


def test_trainer_accepts_explicit_validation_stack(small_stack):
    noisy, _ = small_stack
    t = Trainer(noisy[:4], config=TrainConfig(steps=2, width=16, depth=2, patch_size=32),
                device="cpu", val_stack=noisy[4:])
    assert "separate stack of 4" in t.data.split
    assert t.data.train.shape[0] == 4
    t.result()


def test_weight_average_is_what_is_validated_and_kept(small_stack):
    """With ema, the kept model is the moving average of the weights, not the last weights."""
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=12, ema=0.9, **TINY_T)
    model = trainer.result()
    last = {k: v.float() for k, v in trainer.model.state_dict().items()}
    assert trainer.average.state is None  # released with the other training tensors
    assert model.info["train_config"]["ema"] == 0.9
    differs = [k for k in last if not torch.allclose(model.state_dict[k], last[k])]
    assert not differs  # the trainer ends holding the kept (averaged) weights...
    plain = api.train_stack(noisy, steps=12, **TINY)
    assert any(not torch.allclose(plain.state_dict[k], model.state_dict[k])
               for k in plain.state_dict)  # ...which differ from training without the average


def test_warm_start_from_an_earlier_model(small_stack, tmp_path):
    noisy, _ = small_stack
    first = api.train_stack(noisy, steps=30, **TINY)
    path = first.save(tmp_path / "first.b2u")
    trainer = api.make_trainer(noisy, steps=1, warm_start=str(path), lr=1e-9, **TINY_T)
    for k, v in first.state_dict.items():  # starts exactly from the earlier weights
        torch.testing.assert_close(trainer.model.state_dict()[k].float(), v)
    model = trainer.result()
    assert model.info["warm_start"] == "from first.b2u (30 steps)"
    with pytest.raises(ValueError, match="holds another network"):
        api.make_trainer(noisy, warm_start=str(path), **{**TINY_T, "width": 8})
    scratch = api.make_trainer(noisy, steps=1, warm_start=False, **TINY_T)
    assert scratch.warm_start is None


def test_packaged_pretrained_weights_load_and_fine_tune(small_stack):
    """The shipped generic model (CPU network) warm-starts training on CPU in the test suite."""
    from napari_b2u.train.warm_start import packaged_path

    noisy, clean = small_stack
    cfg = dict(width=24, depth=4, patch_size=32, batch_size=4, device="cpu", compile=False,
               floor="none")
    path = packaged_path({"arch": "unet", "in_channels": 1, "out_channels": 1, "width": 24,
                          "depth": 4})
    assert path is not None and path.stat().st_size < 5 * 2**20  # small enough to ship
    trainer = api.make_trainer(noisy, steps=3, warm_start="pretrained", **cfg)
    assert trainer.warm_start.startswith("pretrained: napari-b2u generic fluorescence model")
    before = mean_psnr(trainer.result().denoise(noisy, dtype="float32", tta=False), clean)
    assert before > mean_psnr(noisy, clean) + 3  # a denoiser from the start
    # no pretrained weights for this network: said, and training starts from scratch
    with pytest.warns(UserWarning, match="no pretrained weights for this network"):
        t = api.make_trainer(noisy, steps=1, warm_start="pretrained", **TINY_T)
    assert t.warm_start is None
