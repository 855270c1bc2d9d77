"""The risk estimate (SURE) on clipped data: measured away from clipped pixels (issue 28 item 2).

Constructed cases: smooth structure under Gaussian noise, independent or correlated along X,
with an offset subtracted so that more than half of the pixels clip at 0; the clean image is
known, so the true error of each output on the pixels measured is too."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_b2u import api
from napari_b2u.clipped import unclipped
from napari_b2u.methods.classical import GaussModel, gaussian_filter
from napari_b2u.noise import exclusion_bounds
from napari_b2u.sample_data import correlate
from napari_b2u.train.sure import CLIP_SIDE, MIN_MEASURED, Risk, _measured_pixels, sure_risk

SIGMA = 0.1


def _clipped_scene(corr_x: float, seed: int, frames: int = 4, size: int = 96):
    """(noisy clipped at 0, clean with the same offset, correlation kernel or None)."""
    rng = np.random.default_rng(seed)
    clean = np.stack([ndimage.gaussian_filter(rng.standard_normal((size, size)), 4) * 8
                      for _ in range(frames)])
    noise = SIGMA * rng.standard_normal(clean.shape)
    kernel = None
    if corr_x:
        noise = correlate(noise, corr_x)
        kernel = np.zeros((3, 3))
        kernel[1] = (corr_x, 1.0, corr_x)
    y = clean + noise
    offset = np.quantile(y, 0.55)  # 55 % of the pixels at 0
    return np.maximum(y - offset, 0.0), clean - offset, kernel


OUTPUTS = {  # the noise passed through, a light, a good and a too wide filter
    "identity": lambda v: v,
    "gauss 0.7": lambda v: gaussian_filter(v, 0.7),
    "gauss 1.5": lambda v: gaussian_filter(v, 1.5),
    "gauss 3": lambda v: gaussian_filter(v, 3.0),
}


def _risks(y, kernel):
    where = np.stack([unclipped(p, exclusion_bounds(y), CLIP_SIDE) for p in y])
    yt = torch.from_numpy(y[:, None]).float()
    fits = [(0.0, SIGMA**2)]  # Gaussian noise of known variance: the test is of the clipping
    measured = Risk(yt, fits, corr=kernel, where=torch.from_numpy(where[:, None]))
    everywhere = Risk(yt, fits, corr=kernel)
    return yt, where, measured, everywhere


@pytest.mark.parametrize("corr_x", [0.0, 0.3])
def test_risk_away_from_clipped_pixels_is_unbiased_and_ranks_outputs(corr_x):
    y, clean, kernel = _clipped_scene(corr_x, seed=1)
    assert (y == 0).mean() >= 0.5
    yt, where, risk, everywhere = _risks(y, kernel)
    assert 0.05 < risk.measured < 0.5  # the clipped background and its margin left out
    true_m, est_m, true_all, est_all = {}, {}, {}, {}
    for name, predict in OUTPUTS.items():
        out = predict(yt).numpy()[:, 0]
        true_m[name] = float(((out - clean) ** 2)[where].mean()) + SIGMA**2
        # everywhere, the truth of a clipped pixel is the clean image clipped the same way
        true_all[name] = float(((out - np.maximum(clean, 0)) ** 2).mean()) + SIGMA**2
        est_m[name] = risk.error(*risk.output(predict))
        est_all[name] = everywhere.error(*everywhere.output(predict))
    for name in OUTPUTS:
        assert est_m[name] == pytest.approx(true_m[name], abs=0.1 * SIGMA**2), name
    assert sorted(est_m, key=est_m.get) == sorted(true_m, key=true_m.get)
    # the case is one where clipping matters: over all pixels the estimate charges noise to
    # pixels that hold none and ranks the outputs differently from their true errors
    assert sorted(est_all, key=est_all.get) != sorted(true_all, key=true_all.get)


@pytest.mark.parametrize("corr_x", [0.0, 0.3])
def test_blend_weight_on_clipped_data_does_not_favour_passing_noise(corr_x):
    """The floor's blend of a network that passes the noise through (the identity) with a
    Gaussian filter: the weight the risk picks is the one that is best on the pixels measured."""
    y, clean, kernel = _clipped_scene(corr_x, seed=2)
    yt, where, risk, _ = _risks(y, kernel)
    filt = GaussModel(1)
    filt.sigma.fill_(1.5)
    s0, s1, s2, d_net, d_filt, n = risk.blend_sums(*risk.output(OUTPUTS["identity"]), filt)
    weight = -(s1 + d_net - d_filt) / s2
    f = filt(yt).numpy()[:, 0][where]
    e = y[where] - f
    best = -float(((f - clean[where]) * e).sum()) / float((e * e).sum())
    assert weight == pytest.approx(best, abs=0.05)
    assert weight < 0.5  # the filter carries most of the output, as it should


def test_training_risk_leaves_clipped_pixels_out_and_says_so():
    rng = np.random.default_rng(0)
    clean = np.stack([ndimage.gaussian_filter(rng.standard_normal((128, 128)), 3) * 400 + 60
                      for _ in range(4)])
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255)
    clipped = np.clip(noisy - np.quantile(noisy, 0.55), 0, 255).astype(np.uint8)

    trainer = api.make_trainer(clipped, steps=2, patch_size=32, batch_size=2)
    risk = sure_risk(trainer, 4)
    assert risk is not None and 0.0 < risk.measured < 0.5
    # the pixels left out are the clipped ones (and their margin): none measured is at 0
    crops = risk.y.cpu().numpy()
    assert not (risk.where.cpu().numpy().astype(bool) & (crops <= crops.min())).any()

    plain = api.make_trainer(noisy.astype(np.float32), steps=2, patch_size=32, batch_size=2)
    assert sure_risk(plain, 4).measured == 1.0

    model = api.train_stack(clipped, steps=4, patch_size=32, batch_size=2, progress=False)
    assert any("estimated error is measured on the" in m for m in model.info["messages"])


def test_dense_clipping_measures_the_pixels_not_clipped_themselves():
    """Clipped pixels scattered everywhere (a fifth at each bound, as on instant-SIM frames):
    no pixel is 5 px from one, so the risk sums over the pixels not clipped themselves rather
    than giving up."""
    rng = np.random.default_rng(0)
    crops = rng.integers(1, 255, (4, 1, 64, 64)).astype(np.float32)
    u = rng.random(crops.shape)
    crops[u < 0.2] = 0.0
    crops[u > 0.8] = 255.0
    where = _measured_pixels(crops, (0.0, 255.0))
    np.testing.assert_array_equal(where, (crops > 0) & (crops < 255))
    assert where.sum() >= MIN_MEASURED
    assert _measured_pixels(crops, None) is None  # no heavy clipping: every pixel
    # sparse clipping keeps the 5-px margin
    crops = rng.integers(1, 255, (4, 1, 64, 64)).astype(np.float32)
    crops[:, :, :20] = 0.0
    where = _measured_pixels(crops, (0.0, 255.0))
    assert not where[:, :, :22].any() and where[:, :, 24:].all()
