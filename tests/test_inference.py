import pickle

import numpy as np
import pytest
import torch

from napari_b2u import api
from napari_b2u.data import InputError
from napari_b2u.denoise.denoiser import Denoiser
from napari_b2u.denoise.tiling import tile_starts

from .conftest import TINY


def test_save_load_denoise_identical(tiny_model, small_stack, tmp_path):
    noisy, _ = small_stack
    a = tiny_model.denoise(noisy, dtype="float32")
    path = tiny_model.save(tmp_path / "m.b2u")
    loaded = api.load(path)
    b = loaded.denoise(noisy, dtype="float32")
    np.testing.assert_array_equal(a, b)
    assert loaded.method_name == "b2u" and loaded.normalization == tiny_model.normalization
    c = api.denoise_stack(noisy, str(path), dtype="float32")
    np.testing.assert_array_equal(a, c)


def test_save_without_suffix_and_atomic(tiny_model, tmp_path):
    p = tiny_model.save(tmp_path / "model")
    assert p.suffix == ".b2u" and p.exists()
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("shape", [(37, 53), (5, 7), (1, 33, 17)])
def test_odd_sizes(tiny_model, shape):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, shape).astype(np.uint8)
    out = tiny_model.denoise(x)
    assert out.shape == x.shape and out.dtype == np.uint8


@pytest.mark.parametrize("axes,shape", [
    ("YX", (40, 36)),
    ("TYX", (3, 40, 36)),
    ("ZYX", (3, 40, 36)),
    ("YXT", (40, 36, 3)),
    ("TZYX", (2, 3, 40, 36)),
])
def test_axes_single_channel(tiny_model, axes, shape):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, shape).astype(np.uint8)
    out = tiny_model.denoise(x, axes=axes, dtype="float32")
    assert out.shape == shape
    # frame-wise: each 2D frame denoised on its own, same as a 2D call
    if axes == "YXT":
        np.testing.assert_allclose(out[..., 1], tiny_model.denoise(x[..., 1], dtype="float32"),
                                   atol=1e-3)  # batched vs single-frame conv rounding


@pytest.mark.parametrize("axes,shape", [("CYX", (2, 40, 36)), ("TCZYX", (2, 2, 3, 40, 36)),
                                        ("ZCYX", (3, 2, 40, 36))])
def test_axes_with_channels_train_and_denoise(axes, shape):
    rng = np.random.default_rng(2)
    x = (rng.poisson(30, shape) + np.arange(shape[axes.index("C")]).reshape(
        [-1 if a == "C" else 1 for a in axes]) * 50).astype(np.uint16)
    model = api.train_stack(x, axes=axes, steps=3, **TINY)
    assert model.n_channels == 2
    assert len(model.normalization.offset) == 2
    # channels keep their own scale: channel 1 is ~50 counts brighter
    assert model.normalization.offset[1] > model.normalization.offset[0] + 20
    out = model.denoise(x, axes=axes)
    assert out.shape == shape and out.dtype == np.uint16
    with pytest.raises(InputError, match="channel"):
        model.denoise(x.take(0, axis=axes.index("C")), axes=axes.replace("C", ""))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_output_dtype_and_units_follow_input(dtype):
    from napari_b2u.sample_data import fmdd_like_stack

    noisy, clean = fmdd_like_stack(6, (48, 48), seed=5, dtype=np.float64)
    offset = -100 if dtype == np.int16 else 0
    scale = 40 if dtype in (np.uint16, np.int16) else (1 / 255 if dtype in (
        np.float32, np.float64) else 1)
    x = (noisy * scale + offset)
    x = np.clip(np.rint(x), 0, 255).astype(dtype) if dtype == np.uint8 else x.astype(dtype)
    model = api.train_stack(x, steps=20, **TINY)
    out = model.denoise(x)
    assert out.dtype == dtype
    # same units: the denoised stack sits on the input's scale (mean within 10 %)
    rng = float(np.ptp(x.astype(np.float64)))
    assert abs(out.astype(np.float64).mean() - x.astype(np.float64).mean()) < 0.1 * rng
    f32 = model.denoise(x, dtype="float32")
    assert f32.dtype == np.float32


def test_integer_output_is_rounded_and_clipped(tiny_model):
    x = np.full((32, 32), 255, np.uint8)
    x[::2, ::2] = 0
    out = tiny_model.denoise(x)
    assert out.dtype == np.uint8  # no wrap-around: values stay in 0..255 by construction


def test_input_never_modified(tiny_model, small_stack):
    noisy, _ = small_stack
    before = noisy.copy()
    tiny_model.denoise(noisy)
    tiny_model.denoise(noisy, output="weighted")
    np.testing.assert_array_equal(noisy, before)


