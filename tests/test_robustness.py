"""Bad input, faults and files: every case gets a clear message (or is handled), nothing the
user had is modified, and the engine survives OOM, NaN losses, stops and restarts."""

import warnings

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_b2u import api
from napari_b2u.data import InputError, Layout, validate_stack
from napari_b2u.io.readers import read_image
from napari_b2u.io.tiff import write_tiff

from .conftest import TINY, TINY_T

FAST = dict(width=8, depth=2, patch_size=16, batch_size=2, device="cpu", progress=False)


# ---- arrays ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: np.full((4, 32, 32), np.nan, np.float32), "NaN"),
    (lambda: np.where(np.eye(32) > 0, np.inf, 1.0)[None].repeat(3, 0), "infinite"),
    (lambda: np.full((4, 32, 32), 7, np.uint16), "constant"),
    (lambda: np.zeros((4, 32, 32), np.uint8), "constant"),
    (lambda: np.zeros((4, 32, 32), bool), "boolean"),
    (lambda: np.zeros((4, 32, 32), np.complex64), "complex"),
    (lambda: np.empty((4, 32, 32), object), "not numeric"),
    (lambda: np.zeros((64, 64, 3), np.uint8), "RGB"),
    (lambda: np.zeros((0, 32, 32), np.uint8), "empty"),
    (lambda: np.ones((5, 1, 64)), "1x64"),
    (lambda: np.ones(64), "at least a 2D"),
])
def test_bad_arrays_give_clear_errors(make, match):
    with pytest.raises(InputError, match=match):
        api.train_stack(make(), steps=1, **FAST)


@pytest.mark.parametrize("axes,match", [("TYX", "2 dimensions"), ("YXZ", "3 letters"),
                                        ("QQ", "repeats"), ("AB", "unknown letter"),
                                        (None, "explicit axes")])
def test_wrong_or_ambiguous_axes(axes, match):
    arr = np.ones((4, 4, 32, 32)) if axes is None else np.ones((32, 32))
    with pytest.raises(InputError, match=match):
        api.train_stack(arr, axes=axes, steps=1, **FAST)


def test_all_zero_frames_are_left_out(small_stack):
    noisy, _ = small_stack
    x = noisy.copy()
    x[[1, 4]] = 0
    with pytest.warns(UserWarning, match=r"2 of 8 frames are constant.*\[1, 4\]"):
        t = api.make_trainer(x, steps=2, **{k: v for k, v in FAST.items() if k != "progress"})
    assert t.data.train.shape[0] + t.data.val.shape[0] == 6
    assert np.all(t.data.train.reshape(t.data.train.shape[0], -1).std(1) > 0)
    out = t.result().denoise(x)
    assert out.shape == x.shape  # the constant frames are still denoised (and kept in place)


def test_negative_values_work():
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (6, 32, 32)) - 5).astype(np.float32)  # background-subtracted data
    out = api.train_stack(x, steps=3, **FAST).denoise(x)
    assert out.dtype == np.float32 and out.mean() < 0


def test_huge_dynamic_range_warns_and_keeps_units():
    rng = np.random.default_rng(0)
    x = rng.poisson(100, (6, 32, 32)).astype(np.uint16)
    x[0, 5, 5] = x[3, 10, 10] = 65535  # saturated pixels
    with pytest.warns(UserWarning, match="brighter than the bulk"):
        model = api.train_stack(x, steps=3, **FAST)
    out = model.denoise(x)
    assert out.dtype == np.uint16 and 50 < np.median(out) < 150


def test_smaller_than_patch_frames_reduce_the_patch():
    x = np.random.default_rng(0).poisson(20, (8, 24, 40)).astype(np.uint8)
    with pytest.warns(UserWarning, match="using 24"):
        model = api.train_stack(x, steps=2, **{**FAST, "patch_size": 64})
    assert model.info["patch_size"] == 24


def test_frames_too_small_for_the_network():
    x = np.random.default_rng(0).poisson(20, (8, 20, 20)).astype(np.uint8)
    with pytest.raises(InputError, match="smaller than the network's minimum patch of 32x32"):
        api.train_stack(x, steps=1, device="cpu", width=8, depth=5, progress=False)


