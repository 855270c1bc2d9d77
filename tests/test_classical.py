"""The classical methods (self-calibrated Gaussian, VST+BM3D) run in the engine, are validated
on the same self-supervised scale as the networks, and back the default as its floor."""

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.methods.classical import GAUSS_SIGMAS, gaussian_filter
from napari_b2u.sample_data import fmdd_like_stack

from .conftest import TINY, TINY_T, mean_psnr


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


def _fixed_noise_network(monkeypatch, scale: float):
    """B2U's prediction replaced by the Gaussian filter plus a fixed pattern of ``scale``: a
    network worse than the filter by a known amount, whose divergence is the filter's."""
    from napari_b2u.methods.b2u import Blind2Unblind

    def predict(self, model, y, output=None):
        gen = torch.Generator().manual_seed(3)
        pattern = torch.randn(y.shape, generator=gen).to(y.device)
        return gaussian_filter(y.float(), 1.0) + scale * pattern
    monkeypatch.setattr(Blind2Unblind, "predict", predict)


def test_the_floor_returns_the_filter_when_the_network_is_worse(monkeypatch, small_stack):
    noisy, _ = small_stack
    _fixed_noise_network(monkeypatch, 2.0)
    opts = {**TINY, "floor": "gauss"}
    weak = api.train_stack(noisy, steps=2, **opts)
    assert weak.method_name == "gauss" and weak.info["chosen"].startswith("classical floor")
    assert weak.info["trained_method"] == "b2u"
    f = weak.info["floor"]
    assert f["val_error"] < f["network_val_error"] and "SURE" in f["measure"]
    assert any("scored a lower estimated error" in m for m in weak.info["messages"])
    off = api.train_stack(noisy, steps=2, **{**opts, "floor": "none"})
    assert off.method_name == "b2u" and "floor" not in off.info


def test_the_floor_keeps_a_network_that_is_better(monkeypatch, small_stack):
    """The decision is the comparison itself: against a useless filter the network stays."""
    from napari_b2u.methods.classical import GaussModel

    noisy, _ = small_stack
    monkeypatch.setattr(GaussModel, "forward", lambda self, y: torch.full_like(y, 100.0))
    model = api.train_stack(noisy, steps=2, **{**TINY, "floor": "gauss"})
    assert model.method_name == "b2u" and model.blend is None
    assert model.info["floor"]["val_error"] > 50 * model.info["floor"]["network_val_error"]


def _poisson_gaussian_scene(seed=0, size=64, count=8):
    """Smooth structures and their noisy copies, noise Gaussian with variance a·x + b."""
    gen = torch.Generator().manual_seed(seed)
    x = gaussian_filter(torch.rand(count, 1, size, size, generator=gen), 2.5)
    x = (x - x.min()) / (x.max() - x.min())
    a, b = 0.02, 0.001
    y = x + (a * x + b).sqrt() * torch.randn(x.shape, generator=gen)
    return x, y, [(a, b)]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_risk_estimate_tracks_the_true_error_of_outputs_that_see_the_noise(seed):
    """SURE of w·out + (1−w)·filter matches MSE + mean noise variance, for an output that
    passes some of its own pixel's noise (the identity-heavy one would look perfect by its
    plain residual)."""
    from napari_b2u.methods.classical import GaussModel
    from napari_b2u.train.sure import Risk

    x, y, fits = _poisson_gaussian_scene(seed)
    filt = GaussModel(1)
    filt.sigma.fill_(1.5)

    def out(t):  # nonlinear, sees its pixel: a soft threshold of the detail on a smooth base
        base = gaussian_filter(t, 0.8)
        return base + 0.5 * torch.tanh((t - base) / 0.05) * 0.05

    risk = Risk(y, fits, seed)
    measured = risk.output(out)
    s0, s1, s2, d_net, d_filt, n = risk.blend_sums(*measured, filt)
    var = float((fits[0][0] * x + fits[0][1]).mean())
    assert risk.error(*measured) == pytest.approx((s0 + 2 * s1 + s2 + 2 * d_net) / n)
    for w in (0.0, 0.4, 1.0):
        blend = w * out(y) + (1 - w) * filt(y)
        true = float(((blend - x) ** 2).mean()) + var
        est = (s0 + 2 * w * s1 + w * w * s2 + 2 * (w * d_net + (1 - w) * d_filt)) / n
        mse = true - var
        assert abs(est - true) < 0.1 * mse, (w, est, true, mse)
        naive = float(((blend - y) ** 2).mean())  # without the divergence: far too low
        assert true - naive > 0.5 * mse