def test_tiled_matches_whole_frame(tiny_model, small_stack):
    """Tiles with an overlap wider than the tiny net's receptive field reproduce the untiled
    result in the kept interior."""
    noisy, _ = small_stack
    x = np.concatenate([np.concatenate([noisy[0], noisy[1]], 1)] * 2, 0)  # 128 x 128
    whole = tiny_model.denoise(x, dtype="float32", tile_size=1024)
    tiled = tiny_model.denoise(x, dtype="float32", tile_size=64, tile_overlap=16)
    np.testing.assert_allclose(tiled, whole, atol=0.05)  # 8-bit units


def test_tile_starts_cover_everything():
    for size, tile, ov in [(100, 64, 16), (1000, 256, 32), (64, 64, 8), (65, 64, 8)]:
        starts = tile_starts(size, tile, ov)
        covered = np.zeros(size, bool)
        from napari_b2u.denoise.tiling import keep

        for s in starts:
            lo, hi = keep(s, min(tile, size), size, ov)
            covered[lo:hi] = True
        assert covered.all()


def test_weighted_and_blind_outputs(tiny_model, small_stack):
    noisy, _ = small_stack
    vis = tiny_model.denoise(noisy[:2], dtype="float32")
    wei = tiny_model.denoise(noisy[:2], output="weighted", dtype="float32")
    bli = tiny_model.denoise(noisy[:2], output="blind", dtype="float32")
    lam = tiny_model.method_params["lambda_end"]
    np.testing.assert_allclose(wei, (bli + lam * vis) / (lam + 1), atol=1e-3)
    with pytest.raises(ValueError, match="outputs"):
        tiny_model.denoise(noisy[:1], output="sharpest")


def test_load_refuses_foreign_and_unsafe_files(tmp_path, tiny_model):
    # a pickle that would run code on unpickling
    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "flag"),))

    evil = tmp_path / "evil.b2u"
    with open(evil, "wb") as fh:
        pickle.dump({"format": "napari-b2u-model", "x": Evil()}, fh)
    with pytest.raises(InputError, match="not a readable"):
        api.load(evil)
    assert not (tmp_path / "flag").exists()
    # a torch file that is not ours
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="not a napari-b2u model"):
        api.load(other)
    # a newer format version
    ck = tiny_model.to_checkpoint()
    ck["version"] = 99
    newer = tmp_path / "newer.b2u"
    torch.save(ck, newer)
    with pytest.raises(InputError, match="newer napari-b2u"):
        api.load(newer)
    # truncated file
    good = tiny_model.save(tmp_path / "good.b2u")
    trunc = tmp_path / "trunc.b2u"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError):
        api.load(trunc)
    with pytest.raises(InputError, match="no model file"):
        api.load(tmp_path / "missing.b2u")


def test_denoise_iter_reports_progress_and_cancels(tiny_model, small_stack):
    noisy, _ = small_stack
    it = tiny_model.denoise_iter(noisy, batch_size=2, tta=False)
    first = [next(it) for _ in range(3)]
    assert first == [(0, 8), (2, 8), (4, 8)]
    it.close()  # cancelling leaves nothing half-done in the caller's data


def test_repr_and_readout(tiny_model):
    assert "b2u" in repr(tiny_model)
    assert isinstance(tiny_model.readout(), dict)
    assert isinstance(Denoiser.load, object)


def test_denoise_iter_yields_between_tiles_and_cancels_within_one(tiny_model, monkeypatch):
    # one 100×300 frame in 192-px tiles with 64 px overlap: 3 tiles along X
    frame = np.random.default_rng(0).integers(0, 255, (100, 300)).astype(np.uint8)
    full = tiny_model.denoise(frame, tile_size=192, tta=False)
    seen = list(_drain(tiny_model.denoise_iter(frame, tile_size=192, tta=False)))
    assert seen == [(0, 1), (0, 1), (0, 1), (1, 1)]  # start, between tiles, done
    # tiles agree with the whole frame up to 8-bit rounding
    np.testing.assert_allclose(full.astype(int),
                               tiny_model.denoise(frame, tta=False).astype(int), atol=1)
    # with ensembling, a cancel waits for one view of one tile, not eight
    views = list(_drain(tiny_model.denoise_iter(frame, tile_size=192, tta=True)))
    assert len(views) == 2 + 3 * 8 - 1
    calls = {"n": 0}
    real = type(tiny_model._method).predict

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(type(tiny_model._method), "predict", counting)
    it = tiny_model.denoise_iter(frame, tile_size=192, tta=False)
    next(it), next(it)  # started, first tile done
    it.close()  # cancel: no further tile runs
    assert calls["n"] == 1


