"""The classical methods (self-calibrated Gaussian, VST+BM3D) run in the engine, are validated
on the same self-supervised scale as the networks, and back the default as its floor."""

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.methods.classical import GAUSS_SIGMAS, gaussian_filter
from napari_b2u.sample_data import fmdd_like_stack

from .conftest import TINY, mean_psnr


def test_the_j_invariant_gaussian_ignores_each_pixels_own_value():
    y = torch.rand(1, 2, 24, 24, dtype=torch.float64)
    base = gaussian_filter(y, 1.3, j_invariant=True)
    bumped = y.clone()
    bumped[0, 1, 10, 12] += 5.0
    diff = (gaussian_filter(bumped, 1.3, j_invariant=True) - base)[0, 1]
    assert abs(float(diff[10, 12])) < 1e-12  # blind to itself
    assert float(diff[10, 13]) > 0  # not to its neighbours
    assert torch.equal((gaussian_filter(bumped, 1.3, True) - base)[0, 0],
                       torch.zeros(24, 24, dtype=torch.float64))  # channels stay apart


def test_gauss_calibrates_sigma_per_channel_and_denoises(small_stack, tmp_path):
    noisy, clean = small_stack
    two = np.stack([noisy, np.clip(noisy.astype(int) // 2 + 10, 0, 255).astype(np.uint8)], 1)
    model = api.train_stack(two, axes="TCYX", method="gauss", device="cpu", progress=False)
    sigmas = model.readout()["gauss_sigma"]
    assert len(sigmas) == 2 and all(GAUSS_SIGMAS[0] <= s <= GAUSS_SIGMAS[-1] for s in sigmas)
    out = model.denoise(two, axes="TCYX", dtype="float32")[:, 0]
    assert mean_psnr(out, clean) > mean_psnr(noisy, clean) + 2
    loaded = api.load(model.save(tmp_path / "g.b2u"))
    np.testing.assert_array_equal(loaded.denoise(two[:2], axes="TCYX"),
                                  model.denoise(two[:2], axes="TCYX"))
    assert model.info["history"] and model.info["history"][-1]["val_error"] > 0


def test_bm3d_estimates_the_noise_and_beats_the_gaussian():
    pytest.importorskip("bm3d")
    noisy, clean = fmdd_like_stack(4, (96, 96), seed=2)
    g = api.train_stack(noisy, method="gauss", device="cpu", progress=False)
    b = api.train_stack(noisy, method="bm3d", device="cpu", progress=False)
    r = b.readout()
    true_gain = 255 / 40  # fmdd_like_stack's photons=40 on the 0..255 scale
    assert 0.5 * true_gain < r["noise_gain"] < 2 * true_gain
    out_b, out_g = b.denoise(noisy[:1], dtype="float32"), g.denoise(noisy[:1], dtype="float32")
    assert mean_psnr(out_b, clean) > mean_psnr(out_g, clean)
    # the same self-supervised scale as the networks: BM3D's J-invariant error is lower
    assert b.info["history"][-1]["val_error"] < g.info["history"][-1]["val_error"]


def test_the_floor_returns_the_filter_when_the_network_validates_worse(small_stack):
    noisy, _ = small_stack
    opts = {**TINY, "floor": "gauss"}
    weak = api.train_stack(noisy, steps=2, **opts)  # two steps: the filter is better
    assert weak.method_name == "gauss" and weak.info["chosen"].startswith("classical floor")
    assert weak.info["trained_method"] == "b2u"
    f = weak.info["floor"]
    assert f["val_error"] < f["network_val_error"]
    assert any("scored a lower self-supervised error" in m for m in weak.info["messages"])
    off = api.train_stack(noisy, steps=2, **{**opts, "floor": "none"})
    assert off.method_name == "b2u" and "floor" not in off.info


def test_the_floor_keeps_a_network_that_validates_better(monkeypatch, small_stack):
    """The decision is the comparison itself: a network that validates better stays."""
    from napari_b2u.methods.classical import GaussMethod

    noisy, _ = small_stack
    monkeypatch.setattr(GaussMethod, "j_invariant",
                        lambda self, model, y: torch.full_like(y.float(), 10.0))
    model = api.train_stack(noisy, steps=2, **{**TINY, "floor": "gauss"})
    assert model.method_name == "b2u" and model.blend is None
    assert model.info["floor"]["val_error"] > 50


def test_the_blend_weight_minimizes_the_blind_spot_error(monkeypatch, small_stack):
    """The floor's blend weight is the argmin over [0, 1] of the blind-spot error of
    w·network + (1−w)·filter on the validation crops (checked against a fine grid)."""
    from napari_b2u import results
    from napari_b2u.results import snap_weight

    noisy, _ = small_stack
    seen = {}
    real = results.blend_sums

    def spy(trainer, floor, model):
        seen["val"], seen["floor"], seen["model"] = trainer.val, floor, model
        seen["net"] = [trainer.method.blind_prediction(trainer.model, trainer.val[i:i + 1])
                       for i in range(trainer.val.shape[0])]
        return real(trainer, floor, model)

    monkeypatch.setattr(results, "blend_sums", spy)
    model = api.train_stack(noisy, steps=3, **{**TINY, "floor": "gauss"})
    val = seen["val"].float()
    g = torch.cat([seen["floor"].j_invariant(seen["model"], val[i:i + 1])
                   for i in range(val.shape[0])])
    h = torch.cat(seen["net"]).float()
    grid = np.linspace(0, 1, 401)
    errs = [float(((w * h + (1 - w) * g - val) ** 2).mean()) for w in grid]
    best = snap_weight(float(grid[int(np.argmin(errs))]))
    w = model.blend["weight"] if model.blend else (1.0 if model.method_name == "b2u" else 0.0)
    assert abs(w - best) <= 0.0025 + 1e-9
    assert model.info["floor"]["val_error"] == pytest.approx(errs[0], rel=1e-4)
    assert model.info["floor"]["network_val_error"] == pytest.approx(errs[-1], rel=1e-4)


def test_a_blended_model_denoises_as_the_blend_and_keeps_it_in_its_file(monkeypatch,
                                                                         small_stack,
                                                                         tmp_path):
    from napari_b2u import results
    from napari_b2u.methods.classical import gaussian_filter

    noisy, _ = small_stack
    # a validation where the two are equally good and independent: the optimum is w = 0.3
    monkeypatch.setattr(results, "blend_sums", lambda *a: (1.0, -0.3, 1.0, 10))
    model = api.train_stack(noisy, steps=2, **{**TINY, "floor": "gauss"})
    assert model.method_name == "b2u" and model.blend["weight"] == pytest.approx(0.3)
    assert "blended with a Gaussian filter" in model.info["chosen"]
    assert any(m.startswith("blended 0.30") for m in model.info["messages"])
    sigma = model.blend["gauss_sigma"]
    out = model.denoise(noisy[:2], dtype="float32", tta=False)
    alone = model.__class__(model.method_name, model.method_params, model.model_config,
                            model.state_dict, model.normalization, model.info)
    net = alone.denoise(noisy[:2], dtype="float32", tta=False)
    filt = gaussian_filter(torch.from_numpy(noisy[:2].astype(np.float32))[:, None],
                           sigma[0])[:, 0].numpy()
    np.testing.assert_allclose(out, 0.3 * net + 0.7 * filt, atol=1e-2)
    path = model.save(tmp_path / "blend.b2u")
    loaded = api.load(path)
    assert loaded.blend == model.blend
    np.testing.assert_array_equal(loaded.denoise(noisy[:2], tta=False),
                                  model.denoise(noisy[:2], tta=False))
    assert torch.load(path, weights_only=False)["version"] == 3
    assert torch.load(alone.save(tmp_path / "net.b2u"), weights_only=False)["version"] == 2


def test_a_stop_skips_the_floor(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=100, val_every=2, floor="gauss",
                               **{k: v for k, v in TINY.items() if k not in ("progress",
                                                                            "floor")})
    for ev in trainer:
        if ev.step == 4:
            trainer.stop()
    model = trainer.result()
    assert model.method_name == "b2u" and "floor" not in model.info


def test_floor_none_means_the_default():
    from napari_b2u.config import build_config

    assert build_config("b2u").floor == "gauss"
    assert build_config("b2u", floor=None).floor == "gauss"
    assert build_config("b2u", floor=False).floor == "none"
    assert build_config("b2u", floor="none").floor == "none"


@pytest.mark.parametrize("spec", ["x-line:3", "box:3,3", "y-line:5"])
def test_the_j_invariant_gaussian_ignores_the_blind_spots_extent(spec):
    from napari_b2u.masking import BlindSpot

    spot = BlindSpot.parse(spec)
    y = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    base = gaussian_filter(y, 1.5, True, spot)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            bumped = y.clone()
            bumped[0, 0, 16 + dy, 16 + dx] += 5.0
            d = abs(float((gaussian_filter(bumped, 1.5, True, spot) - base)[0, 0, 16, 16]))
            inside = abs(dy) <= spot.ly and abs(dx) <= spot.lx
            assert (d < 1e-12) if inside else (d > 1e-4)
    flat = gaussian_filter(torch.ones(1, 1, 20, 20, dtype=torch.float64), 1.5, True, spot)
    assert torch.allclose(flat, torch.ones_like(flat))  # weights renormalized


def test_the_floor_validates_with_the_networks_blind_spot():
    """Noise correlated along X: a filter's one-pixel J-invariant error passes the correlated
    neighbour's noise and looks better than it is, so the floor uses the network's mask and
    chooses σ by an honest error (a wider σ than the one-pixel error picks)."""
    from napari_b2u.sample_data import correlate

    rng = np.random.default_rng(0)
    noise = correlate(rng.normal(0, 20, (4, 64, 64)), corr_x=0.35)
    noisy = np.clip(100 + noise, 0, 255).astype(np.float32)
    opts = {**TINY, "floor": "gauss"}
    model = api.train_stack(noisy, steps=2, mask="x-line:3", **opts)
    assert model.info["floor"]["method"] == "gauss"
    assert model.info["floor"]["mask"] == "x-line:3"
    if model.method_name == "gauss":  # the filter alone, or blended with the network
        assert model.method_params["mask"] == "x-line:3"
        honest = model.readout()["gauss_sigma"][0]
    else:
        honest = model.blend["gauss_sigma"][0]
    naive = api.train_stack(noisy, method="gauss", mask="pixel", device="cpu", progress=False)
    assert honest > naive.readout()["gauss_sigma"][0]