def test_the_risk_estimate_fits_the_noise_of_each_crops_own_frame():
    """Frames exported one by one (each scaled to its own range) have different noise laws in
    the stack's units: each risk crop takes the law of the frame it came from, not one law for
    the stack (that mis-weighed the W2S stack's blend by 0.3 in w)."""
    from napari_b2u.noise import frames_report, variance_fit
    from napari_b2u.train import sure
    from napari_b2u.train.crops import crop_spots

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    x = 40 + 120 * (0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 11.0))
    noisy = np.stack([x + rng.normal(size=x.shape) * np.sqrt(4.0 * x + 25.0) for _ in range(6)])
    noisy[3:] *= 2.5  # the later frames exported at 2.5× the scale: 6.25× the variance
    trainer = api.make_trainer(noisy.astype(np.float32), steps=1, val_fraction=0.0, **TINY_T)
    train = trainer.data.train
    risk = sure.sure_risk(trainer)
    frames = [f for f, _, _ in crop_spots(train.shape, max(trainer.patch_size, 128), 16)]
    per_crop = risk.var.mean(dim=(1, 2, 3)).numpy()
    low = per_crop[[f < 3 for f in frames]].mean()
    high = per_crop[[f >= 3 for f in frames]].mean()
    assert 4.5 < high / low < 8.0, high / low
    kernel = frames_report(train).noise_kernel()
    assert kernel is None  # independent noise
    for i, f in enumerate(frames[:3]):  # the law of its own frame
        (a, b), = variance_fit(train, f, kernel)
        expect = (a * gaussian_filter(risk.y[i:i + 1], 1.5) + b).clamp(min=0)
        torch.testing.assert_close(risk.var[i:i + 1], expect, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_risk_estimate_holds_at_a_few_photons_for_outputs_curved_in_their_pixel(seed):
    """Photon noise at 0.5–4.5 photons per pixel: for an output curved in its own pixel the
    Gaussian SURE is far off (the Poisson second-order term), the estimate with it is not."""
    from napari_b2u.train.sure import Risk

    gen = torch.Generator().manual_seed(seed)
    lam = gaussian_filter(torch.rand(8, 1, 96, 96, generator=gen), 2.5)
    lam = 0.5 + 4 * (lam - lam.min()) / (lam.max() - lam.min())
    a = 0.05  # one photon, in the image's units
    x, y = a * lam, a * torch.poisson(lam, generator=gen)

    def out(t):  # the base plus a share of the squared detail
        base = gaussian_filter(t, 1.0)
        return base + 3.0 * (t - base) ** 2

    risk = Risk(y, [(a, 0.0)], seed)
    est = risk.error(*risk.output(out))
    gaussian_only = Risk(y, [(a, 0.0)], seed)
    gaussian_only.curve = torch.zeros_like(gaussian_only.curve)
    first = gaussian_only.error(*gaussian_only.output(out))
    var = float((a * x).mean())
    true = float(((out(y) - x) ** 2).mean()) + var
    mse = true - var
    assert abs(est - true) < 0.25 * mse, (est, true, mse)
    assert true - first > 0.5 * mse, (first, true, mse)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_risk_estimate_holds_for_noise_correlated_between_neighbours(seed):
    """Noise correlated at 0.3 along X (a scanning confocal): a filter that averages along X
    passes its neighbours' correlated noise, which the independent-noise SURE does not see
    (it measured 0.80 of the true risk); with the measured correlation it is the true risk,
    and the full filter's exact term agrees with the probe's."""
    from napari_b2u.methods.classical import GaussModel
    from napari_b2u.noise import correlation_kernel
    from napari_b2u.sample_data import correlate
    from napari_b2u.train.sure import Risk

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128]
    x = 0.3 + 0.2 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    sd = 0.05
    noisy = x + sd * correlate(rng.normal(size=(8, 128, 128)), corr_x=0.3)
    y = torch.from_numpy(noisy[:, None].astype(np.float32))
    tap = torch.tensor([0.25, 0.5, 0.25]).view(1, 1, 1, 3)

    def along_x(t):
        return torch.nn.functional.conv2d(torch.nn.functional.pad(t, (1, 1, 0, 0), "reflect"),
                                          tap)

    clean = torch.from_numpy(x[None, None].astype(np.float32))
    true = float(((along_x(y) - clean) ** 2).mean()) + sd**2
    kernel = correlation_kernel(noisy)
    assert kernel[3, 4] == pytest.approx(0.3, abs=0.05)
    independent = Risk(y, [(0.0, sd**2)], seed, signal=y)
    correlated = Risk(y, [(0.0, sd**2)], seed, signal=y, corr=kernel)
    assert independent.error(*independent.output(along_x)) < 0.9 * true
    assert correlated.error(*correlated.output(along_x)) == pytest.approx(true, rel=0.03)
    filt = GaussModel(1)
    filt.sigma.fill_(1.2)
    *_, d_filt, n = correlated.blend_sums(*correlated.output(along_x), filt)
    assert d_filt == pytest.approx(correlated.output(filt)[1], rel=0.05)