def _drain(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_cpu_weighted_output_of_large_frames_uses_smaller_tiles(tiny_model, monkeypatch):
    # a cancel waits for one tile: on CPU the weighted output's s²+1 copies of a tile must fit
    # the batch budget, so large frames get smaller tiles (here: budget for 320² x 5 copies)
    from napari_b2u.denoise import predict as inference
    from napari_b2u.denoise.predict import TILE_OVERLAP
    from napari_b2u.denoise.tiling import tile_starts

    monkeypatch.setitem(inference.TILE_SIZE, "cpu", 512)
    monkeypatch.setitem(inference.PIXEL_BUDGET, "cpu", 5 * 320 * 320)
    frame = np.random.default_rng(1).integers(0, 255, (600, 600)).astype(np.uint8)
    calls = []
    real = type(tiny_model._method).predict

    def counting(self, model, x, output=None):
        calls.append((output, x.shape[-1]))
        return real(self, model, x, output)

    monkeypatch.setattr(type(tiny_model._method), "predict", counting)
    tiny_model.denoise(frame, output="weighted", device="cpu", tta=False)
    n = len(tile_starts(600, 320, TILE_OVERLAP))
    assert calls == [("weighted", 320)] * n * n
    calls.clear()
    tiny_model.denoise(frame, output="visible", device="cpu", tta=False)  # the usual tiles
    n = len(tile_starts(600, 512, TILE_OVERLAP))
    assert calls == [("visible", 512)] * n * n


def test_test_time_ensembling_is_the_mean_of_the_eight_views(tiny_model, small_stack):
    import torch

    from napari_b2u.denoise.predict import dihedral

    noisy, _ = small_stack
    x = noisy[:2]
    one = tiny_model.denoise(x, dtype="float32", tta=False)
    ens = tiny_model.denoise(x, dtype="float32", tta=True)
    assert not np.allclose(one, ens)
    # by hand: each view denoised and mapped back, then averaged
    views = []
    for v in range(8):
        t = torch.from_numpy(x.copy())
        z = dihedral(t, v).numpy().copy()
        d = torch.from_numpy(tiny_model.denoise(z, dtype="float32", tta=False))
        views.append(dihedral(d, v, inverse=True).numpy())
    np.testing.assert_allclose(ens, np.mean(views, 0), atol=1e-3)
    # 'auto' on a CPU: the 4 rotations for small frames (all 8 gain little for twice the time)
    np.testing.assert_array_equal(tiny_model.denoise(x, dtype="float32"),
                                  tiny_model.denoise(x, dtype="float32", tta=4))
    with pytest.raises(ValueError, match="tta="):
        tiny_model.denoise(x, tta="always")


def test_inference_in_the_presets_layout_gives_the_same_output(tiny_model, small_stack):
    """CPU inference runs the network channels-last as the CPU preset trains (about twice as
    fast on 2 cores): the output is the plain NCHW network's."""
    from napari_b2u.config import PRESETS

    noisy, _ = small_stack
    x = noisy[:2]
    out = tiny_model.denoise(x, dtype="float32", tta=1)
    net = tiny_model.model("cpu")
    assert PRESETS["cpu"]["channels_last"] and tiny_model.method.channels_last
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in net.parameters())
    plain = tiny_model.method.build(tiny_model.model_config)
    plain.load_state_dict(tiny_model.state_dict)
    plain.eval()  # NCHW, 64² frames: a multiple of the U-Net's, no padding
    norm = tiny_model.normalization
    with torch.no_grad():
        y = torch.from_numpy(norm.apply(x[:, None].astype(np.float32)))
        ref = plain(y).numpy()
    ref = norm.invert(ref, np.float32)[:, 0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)