def test_memmap_and_dask_are_not_modified(tmp_path, tiny_model):
    arr = np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8)
    np.save(tmp_path / "a.npy", arr)
    ro = np.load(tmp_path / "a.npy", mmap_mode="r")
    out = tiny_model.denoise(ro)
    assert out.shape == arr.shape
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)
    da = pytest.importorskip("dask.array")
    np.testing.assert_array_equal(tiny_model.denoise(da.from_array(arr, chunks=1)), out)


# property-based: shapes, dtypes and axes through the data and inference paths
AXES = st.sampled_from(["YX", "TYX", "ZYX", "YXT", "TZYX", "ZTYX", "SYX", "TYXZ"])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])


@st.composite
def stacks(draw):
    axes = draw(AXES)
    shape = tuple(draw(st.integers(4, 19)) if a in "YX" else draw(st.integers(1, 3))
                  for a in axes)
    dtype = draw(DTYPES)
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)
    return arr, axes


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(stacks())
def test_property_layout_roundtrip(case):
    arr, axes = case
    checked, ax = validate_stack(arr, axes)
    lay = Layout(ax, checked.shape)
    frames = lay.to_frames(checked)
    assert frames.shape[-2:] == (arr.shape[axes.index("Y")], arr.shape[axes.index("X")])
    np.testing.assert_array_equal(lay.from_frames(frames), arr)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=stacks(), output=st.sampled_from(["visible", "weighted"]))
def test_property_denoise_keeps_shape_dtype_and_input(tiny_model, case, output):
    arr, axes = case
    before = arr.copy()
    out = tiny_model.denoise(arr, axes=axes, output=output)
    assert out.shape == arr.shape and out.dtype == arr.dtype
    if arr.dtype.kind == "f":
        assert np.isfinite(out).all()
    np.testing.assert_array_equal(arr, before)


# ---- files ----------------------------------------------------------------------------------

def test_truncated_tiff(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.random.default_rng(0).integers(0, 255, (5, 64, 64), np.uint8))
    data = p.read_bytes()
    t = tmp_path / "truncated.tif"
    t.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated|could not be read"):
        read_image(t).data.sum()


@pytest.mark.parametrize("content,name,match", [
    (b"", "empty.tif", "empty"),
    (b"this is not an image", "notes.tif", "named like a TIFF"),
    (b"\x00\x01\x02garbage", "scan.czi", "bioio"),
])
def test_unreadable_files(tmp_path, content, name, match, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bioio(mod, *a, **k):  # as on a machine without the optional extra
        if mod.startswith("bioio"):
            raise ImportError(mod)
        return real_import(mod, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_bioio)
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_image(p)


def test_wrong_extension_is_read_by_content(tmp_path):
    from PIL import Image

    p = tmp_path / "really_a_png.tif"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(p, format="PNG")
    with pytest.warns(UserWarning, match="PNG file despite its extension"):
        img = read_image(p)
    assert img.data.shape == (8, 8) and img.axes == "YX"


def test_ome_tiff_roundtrip_keeps_axes_and_pixel_size(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 2, 16, 16)).astype(np.uint8)
    p = write_tiff(tmp_path / "a.ome.tif", data, "TCYX", {"X": 0.2, "Y": 0.2, "Z": 1.0},
                   note={"model": "m.b2u"})
    img = read_image(p)
    assert img.axes == "TCYX" and img.data.shape == data.shape
    assert img.pixel_size["X"] == pytest.approx(0.2)
    with pytest.raises(InputError, match="exists"):
        write_tiff(p, data, "TCYX")


def test_imagej_tiff_axes_and_fmdd_folder(tmp_path):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.zeros((4, 16, 16), np.uint16), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 0.5}, resolution=(10.0, 10.0))
    img = read_image(p)
    assert img.axes == "ZYX" and img.pixel_size["Z"] == 0.5
    assert img.pixel_size["X"] == pytest.approx(0.1)
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