def test_the_risk_estimate_takes_the_noise_correlation_the_mask_was_chosen_for():
    """Correlated noise: the training risk estimate gets the noise check's separable kernel
    (and the variance fit for it); independent noise: none, as before."""
    from napari_b2u.noise import variance_fit
    from napari_b2u.train import sure

    corr, _ = fmdd_like_stack(3, (128, 128), corr_x=0.3, seed=5, dtype=np.float32)
    trainer = api.make_trainer(corr, steps=1, val_fraction=0.0, **TINY_T)
    report = trainer.noise
    assert report.mask == "x-line:3"
    risk = sure.sure_risk(trainer)
    kernel = report.noise_kernel()
    np.testing.assert_allclose(risk.corr, kernel)
    assert kernel[3, 4] == pytest.approx(report.corr_x[0]) and report.corr_x[0] > 0.2
    assert kernel[2, 4] == pytest.approx(report.corr_x[0] * report.corr_y[0])  # separable
    (a, b), = variance_fit(trainer.data.train, 1, kernel)
    (a0, b0), = variance_fit(trainer.data.train, 1)
    assert a > 1.1 * a0  # the residual of correlated noise has less variance: the fit says more
    plain, _ = fmdd_like_stack(3, (128, 128), seed=5, dtype=np.float32)
    assert sure.sure_risk(api.make_trainer(plain, steps=1, val_fraction=0.0,
                                              **TINY_T)).corr is None


def test_the_probe_measures_a_linear_filters_divergence():
    """The Monte-Carlo divergence of a linear filter equals its centre tap × Σ variance."""
    from napari_b2u.methods.classical import GaussModel, gaussian_kernel1d
    from napari_b2u.train.sure import Risk

    x, y, fits = _poisson_gaussian_scene(2, 96)
    filt = GaussModel(1)
    filt.sigma.fill_(1.2)
    risk = Risk(y, fits)
    *_, d_net, d_filt, n = risk.blend_sums(*risk.output(lambda t: gaussian_filter(t, 0.7)), filt)
    var = risk.var
    exact = float(gaussian_kernel1d(0.7).max()) ** 2 * float(var.sum())
    assert d_net == pytest.approx(exact, rel=0.05)
    assert d_filt == pytest.approx(float(gaussian_kernel1d(1.2).max()) ** 2 * float(var.sum()),
                                   rel=1e-5)


