"""The noise report: correlation between neighbours (known synthetic correlation recovered within
±0.05), clipping, and the mask it recommends."""

import numpy as np
import pytest

from napari_b2u.noise import clipping, noise_correlation, noise_report, recommend_mask
from napari_b2u.sample_data import correlate, fmdd_like_stack


@pytest.mark.parametrize("cx,cy", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.3, 0.3),
                                   (0.45, 0.1)])
def test_correlation_of_synthetic_noise_is_recovered(cx, cy):
    noisy, _ = fmdd_like_stack(4, (192, 192), photons=30, corr_x=cx, corr_y=cy, seed=4,
                               dtype=np.float32)
    ex, ey = noise_correlation(noisy)
    assert ex[0] == pytest.approx(cx, abs=0.05) and ey[0] == pytest.approx(cy, abs=0.05)
    assert all(abs(v) < 0.05 for v in ex[1:] + ey[1:])  # a two-tap kernel: lag 1 only


def test_correlate_gives_the_asked_lag1_correlation_and_keeps_the_variance():
    w = np.random.default_rng(0).normal(0, 1, (512, 512))
    n = correlate(w, 0.3, 0.0)
    r = np.corrcoef(n[:, 1:].ravel(), n[:, :-1].ravel())[0, 1]
    assert r == pytest.approx(0.3, abs=0.01) and n.std() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError):
        correlate(w, 0.6)


def test_recommended_masks():
    assert recommend_mask([0.02, 0.0, 0.0], [0.03, 0.0, 0.0]) == "pixel"
    assert recommend_mask([0.3, 0.0, 0.0], [0.05, 0.0, 0.0]) == "x-line:3"
    assert recommend_mask([0.3, 0.15, 0.0], [0.0, 0.0, 0.0]) == "x-line:5"
    assert recommend_mask([0.0, 0.0, 0.0], [0.3, 0.0, 0.0]) == "y-line:3"
    assert recommend_mask([0.3, 0.0, 0.0], [0.3, 0.0, 0.0]) == "box:3,3"


def test_clipping_is_measured_and_reported():
    noisy, _ = fmdd_like_stack(2, (96, 96), offset=-15, seed=1)  # background subtracted
    low, high = clipping(noisy)
    assert low > 0.05 and high < 0.01
    report = noise_report(noisy)
    assert any("clipped at the lower bound" in n for n in report.notes)
    sat, _ = fmdd_like_stack(2, (96, 96), gain=1000, seed=1)  # saturated at 255
    assert clipping(sat)[1] > 0.05
    assert any("saturated" in n for n in noise_report(sat).notes)


def test_report_describes_independent_and_correlated_noise():
    plain, _ = fmdd_like_stack(3, (128, 128), seed=5)
    r = noise_report(plain)
    assert r.mask == "pixel" and "mask: pixel" in r.describe()
    corr, _ = fmdd_like_stack(3, (128, 128), corr_x=0.3, seed=5, dtype=np.float32)
    r = noise_report(corr)
    assert r.mask == "x-line:3" and r.corr_x[0] > 0.2
    assert r.to_dict()["mask"] == "x-line:3"


def test_training_tells_the_user_about_heavy_clipping():
    from napari_b2u import api

    noisy, _ = fmdd_like_stack(3, (48, 48), photons=20, read_noise=0.02, offset=-12.0,
                               gain=400.0, seed=1)
    trainer = api.make_trainer(noisy, steps=1, device="cpu", floor="none", warm_start="none")
    assert any("clipped at the lower bound" in m for m in trainer.messages)
    clean, _ = fmdd_like_stack(3, (48, 48), offset=20.0, seed=1)  # lifted off 0: no clipping
    quiet = api.make_trainer(clean, steps=1, device="cpu", floor="none", warm_start="none")
    assert not any("clipped" in m for m in quiet.messages)