def test_pixel_size_units_are_converted_to_micrometres(tmp_path):
    data = np.zeros((2, 16, 16), np.uint8)
    ome = tmp_path / "nm.ome.tif"
    tifffile.imwrite(ome, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 65.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 65.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.3})
    img = read_image(ome)
    # 65 nm is 0.065 µm; Z has no unit: OME's default, µm
    assert img.pixel_size == pytest.approx({"X": 0.065, "Y": 0.065, "Z": 0.3})
    # written back in µm, with the unit said explicitly
    out = write_tiff(tmp_path / "out.ome.tif", data, "ZYX", img.pixel_size)
    with tifffile.TiffFile(out) as tif:
        assert 'PhysicalSizeXUnit="µm"' in tif.ome_metadata
    assert read_image(out).pixel_size == pytest.approx(img.pixel_size)
    # ImageJ: resolution in pixels per unit, spacing in the unit
    ij = tmp_path / "ij_nm.tif"
    tifffile.imwrite(ij, data, imagej=True, resolution=(1 / 100.0, 1 / 50.0),
                     metadata={"axes": "ZYX", "spacing": 500.0, "unit": "nm"})
    assert read_image(ij).pixel_size == pytest.approx({"X": 0.1, "Y": 0.05, "Z": 0.5})
    # a unit that is not a length is dropped with a warning, not misread as µm
    odd = tmp_path / "odd.ome.tif"
    tifffile.imwrite(odd, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 2.0, "PhysicalSizeXUnit": "s"})
    with pytest.warns(UserWarning, match="not a length unit"):
        assert "X" not in read_image(odd).pixel_size


def test_model_from_unknown_method(tmp_path, tiny_model):
    ck = tiny_model.to_checkpoint()
    ck["method"] = "noise2future"
    p = tmp_path / "future.b2u"
    torch.save(ck, p)
    with pytest.raises(InputError, match="noise2future.*upgrade"):
        api.load(p)


# ---- faults ---------------------------------------------------------------------------------

def test_training_survives_out_of_memory(small_stack, monkeypatch):
    from napari_b2u.train.steps import Steps

    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=4, **{**TINY_T, "batch_size": 4})
    real = Steps.train_step
    calls = {"n": 0}

    def flaky(self, *a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *a)

    monkeypatch.setattr(Steps, "train_step", flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = list(trainer)
    msgs = [e.message for e in events if e.message]
    assert any("batch size 2" in m for m in msgs)
    assert events[-1].done and events[-1].step == 4
    assert trainer.batch_size == 2 and calls["n"] == 5  # the failed step was run again


def test_validation_and_previews_survive_out_of_memory(small_stack, monkeypatch):
    from napari_b2u.train import events as engine  # the previews are computed there

    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=6, val_every=2, preview_every=2, val_fraction=0.5,
                               **{**TINY_T, "batch_size": 4})  # 4 held-out frames: 4 crops
    method = trainer.method
    real_val, real_prev = method.validation_error, engine.compute_preview
    sizes, prev_calls = [], {"n": 0}

    def val(model, part):
        sizes.append(part.shape[0])
        if part.shape[0] > 1:  # too big until the chunk is a single crop
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_val(model, part)

    def prev(*a, **k):
        prev_calls["n"] += 1
        if prev_calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_prev(*a, **k)

    monkeypatch.setattr(method, "validation_error", val)
    monkeypatch.setattr(engine, "compute_preview", prev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = list(trainer)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}  # halved until it fit, then kept
    assert all(np.isfinite(r["val_error"]) for r in trainer.history)
    assert len(trainer.history) == 3
    with_prev = [e.step for e in events if e.previews]
    assert 2 not in with_prev and 4 in with_prev  # the first preview was skipped, not fatal
    msgs = " ".join(trainer.messages)
    assert "validating 1 crops at a time" in msgs and "previews are skipped" in msgs
    assert events[-1].done and trainer.result().info["steps"] == 6


def test_denoise_survives_out_of_memory(tiny_model, small_stack, monkeypatch):
    from napari_b2u.denoise import predict

    noisy, _ = small_stack
    ref = tiny_model.denoise(noisy, batch_size=8)
    real = predict.predict_region
    calls = {"n": 0}

    def flaky(model, net, x, *a):
        calls["n"] += 1
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return (yield from real(model, net, x, *a))

    monkeypatch.setattr(predict, "predict_region", flaky)
    with pytest.warns(UserWarning, match="out of memory: retrying with batch 4"):
        out = tiny_model.denoise(noisy, batch_size=8)
    np.testing.assert_allclose(out.astype(float), ref.astype(float), atol=1)