def test_a_blended_model_denoises_as_the_blend_and_keeps_it_in_its_file(monkeypatch,
                                                                         small_stack,
                                                                         tmp_path):
    from napari_b2u.methods.classical import gaussian_filter
    from napari_b2u.train import sure

    noisy, _ = small_stack
    # a validation where the two are equally good and independent: the optimum is w = 0.3
    monkeypatch.setattr(sure.Risk, "blend_sums", lambda *a: (1.0, -0.3, 1.0, 0.0, 0.0, 10))
    # (each frame alone: a model with stack context is format 4, tests/test_context.py)
    model = api.train_stack(noisy, steps=2, **{**TINY, "floor": "gauss", "context": 0})
    assert model.method_name == "b2u" and model.blend["weight"] == pytest.approx(0.3)
    assert "blended with a Gaussian filter" in model.info["chosen"]
    assert any(m.startswith("blended 0.30") for m in model.info["messages"])
    sigma = model.blend["gauss_sigma"]
    out = model.denoise(noisy, dtype="float32", tta=False)
    alone = model.__class__(model.method_name, model.method_params, model.model_config,
                            model.state_dict, model.normalization, model.info,
                            context=model.context)
    net = alone.denoise(noisy, dtype="float32", tta=False)
    filt = gaussian_filter(torch.from_numpy(noisy.astype(np.float32))[:, None],
                           sigma[0])[:, 0].numpy()
    np.testing.assert_allclose(out, 0.3 * net + 0.7 * filt, atol=1e-2)
    path = model.save(tmp_path / "blend.b2u")
    loaded = api.load(path)
    assert loaded.blend == model.blend
    np.testing.assert_array_equal(loaded.denoise(noisy, tta=False),
                                  model.denoise(noisy, tta=False))
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


def _rising_validation(monkeypatch):
    """Validation errors that only rise: the first validated checkpoint stays the best."""
    from napari_b2u.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "validate", lambda self: 1.0 + self.step)


@pytest.mark.parametrize("winner", ["last", "best"])
def test_keep_auto_returns_the_checkpoint_with_the_lower_estimated_error(monkeypatch,
                                                                        small_stack, winner):
    from napari_b2u.train import endphase

    _rising_validation(monkeypatch)
    seen = []

    def fake_measure(trainer, risk, state):  # called for the best, then for the last
        seen.append({k: v.clone() for k, v in state.items()})
        worse = (len(seen) == 1) == (winner == "last")
        return risk.y + (0.1 if worse else 0.01), 0.0

    monkeypatch.setattr(endphase, "measure_state", fake_measure)  # the end phase measures
    model = api.train_stack(small_stack[0], steps=6, val_every=2, **TINY)
    assert len(seen) == 2
    kept = seen[1] if winner == "last" else seen[0]
    for k, v in model.state_dict.items():
        torch.testing.assert_close(v, kept[k].float())
    assert not all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])
    record = model.info["keep"]
    assert record["best_step"] == 2 and record["best_by_validation"] != record["last"]
    if winner == "last":
        assert model.info["chosen"].startswith("last: a lower estimated error")
    else:
        assert model.info["chosen"].startswith("best by validation (step 2), confirmed")


@pytest.mark.parametrize("keep", ["validation", "last"])
def test_keep_validation_or_last_does_not_compare(monkeypatch, small_stack, keep):
    from napari_b2u.train import endphase

    _rising_validation(monkeypatch)
    monkeypatch.setattr(endphase, "measure_state", lambda *a: pytest.fail("compared"))
    model = api.train_stack(small_stack[0], steps=6, val_every=2, keep=keep, **TINY)
    assert "keep" not in model.info
    assert model.info["chosen"] == ("best by validation (step 2)" if keep == "validation"
                                    else "last")


def test_keep_auto_measures_both_networks_and_the_floor_reuses_the_kept_one(monkeypatch,
                                                                           small_stack):
    from napari_b2u.train import sure

    _rising_validation(monkeypatch)
    calls = []
    output = sure.Risk.output
    monkeypatch.setattr(sure.Risk, "output", lambda self, f: calls.append(1) or output(self, f))
    model = api.train_stack(small_stack[0], steps=6, val_every=2,
                            **{**TINY, "floor": "gauss"})
    record = model.info["keep"]
    assert np.isfinite(record["best_by_validation"]) and np.isfinite(record["last"])
    assert len(calls) == 2  # the best and the last; the floor used the kept one's
    assert model.info["floor"]["measure"].endswith("(SURE)")
    chosen_err = min(record["best_by_validation"], record["last"])
    assert model.info["floor"]["network_val_error"] == pytest.approx(chosen_err)