@pytest.mark.parametrize("scale", [1.0, 1 / 3000.0])
def test_variance_fit_recovers_poisson_gaussian_noise_in_any_units(scale):
    """a·signal + b per channel, in the frames' own units: raw counts or normalized ones
    (where a is far below the raw fit's lower bound)."""
    from napari_b2u.noise import variance_fit

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    x = 20 + 200 * (0.5 + 0.5 * np.sin(xx / 25.0) * np.cos(yy / 31.0))
    frames = np.stack([x + rng.normal(size=x.shape) * np.sqrt(2.0 * x + 9.0),
                       x / 2 + rng.normal(size=x.shape) * np.sqrt(0.5 * x / 2 + 4.0)])
    frames = (frames[None] * scale).astype(np.float32)  # (1, C=2, Y, X)
    (a0, b0), (a1, b1) = variance_fit(frames)
    assert a0 == pytest.approx(2.0 * scale, rel=0.25) and a1 == pytest.approx(0.5 * scale, rel=0.3)
    v0, v1 = a0 * 100 * scale + b0, a1 * 50 * scale + b1  # the variance at mid signal
    assert v0 == pytest.approx(209 * scale**2, rel=0.15)
    assert v1 == pytest.approx(29 * scale**2, rel=0.2)


def test_variance_fit_fits_the_frame_it_is_given():
    """One law per frame (the middle one by default): frames scaled on their own differ."""
    from napari_b2u.noise import variance_fit

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256]
    x = 20 + 200 * (0.5 + 0.5 * np.sin(xx / 25.0) * np.cos(yy / 31.0))
    frames = np.stack([k * (x + rng.normal(size=x.shape) * np.sqrt(2.0 * x + 9.0))
                       for k in (1.0, 3.0, 1.0)])[:, None].astype(np.float32)
    (a0, b0), = variance_fit(frames, 0)
    (a1, b1), = variance_fit(frames, 1)
    assert variance_fit(frames) == variance_fit(frames, 1)
    assert a0 == pytest.approx(2.0, rel=0.25)
    assert a1 == pytest.approx(3 * 2.0, rel=0.25)  # var(k y) = k² var(y) at signal k x
    assert a1 * 300 + b1 == pytest.approx(9 * (a0 * 100 + b0), rel=0.15)


def test_the_variance_fit_knows_noise_correlated_between_neighbours():
    """The fit's 4-neighbour residual has less variance when neighbours correlate: at 0.3 along
    X it under-estimated the variance by a fifth; given the measured correlation it does not."""
    from napari_b2u.noise import correlation_kernel, estimate_poisson_gaussian, residual_gain

    assert residual_gain() == residual_gain(np.pad([[1.0]], 3)) == 1.25
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    clean = 0.5 + 0.2 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    y = 255 * (clean + 0.05 * correlate(rng.normal(size=clean.shape), corr_x=0.3))
    true = (0.05 * 255) ** 2
    kernel = correlation_kernel(y)
    assert residual_gain(kernel) == pytest.approx(1.25 - 0.3, abs=0.06)
    _, b_white = estimate_poisson_gaussian(y)
    _, b_corr = estimate_poisson_gaussian(y, corr=kernel)
    assert b_white < 0.88 * true
    assert b_corr == pytest.approx(true, rel=0.12)


def test_correlation_shared_by_the_diagonals_is_taken_for_signal():
    """Detector noise correlated along an axis reaches the diagonals only as ρx·ρy; what the
    diagonals share beyond that (fine structure leaking into the residual, as on real 60×
    actin) is removed from the axes before the mask is chosen."""
    from napari_b2u.noise import axis_noise_correlations

    def kernel(rx, ry, diagonal):
        k = np.zeros((7, 7))
        k[3, 3] = 1.0
        k[3, 2] = k[3, 4] = rx
        k[2, 3] = k[4, 3] = ry
        k[2, 2] = k[4, 4] = k[2, 4] = k[4, 2] = diagonal
        return k

    separable = axis_noise_correlations(kernel(0.3, 0.3, 0.09))
    assert separable[0][0] == pytest.approx(0.3) and separable[1][0] == pytest.approx(0.3)
    x_only = axis_noise_correlations(kernel(0.3, 0.0, 0.0))
    assert x_only[0][0] == pytest.approx(0.3) and x_only[1][0] == pytest.approx(0.0)
    # the real actin_60x frame's lag-1 values: all of it shared with the diagonals
    leak_x, leak_y = axis_noise_correlations(kernel(0.13, 0.13, 0.10))
    assert recommend_mask(leak_x, leak_y) == "pixel"
    assert recommend_mask([0.13, 0, 0], [0.13, 0, 0]) == "box:3,3"  # what the raw values gave
    # X-correlated noise under such a leak is still found
    both_x, both_y = axis_noise_correlations(kernel(0.43, 0.13, 0.10))
    assert recommend_mask(both_x, both_y) == "x-line:3"



