import numpy as np
import pytest

from napari_b2u.metrics import evaluate, psnr, ssim, to_uint8
from napari_b2u.sample_data import clean_scene, fmdd_like_stack


def test_psnr_hand_value():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 5.0)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 25))
    assert psnr(a, a) == float("inf")


def test_ssim_matches_skimage_gaussian():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (40, 50)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    ref = skm.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)


def test_evaluate_rounds_to_8bit():
    ref = np.full((20, 20), 100.0)
    img = ref + 0.4  # rounds back to 100
    assert evaluate(img, ref)[0] == float("inf")
    np.testing.assert_array_equal(to_uint8(np.array([-5.0, 300.0])), [0, 255])


def test_sample_is_fmdd_like():
    noisy, clean = fmdd_like_stack(5, (128, 128), seed=0)
    assert noisy.shape == (5, 128, 128) and noisy.dtype == np.uint8
    assert clean.shape == (128, 128) and clean.dtype == np.float32
    p = np.mean([evaluate(f, clean)[0] for f in noisy])
    assert 22 < p < 28  # a confocal-like noise level
    # averaging frames approaches the clean image, as FMDD's avg50 ground truth does
    assert evaluate(noisy.mean(0), clean)[0] > p + 5
    # deterministic by seed
    np.testing.assert_array_equal(fmdd_like_stack(2, (32, 32), seed=4)[0],
                                  fmdd_like_stack(2, (32, 32), seed=4)[0])


def test_clean_scene_has_structure():
    c = clean_scene((96, 96), seed=1)
    assert 0 <= c.min() and c.max() <= 1
    assert c.std() > 0.05