def test_auto_ensembling_takes_the_views_that_fit_the_budget(tiny_model, small_stack,
                                                              monkeypatch):
    """'auto' averages 4, 2 or 1 views on a CPU (8 where the device allows), as many as fit
    the device's budget for ONE frame, whatever the number of frames; a count asks for that
    many (the rotations first)."""
    from napari_b2u.denoise import predict as inference
    from napari_b2u.denoise.predict import dihedral, ensemble_views

    noisy, _ = small_stack
    x = noisy[:2]
    cpu = torch.device("cpu")
    pixels = x[0].size  # one frame, one channel, the visible output: one copy
    method = tiny_model.method
    for budget, views in ((8 * pixels, 4), (4 * pixels, 4), (4 * pixels - 1, 2),
                          (3 * pixels, 2), (pixels, 1), (pixels // 2, 1)):
        monkeypatch.setitem(inference.TTA_AUTO_FRAME_PIXELS, "cpu", budget)
        for n in (1, 2, 1000):  # one frame's budget: the stack's length does not count
            assert ensemble_views(method, (n, 1) + x.shape[1:], "visible", cpu) == views
    monkeypatch.setitem(inference.TTA_AUTO_MAX_VIEWS, "cpu", 8)
    monkeypatch.setitem(inference.TTA_AUTO_FRAME_PIXELS, "cpu", 8 * pixels)
    assert ensemble_views(method, (5, 1) + x.shape[1:], "visible", cpu) == 8
    monkeypatch.setitem(inference.TTA_AUTO_FRAME_PIXELS, "cpu", 4 * pixels)
    four = tiny_model.denoise(x, dtype="float32")
    np.testing.assert_array_equal(four, tiny_model.denoise(x, dtype="float32", tta=4))
    rotations = [dihedral(torch.from_numpy(tiny_model.denoise(
        dihedral(torch.from_numpy(x.copy()), v).numpy().copy(), dtype="float32", tta=False)),
        v, inverse=True).numpy() for v in range(4)]
    np.testing.assert_allclose(four, np.mean(rotations, 0), atol=1e-3)
    shape = (2, 1) + x.shape[1:]
    assert ensemble_views(method, shape, "visible", cpu, tta=True) == 8
    assert ensemble_views(method, shape, "visible", cpu, tta=False) == 1
    for bad in (3, 0, 16, "4"):
        with pytest.raises(InputError, match="number of views"):
            ensemble_views(method, shape, "visible", cpu, tta=bad)


def test_a_frames_result_does_not_depend_on_what_is_denoised_with_it(tiny_model, tmp_path):
    """With ensembling 'auto' (the default), frame 3 gives the same pixels denoised alone,
    inside a long stack, as a crop of the stack's frames and out of core: its views follow from
    one frame's size, not from the stack's (a 300-frame stack of 128² used to get 4 views where
    the frame alone got 8)."""
    from napari_b2u.denoise.predict import ensemble_views

    rng = np.random.default_rng(4)
    stack = rng.normal(100, 20, (300, 128, 128)).astype(np.float32)
    cpu = torch.device("cpu")
    views = ensemble_views(tiny_model.method, (300, 1, 128, 128), "visible", cpu)
    assert views == ensemble_views(tiny_model.method, (1, 128, 128), "visible", cpu) > 1
    whole = tiny_model.denoise(stack, axes="TYX", dtype="float32")
    alone = tiny_model.denoise(stack[3], axes="YX", dtype="float32")
    crop = tiny_model.denoise(stack[2:5], axes="TYX", dtype="float32")
    # equal up to float rounding: a batch of 1 or of 8 frames may take other CPU kernels
    # (relative 1e-6); a different number of views differs by far more (below)
    same = dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(whole[3], alone, **same)
    np.testing.assert_allclose(crop[1], alone, **same)
    other = tiny_model.denoise(stack[3], axes="YX", dtype="float32", tta=8 if views < 8 else 4)
    assert np.abs(other - alone).max() > 100 * same["atol"]
    out = tiny_model.denoise_to_zarr(stack[:8], str(tmp_path / "o.ome.zarr"), axes="TYX",
                                     dtype="float32")
    import zarr

    written = zarr.open(str(tmp_path / "o.ome.zarr"), mode="r")["0"][3]
    np.testing.assert_allclose(np.asarray(written), alone, **same)
    assert out is not None


def test_check_stack_refuses_a_channel_mismatch_without_data(tiny_model):
    lay = tiny_model.check_stack((4, 32, 32), "TYX")
    assert lay.n_frames == 4
    with pytest.raises(ValueError, match="trained on 1 channel"):
        tiny_model.check_stack((2, 32, 32), "CYX")


def test_info_with_str_subclasses_still_loads(tiny_model, tmp_path):
    """torch.__version__ is a str subclass; weights_only loading refuses such classes."""
    import torch

    from napari_b2u.denoise.denoiser import Denoiser

    m = Denoiser(tiny_model.method_name, tiny_model.method_params, tiny_model.model_config,
                 tiny_model.state_dict, tiny_model.normalization,
                 {**tiny_model.info, "torch": torch.__version__})
    assert api_load(m.save(tmp_path / "v.b2u")).info["torch"] == str(torch.__version__)


def api_load(path):
    from napari_b2u import api

    return api.load(path)