def _clipped_confocal(cx: float, zeros: float, frames: int = 3, side: int = 256, seed: int = 2,
                      texture: float = 0.0, width: int = 5):
    """``(unclipped, clipped)`` float frames: a background and a broad bright cell (1/``width``
    of the side wide) with noise correlated by ``cx`` along X, and the same frames with an
    offset subtracted so that ``zeros`` of the pixels read 0 (a confocal's offset setting).
    ``texture``: the amplitude of fine texture in the cell (white noise box-smoothed twice: a
    few pixels across), which is what is left to measure once the background is clipped away."""
    from napari_b2u.clipped import box_mean
    from napari_b2u.sample_data import correlate

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    cell = np.exp(-((yy - side / 2) ** 2 + (xx - 0.4 * side) ** 2) / (2 * (side / width) ** 2))
    scene = 40 + 60 * cell
    if texture:
        tex = box_mean(box_mean(rng.normal(0, 1, (side, side)), 3), 3)
        scene = scene + cell * texture * tex / tex.std()
    noise = np.stack([correlate(rng.normal(0, 1, (side, side)), cx, 0.0)
                      for _ in range(frames)])
    full = (scene + 6 * noise).astype(np.float32)
    off = np.quantile(full, zeros)
    return full, np.clip(full - off, 0, None).astype(np.float32)


