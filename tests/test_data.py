import numpy as np
import pytest

from napari_b2u.data import (
    InputError,
    Layout,
    cast_output,
    fit_normalization,
    parse_axes,
    validate_stack,
)


@pytest.mark.parametrize("axes,ndim,expected", [
    (None, 2, "YX"), (None, 3, "TYX"), ("tyx", 3, "TYX"), ("TCZYX", 5, "TCZYX"),
    (" zyx ", 3, "ZYX"),
])
def test_parse_axes_ok(axes, ndim, expected):
    assert parse_axes(axes, ndim) == expected


@pytest.mark.parametrize("axes,ndim,match", [
    ("TYX", 2, "3 letters but the array has 2"),
    ("TTX", 3, "repeats"),
    ("TZX", 3, "both Y and X"),
    ("TBYX", 4, "unknown letter"),
    (None, 4, "explicit axes"),
    (5, 2, "must be a string"),
])
def test_parse_axes_errors(axes, ndim, match):
    with pytest.raises(InputError, match=match):
        parse_axes(axes, ndim)


@pytest.mark.parametrize("axes,shape", [
    ("YX", (5, 6)), ("TYX", (3, 5, 6)), ("YXT", (5, 6, 3)), ("CYX", (2, 5, 6)),
    ("TCZYX", (2, 3, 4, 5, 6)), ("ZYXC", (4, 5, 6, 2)), ("XYZ", (6, 5, 4)),
])
def test_layout_roundtrip(axes, shape):
    arr = np.arange(np.prod(shape)).reshape(shape)
    lay = Layout(axes, shape)
    frames = lay.to_frames(arr)
    assert frames.ndim == 4 and frames.shape[-2:] == lay.frame_shape
    assert frames.shape[1] == lay.n_channels
    np.testing.assert_array_equal(lay.from_frames(frames), arr)


def test_layout_frame_is_a_real_2d_frame():
    arr = np.random.default_rng(0).random((3, 2, 5, 6))  # TCYX
    lay = Layout("TCYX", arr.shape)
    frames = lay.to_frames(arr)
    np.testing.assert_array_equal(frames[1, 0], arr[1, 0])
    lay2 = Layout("YXT", (5, 6, 4))
    arr2 = np.random.default_rng(1).random((5, 6, 4))
    np.testing.assert_array_equal(lay2.to_frames(arr2)[2, 0], arr2[:, :, 2])


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 10, 10)), "empty"),
    (np.zeros((10, 10), bool), "boolean"),
    (np.zeros((10, 10), complex), "complex"),
    (np.array([["a"] * 10] * 10), "not numeric"),
    (np.zeros(10), "at least a 2D"),
    (np.zeros((3, 10)), "3x10"),
])
def test_validate_rejects(bad, match):
    with pytest.raises(InputError, match=match):
        validate_stack(bad)


def test_validate_rejects_nan_and_inf():
    x = np.ones((10, 10), np.float32)
    x[1, 2] = np.nan
    x[3, 3] = np.inf
    with pytest.raises(InputError, match="1 NaN and 1 infinite"):
        validate_stack(x)


def test_normalization_uint8_is_divide_by_255():
    frames = np.random.default_rng(0).integers(0, 200, (2, 1, 8, 8)).astype(np.uint8)
    n = fit_normalization(frames)
    assert n.mode == "range" and n.offset == [0.0] and n.scale == [255.0]
    np.testing.assert_allclose(n.apply(frames), frames / 255.0, rtol=1e-6)


def test_normalization_percentile_roundtrip_per_channel():
    rng = np.random.default_rng(0)
    frames = np.stack([rng.normal(100, 10, (3, 16, 16)), rng.normal(5000, 300, (3, 16, 16))],
                      axis=1).astype(np.uint16)
    n = fit_normalization(frames)
    assert n.mode == "percentile" and len(n.offset) == 2
    z = n.apply(frames)
    assert -0.1 < z.min() and z.max() < 1.1
    np.testing.assert_allclose(n.invert(z), frames, rtol=1e-5, atol=1e-2)


def test_constant_channel_is_an_error():
    with pytest.raises(InputError, match="constant"):
        fit_normalization(np.full((2, 1, 8, 8), 7, np.uint16))


def test_cast_output():
    x = np.array([-3.4, 0.4, 0.6, 254.6, 300.0])
    np.testing.assert_array_equal(cast_output(x, np.uint8), [0, 0, 1, 255, 255])
    assert cast_output(x, "float32").dtype == np.float32


def test_dask_and_memmap_inputs(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (3, 16, 16)).astype(np.uint8)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint8,
                                   shape=arr.shape)
    mm[:] = arr
    mm.flush()
    ro = np.load(tmp_path / "a.npy", mmap_mode="r")
    out, ax = validate_stack(ro)
    assert ax == "TYX" and out.shape == arr.shape
    da = pytest.importorskip("dask.array")
    out, _ = validate_stack(da.from_array(arr, chunks=(1, 16, 16)))
    np.testing.assert_array_equal(out, arr)
