"""An image far outside the range a model was trained on (issue 30, item 3): a model trained on
float data near 1e12 gave one constant value everywhere for an 8-bit image, silently. Now the
core refuses it with a RangeMismatch naming the fix, and ``normalize="image"`` (CLI
``--normalize image``) scales the image on its own values."""

import numpy as np
import pytest
import tifffile

from napari_b2u import api
from napari_b2u.data import Normalization
from napari_b2u.denoise.domain import check_range
from napari_b2u.errors import InputError, RangeMismatch

from .conftest import TINY, refused


@pytest.fixture(scope="module")
def far_model(small_stack):
    """A tiny model trained on float frames near 1e12 (the noisy stack × 1e9 + 1e12)."""
    noisy, _ = small_stack
    return api.train_stack(noisy.astype(np.float64) * 1e9 + 1e12, steps=3, seed=0, context=0,
                           **TINY)


def test_an_8bit_image_on_a_model_of_data_near_1e12_is_refused_not_constant(far_model,
                                                                             small_stack):
    noisy, _ = small_stack
    with pytest.raises(RangeMismatch) as info:
        far_model.denoise(noisy[:2])
    text = str(info.value)
    assert "do not fit the range this model was trained on" in text
    assert "normalize='image'" in text and "--normalize image" in text
    assert "1e+12" in text and info.value.outside == 1.0
    # with the image's own scaling: a real image in the input's range, not a constant
    out = far_model.denoise(noisy[:2], normalize="image")
    assert out.dtype == np.uint8 and out.shape == noisy[:2].shape
    assert len(np.unique(out)) > 20
    f = far_model.denoise(noisy[:2], normalize="image", dtype="float32")
    assert -50 < f.mean() < 300 and f.std() > 1
    assert abs(float(f.mean()) - float(noisy[:2].mean())) < 0.5 * float(noisy[:2].std()) + 20
    # the data it was trained on is scaled as before
    same = noisy[:2].astype(np.float64) * 1e9 + 1e12
    np.testing.assert_array_equal(far_model.denoise(same),
                                  far_model.denoise(same, normalize="model"))
    with pytest.raises(InputError, match="unknown normalize"):
        far_model.denoise(noisy[:2], normalize="own")


@pytest.mark.parametrize("factor", [0.02, 0.3, 2.5])
def test_brighter_and_dimmer_images_of_the_same_kind_are_not_refused(factor):
    """The rule's margins: an acquisition 50× dimmer or 2.5× brighter than the training data
    (bright spots beyond it included) is scaled with the model's normalization as before."""
    rng = np.random.default_rng(0)
    norm = Normalization([100.0], [900.0])  # trained on 100 … 1000
    img = 100 + factor * rng.uniform(0, 900, (2, 1, 64, 64))
    img[:, :, :4, :4] = 60000  # a few saturated pixels
    check_range(norm, img)


def test_the_rule_refuses_far_away_and_faint_images():
    norm = Normalization([100.0], [900.0])
    rng = np.random.default_rng(0)
    with pytest.raises(RangeMismatch, match="more than a whole training range outside"):
        check_range(norm, 3000 + rng.uniform(0, 900, (2, 1, 32, 32)))  # 3× the range beyond
    with pytest.raises(RangeMismatch, match="vary over only"):  # spread 1e-9 of the range
        check_range(Normalization([0.0], [1e12]), rng.uniform(0, 255, (2, 1, 32, 32)))
    check_range(norm, np.full((2, 1, 32, 32), 500.0))  # a constant image: nothing is lost
    two = np.stack([500 + rng.uniform(0, 90, (2, 32, 32)), 1e6 + rng.uniform(0, 9, (2, 32, 32))],
                   1)
    with pytest.raises(RangeMismatch, match="in channel 1") as info:
        check_range(Normalization([100.0, 100.0], [900.0, 900.0]), two)
    assert info.value.channel == 1


def test_cli_refuses_in_one_line_and_denoises_with_normalize_image(far_model, small_stack,
                                                                   tmp_path, capsys):
    noisy, _ = small_stack
    model = far_model.save(tmp_path / "far.b2u")
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, noisy[:2])
    out = tmp_path / "out.tif"
    refused(capsys, ["denoise", str(src), "--model", str(model), "--out", str(out), "-q"],
            "do not fit the range", "--normalize image")
    assert not out.exists()
    from napari_b2u.cli import main

    assert main(["denoise", str(src), "--model", str(model), "--out", str(out), "-q",
                 "--normalize", "image"]) == 0
    res = tifffile.imread(out)
    assert res.dtype == np.uint8 and len(np.unique(res)) > 20
    np.testing.assert_array_equal(res, far_model.denoise(noisy[:2], normalize="image"))


def test_ome_zarr_refuses_before_writing_and_equals_in_memory_with_normalize_image(
        far_model, small_stack, tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    noisy, _ = small_stack
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(RangeMismatch):
        far_model.denoise_to_zarr(noisy[:2], out)
    assert not out.exists()
    res = far_model.denoise_to_zarr(noisy[:2], out, normalize="image", batch_size=2)
    np.testing.assert_array_equal(np.asarray(res.open()[0]),
                                  far_model.denoise(noisy[:2], normalize="image", batch_size=2))