def test_non_oom_errors_propagate(small_stack, monkeypatch):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=4, **TINY_T)

    def broken(self, *a):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    from napari_b2u.train.steps import Steps

    monkeypatch.setattr(Steps, "train_step", broken)
    with pytest.raises(RuntimeError, match="cuDNN"):
        list(trainer)
    # cleaned up after the failure: nothing held (on a GPU, this is its memory)
    assert trainer.optimizer.state == {}
    assert trainer.val is None and not hasattr(trainer.sampler, "data")
    assert trainer.state.best_state is None and trainer.steps.good_state is None


def _nan_at(steps_with_nan):
    from napari_b2u.methods.b2u import Blind2Unblind

    real = Blind2Unblind.training_loss
    count = {"n": 0}

    def loss(self, model, y, sched):
        count["n"] += 1
        total, terms = real(self, model, y, sched)
        if count["n"] in steps_with_nan:
            total = total * float("nan")
            terms = {**terms, "loss": total}
        return total, terms

    return loss


def test_nan_loss_rolls_back_and_lowers_lr(small_stack, monkeypatch):
    from napari_b2u.methods.b2u import Blind2Unblind

    noisy, _ = small_stack
    monkeypatch.setattr(Blind2Unblind, "training_loss", _nan_at({5}))
    trainer = api.make_trainer(noisy, steps=12, lr=1e-3, **TINY_T)
    with pytest.warns(UserWarning, match="NaN/Inf at step 5"):
        events = list(trainer)
    assert any(e.message and "rolled back" in e.message for e in events)
    assert trainer.base_lr == pytest.approx(5e-4)
    model = trainer.result()
    assert all(torch.isfinite(v).all() for v in model.state_dict.values())
    assert np.isfinite(model.denoise(noisy, dtype="float32")).all()


def test_persistent_nan_stops_with_explanation(small_stack, monkeypatch):
    from napari_b2u.methods.b2u import Blind2Unblind

    noisy, _ = small_stack
    monkeypatch.setattr(Blind2Unblind, "training_loss", _nan_at(set(range(1, 100))))
    trainer = api.make_trainer(noisy, steps=50, **TINY_T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = list(trainer)
    assert events[-1].done and events[-1].step < 10
    assert "Check the input" in " ".join(trainer.messages)
    assert all(torch.isfinite(v).all() for v in trainer.result().state_dict.values())


def test_stop_from_another_thread_ends_at_the_next_step(small_stack):
    import threading

    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=10_000, **TINY_T)
    seen = []
    started = threading.Event()

    def run():
        for ev in trainer:
            seen.append(ev.step)
            started.set()

    th = threading.Thread(target=run)
    th.start()
    started.wait(60)
    trainer.stop()
    at_stop = seen[-1]
    th.join(60)
    assert not th.is_alive()
    assert trainer.result().info["steps"] <= at_stop + 1


def test_finished_trainer_holds_no_training_tensors(small_stack):
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=3, **TINY_T)
    trainer.result()
    assert not hasattr(trainer.sampler, "data") and trainer.val is None
    assert trainer.optimizer.state == {}
    assert trainer.state.best_state is None and trainer.steps.good_state is None


# ---- autosave and resume --------------------------------------------------------------------

def test_autosave_is_a_loadable_model(small_stack, tmp_path):
    noisy, _ = small_stack
    ck = tmp_path / "auto.b2u"
    api.train_stack(noisy, steps=6, autosave=str(ck), autosave_every=0, **TINY)
    model = api.load(ck)
    assert model.info["steps"] == 6
    assert model.denoise(noisy).shape == (8, 64, 64)