@pytest.mark.parametrize("cx", [0.0, 0.3])
def test_the_noise_check_reads_a_clipped_background_as_the_unclipped_frame(cx):
    """More than half the pixels clipped at 0: the correlation is measured away from them and
    reads what it reads on the unclipped frame (the clipped background used to be the
    "flattest" part it measured on, where there is no noise: +0.03 for noise correlated by
    0.3), with the same mask and no NaN warning; the report says how much it could use."""
    import warnings

    from napari_b2u.noise import frames_report

    full, clipped = _clipped_confocal(cx, 0.55)
    unclipped_report = frames_report(full[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'invalid value encountered in sqrt'
        report = frames_report(clipped[:, None])
    assert report.clipped_low >= 0.5 and unclipped_report.usable == 1.0
    assert 0.0 < report.usable < 0.5 and "away from clipped" in report.describe()
    assert report.corr_x[0] == pytest.approx(unclipped_report.corr_x[0], abs=0.05)
    assert report.corr_x[0] == pytest.approx(cx, abs=0.05)
    assert report.mask == unclipped_report.mask == ("pixel" if cx == 0 else "x-line:3")


def test_a_few_saturated_spots_beside_a_clipped_background_are_measured_with_the_rest():
    """Half the pixels at 0 and 1 % saturated (small bright spots in the cell, a plateau of a
    float stack as after a background subtraction): the spots are not a bound the correlation
    keeps its distance from — their margins took the pixels left to measure — so the check
    reads what it reads on the unclipped frame, in float as in the integer export."""
    from napari_b2u.noise import exclusion_bounds, frames_report

    full, clipped = _clipped_confocal(0.3, 0.55)
    background_only = frames_report(clipped[:, None])
    rng = np.random.default_rng(7)
    top = float(np.quantile(clipped, 0.995))
    bright = np.argwhere(clipped[0] > np.quantile(clipped[0], 0.8))
    for f in range(clipped.shape[0]):  # 3 x 3 spots in the cell, ~4 % of the pixels
        for y, x in bright[rng.choice(len(bright), 300, replace=False)]:
            clipped[f, max(0, y - 1):y + 2, max(0, x - 1):x + 2] = top
    clipped = np.minimum(clipped, top)
    high = float((clipped >= top).mean())
    assert 0.01 < high < 0.05
    lo, hi = exclusion_bounds(clipped)
    assert lo == 0.0 and hi is None  # the background is excluded, the spots are not
    report = frames_report(clipped[:, None])
    assert report.usable == pytest.approx(background_only.usable, abs=0.02)
    assert report.corr_x[0] == pytest.approx(frames_report(full[:, None]).corr_x[0], abs=0.05)
    assert report.mask == "x-line:3"
    as_int = frames_report(np.rint(clipped * 255 / top).astype(np.uint8)[:, None])
    assert as_int.mask == "x-line:3"
    assert as_int.corr_x[0] == pytest.approx(report.corr_x[0], abs=0.05)


@pytest.mark.parametrize("zeros", [0.55, 0.65])
@pytest.mark.parametrize("cx", [0.0, 0.3])
def test_texture_left_by_clipping_is_not_read_as_correlated_noise(cx, zeros):
    """Once the background is clipped, what is left is the cell's texture, which reads as
    correlation along X and Y alike (a wider line or a box with the axis values as they are):
    only what one axis reads beyond the other is the noise's. Independent noise then gets a
    pixel, noise correlated along X a line, and the report says what it took for structure."""
    from napari_b2u.noise import (
        CORRELATED,
        axis_noise_correlations,
        exclusion_bounds,
        frames_report,
    )
    from napari_b2u.noise import _kernel as measured_kernel

    # texture as strong as the noise (6), in a cell a quarter of the side wide
    full, clipped = _clipped_confocal(cx, zeros, texture=6.0, width=4)
    planes = clipped.reshape((-1,) + clipped.shape[-2:])
    raw = axis_noise_correlations(measured_kernel(planes, 3, exclusion_bounds(planes))[0])
    expected = "pixel" if cx == 0 else "x-line:3"
    assert recommend_mask(*raw) != expected  # what the axis values alone would give
    unclipped_report = frames_report(full[:, None])
    report = frames_report(clipped[:, None])
    assert report.clipped_low >= zeros - 0.01 and 0.0 < report.usable < 0.5
    assert report.mask == unclipped_report.mask == expected
    assert report.corr_y == [0.0, 0.0, 0.0]
    assert (report.corr_x[0] >= CORRELATED) == (cx > 0)
    assert any("taken for the fine structure" in n for n in report.notes)


def test_only_the_lags_from_one_up_count_in_clipped_data():
    """A scanner's correlation fades with the lag: a lone lag along the other axis, or one
    after a gap, is structure."""
    from napari_b2u.noise import anisotropic_correlations

    x, y = anisotropic_correlations([0.34, 0.10, 0.05], [0.19, 0.11, 0.02])
    assert x == [0.34, 0.0, 0.0] and y == [0.0, 0.0, 0.0]
    x, y = anisotropic_correlations([0.0, 0.0, 0.0], [0.0, 0.0, 0.15])  # lone lag 3
    assert x == [0.0] * 3 and y == [0.0] * 3
    x, y = anisotropic_correlations([0.40, 0.25, 0.02], [0.05, 0.10, 0.0])
    assert x == [0.40, 0.25, 0.0] and recommend_mask(x, y) == "x-line:5"


def test_too_few_unclipped_pixels_say_so_and_assume_independent_noise():
    from napari_b2u.noise import frames_report

    _, clipped = _clipped_confocal(0.3, 0.93, frames=2, side=128)
    rep = frames_report(clipped[:, None])
    assert rep.usable == 0.0 and rep.mask == "pixel"
    assert any("too few pixels away from the clipped ones" in n for n in rep.notes)


def test_scattered_clipped_pixels_change_nothing():
    """Below CLIPPED_BACKGROUND (low counts reaching 0 here and there, a few saturated spots)
    every pixel is measured, as before."""
    noisy, _ = fmdd_like_stack(3, (128, 128), seed=5)  # ~12 % zeros
    rep = noise_report(noisy)
    assert 0.05 < rep.clipped_low < 0.25 and rep.usable == 1.0 and rep.mask == "pixel"

def test_the_variance_fit_leaves_clipped_blocks_out():
    """A Poisson-Gaussian frame with 30 % of its pixels clipped at 0: blocks touching them
    have less variance than their level's (the noise is cut), which bent the fitted law; the
    fit on the rest recovers the unclipped frame's law."""
    from napari_b2u.noise import estimate_poisson_gaussian

    rng = np.random.default_rng(3)
    ramp = np.tile(np.linspace(0, 200, 256), (256, 1))
    y = rng.poisson(ramp) + rng.normal(0, 3, ramp.shape) - 60  # var = y + 60 + 9
    a, b = estimate_poisson_gaussian(y)
    clipped = np.clip(y, 0, None)
    assert (clipped == 0).mean() > 0.25
    a_c, b_c = estimate_poisson_gaussian(clipped)
    for level in (20.0, 100.0):
        truth = level + 69.0
        assert a * level + b == pytest.approx(truth, rel=0.15)
        assert a_c * level + b_c == pytest.approx(truth, rel=0.15)