def test_resume_reproduces_an_uninterrupted_run(small_stack, tmp_path):
    noisy, _ = small_stack
    kw = dict(val_every=3, seed=5, **TINY)
    full = api.train_stack(noisy, steps=12, **kw)
    ck = tmp_path / "auto.b2u"
    first = api.make_trainer(noisy, steps=12, autosave=str(ck), autosave_every=1e9,
                             **{k: v for k, v in kw.items() if k != "progress"})
    for ev in first:
        if ev.step == 5:
            first.stop()
    assert api.load(ck).info["steps"] == 5
    resumed = api.train_stack(noisy, resume=str(ck), **{k: v for k, v in TINY.items()
                                                       if k in ("device", "progress")})
    assert resumed.info["steps"] == 12
    assert resumed.info["history"] == full.info["history"]
    for k in full.state_dict:
        torch.testing.assert_close(resumed.state_dict[k], full.state_dict[k], rtol=0, atol=1e-6)


def test_resume_refuses_other_data_and_final_models(small_stack, tmp_path, tiny_model):
    noisy, _ = small_stack
    ck = tmp_path / "auto.b2u"
    api.train_stack(noisy, steps=2, autosave=str(ck), autosave_every=0, **TINY)
    with pytest.raises(InputError, match="same data"):
        api.train_stack(noisy[:4], resume=str(ck), device="cpu", progress=False)
    final = tiny_model.save(tmp_path / "final.b2u")
    with pytest.raises(InputError, match="no training state"):
        api.train_stack(noisy, resume=str(final), device="cpu", progress=False)


def test_bioio_reader_keeps_axes_and_pixel_size(tmp_path):
    """The optional reader for proprietary formats (bioio, the successor of aicsimageio),
    exercised on an OME-TIFF so that no proprietary sample file is needed."""
    pytest.importorskip("bioio_ome_tiff")
    from bioio import BioImage

    from napari_b2u.io.readers import _read_with

    data = np.random.default_rng(0).integers(0, 255, (3, 2, 16, 16)).astype(np.uint8)
    p = write_tiff(tmp_path / "b.ome.tif", data, "TCYX", {"X": 0.3, "Y": 0.3})
    img = _read_with(BioImage, p)
    assert img.axes == "TCYX" and img.pixel_size == {"Y": 0.3, "X": 0.3}
    np.testing.assert_array_equal(img.data, data)
    # an RGB file: bioio's order is TCZYXS (it was read as TCZYX: a ValueError on reshape)
    rgb = np.random.default_rng(1).integers(0, 255, (16, 20, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.ome.tif", rgb, photometric="rgb", ome=True)
    img = _read_with(BioImage, tmp_path / "rgb.ome.tif")
    assert img.axes == "YXC"
    np.testing.assert_array_equal(img.data, rgb)


def test_compile_failure_falls_back_to_eager(small_stack, monkeypatch):
    """torch.compile fails lazily (e.g. no Triton on the user's platform): training continues
    in eager mode and says so."""
    noisy, _ = small_stack

    class BackendCompilerFailed(RuntimeError):
        pass

    BackendCompilerFailed.__module__ = "torch._dynamo.exc"

    def fake_compile(self, *a, **k):
        def broken(*args, **kwargs):
            raise BackendCompilerFailed("backend='inductor' raised: no working C compiler")

        self._compiled_call_impl = broken

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    trainer = api.make_trainer(noisy, steps=4, **{**TINY_T, "compile": True})
    with pytest.warns(UserWarning, match="torch.compile failed.*continuing without it"):
        events = list(trainer)
    assert events[-1].done and events[-1].step == 4
    assert np.isfinite(trainer.result().denoise(noisy, dtype="float32")).all()


def test_compiled_network_serves_training_passes_only(small_stack, monkeypatch):
    """Validation, previews and the end phase run the network in other shapes (whole frames,
    tiles): through the compiled call each is a recompile, and on a GPU a short run spent its
    budget recompiling. They run eager; the training passes run compiled."""
    noisy, _ = small_stack
    modes = []

    def fake_compile(self, *a, **k):
        def compiled(*args, **kwargs):
            modes.append(self.training)
            return self._call_impl(*args, **kwargs)

        self._compiled_call_impl = compiled

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    evals = []
    real_eval = torch.nn.Module.eval
    monkeypatch.setattr(torch.nn.Module, "eval", lambda self: evals.append(1) or real_eval(self))
    trainer = api.make_trainer(noisy, steps=6, val_every=2, val_fraction=0.25,
                               **{**TINY_T, "compile": True})
    events = list(trainer)
    assert events[-1].done and trainer.steps.compiled
    assert evals, "no evaluation pass ran: the test would prove nothing"
    assert modes and all(modes), "an evaluation pass went through the compiled call"
    assert np.isfinite(trainer.result().denoise(noisy, dtype="float32")).all()


def test_a_stop_drops_the_running_step_at_its_next_convolution(small_stack, monkeypatch):
    """A stop inside a step (here: requested by the 3rd convolution of the step) ends the step
    there: the weights are not updated and no step is counted (issue 17.12: stop ≤ 1 s even when
    one step takes seconds)."""
    noisy, _ = small_stack
    trainer = api.make_trainer(noisy, steps=50, val_fraction=0, **TINY_T)
    events = iter(trainer)
    for _ in range(3):
        next(events)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    calls = []

    def request_stop(module, args):
        calls.append(1)
        if len(calls) == 3:
            trainer.stop()

    hooks = [m.register_forward_pre_hook(request_stop) for m in trainer.model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    rest = list(events)
    for h in hooks:
        h.remove()
    assert len(calls) == 3  # nothing ran after the stop inside the step
    assert rest[-1].done and rest[-1].stopped and rest[-1].step == 3
    model = trainer.result()
    assert model.info["steps"] == 3
    for k, v in before.items():
        torch.testing.assert_close(model.state_dict[k], v.float())


def test_tiffs_whose_axes_cannot_be_named_ask_for_axes(tmp_path):
    p = tmp_path / "five.tif"
    tifffile.imwrite(p, np.zeros((2, 2, 2, 8, 8), np.uint8))  # tifffile calls it 'QQQYX'
    with pytest.raises(InputError, match="give them, e.g. --axes TZYX"):
        read_image(p)
    assert read_image(p, "TCZYX").axes == "TCZYX"


def test_masked_arrays_are_refused_by_name():
    arr = np.ma.masked_array(np.ones((16, 16)), mask=np.ones((16, 16), bool))
    with pytest.raises(InputError, match="masked array"):
        validate_stack(arr)


@pytest.mark.parametrize("value", ["-1", "NaN", "INF", "0"])
def test_invalid_ome_pixel_sizes_are_dropped_with_a_warning(tmp_path, value):
    p = tmp_path / "bad.ome.tif"
    data = np.zeros((16, 16), np.uint8)
    tifffile.imwrite(p, data, ome=True, metadata={"axes": "YX", "PhysicalSizeY": 0.2})
    with tifffile.TiffFile(p) as tif:  # the writer refuses such values: edit the XML
        xml = tif.ome_metadata.replace('PhysicalSizeY="0.2"', f'PhysicalSizeY="{value}"')
    tifffile.imwrite(p, data, description=xml.encode(), metadata=None)
    with pytest.warns(UserWarning, match="not a positive number"):
        img = read_image(p)
    assert "Y" not in img.pixel_size
    out = write_tiff(tmp_path / "o.ome.tif", data, "YX", img.pixel_size)
    with tifffile.TiffFile(out) as tif:
        assert "PhysicalSizeY" not in tif.ome_metadata


def test_colour_mapped_rgb_files_are_read_as_their_channel(tmp_path):
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (32, 32)).astype(np.uint8)
    green = np.zeros((32, 32, 3), np.uint8)
    green[..., 1] = grey
    PILImage.fromarray(green).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g.tif", green, photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", np.stack([grey] * 3, -1), photometric="rgb")
    for name in ("g.png", "g.tif", "grey.tif"):
        with pytest.warns(UserWarning, match="using"):
            img = read_image(tmp_path / name)
        assert img.axes == "YX"
        np.testing.assert_array_equal(img.data, grey)
    colour = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", colour, photometric="rgb")
    img = read_image(tmp_path / "c.tif")
    assert img.axes == "YXC" and img.data.shape == (32, 32, 3)  # true colour: kept, never merged
