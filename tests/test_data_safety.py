"""The user's data is never lost: regression tests for the red-team findings (issue 17, items 1
and 3-6, 10): outputs never replace inputs, integer outputs saturate, no precision is lost before
normalization, a failed write leaves nothing partial and loses no model, resume refuses other
data, and a run that never trained saves nothing."""

import os

import numpy as np
import pytest
import tifffile

from napari_b2u import api
from napari_b2u.cli import main
from napari_b2u.data import Normalization, cast_output, fit_normalization
from napari_b2u.errors import InputError, OutputError, TrainingError

from .conftest import TINY

TINY_ARGS = ["--device", "cpu", "--patch-size", "32", "--floor", "none", "-q"]
DEN_ARGS = ["--device", "cpu", "-q"]


@pytest.fixture
def tiny_preset(monkeypatch):
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})


@pytest.fixture
def files(tmp_path, small_stack, tiny_preset):
    """An input stack, a validation stack and a trained model, as files."""
    noisy, _ = small_stack
    inp, val = tmp_path / "in.tif", tmp_path / "v.tif"
    tifffile.imwrite(inp, noisy, metadata={"axes": "TYX"})
    tifffile.imwrite(val, noisy[:4], metadata={"axes": "TYX"}, photometric="minisblack")
    model = tmp_path / "m.b2u"
    assert main(["train", str(inp), "--out", str(model), "--steps", "2", *TINY_ARGS]) == 0
    return inp, val, model


def _digest(path):
    return path.read_bytes()


# ---- 1. outputs never replace inputs -----------------------------------------------------------
def test_no_output_path_can_replace_an_input(tmp_path, files, capsys, monkeypatch):
    inp, val, model = files
    before = {p: _digest(p) for p in (inp, val, model)}
    monkeypatch.chdir(tmp_path)
    sneaky = os.path.join("sub", "..", inp.name)  # no sub/: resolves to the input itself
    cases = [
        ["denoise", str(inp), "--model", str(model), "--out", sneaky],
        ["denoise", str(inp), "--model", str(model), "--out", sneaky, "--overwrite"],
        ["denoise", str(inp), "--model", str(model), "--out", str(model), "--overwrite"],
        ["train", str(inp), "--out", sneaky, "--steps", "1"],
        ["train", str(inp), "--out", str(inp), "--overwrite", "--steps", "1"],
        ["train", str(inp), "--out", "new.b2u", "--autosave", str(inp), "--steps", "1"],
        ["train", str(inp), "--out", "new.b2u", "--autosave", str(inp), "--overwrite",
         "--steps", "1"],
        ["train", str(inp), "--val", str(val), "--out", str(val), "--overwrite", "--steps", "1"],
        ["train", str(inp), "--out", "same.b2u", "--autosave", "same.b2u", "--steps", "1"],
    ]
    for argv in cases:
        code = main([*argv, *(TINY_ARGS if argv[0] == "train" else DEN_ARGS)])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert "never overwritten" in err or "same file" in err, (argv, err)
    assert {p: _digest(p) for p in (inp, val, model)} == before
    assert not (tmp_path / "sub").exists() and not (tmp_path / "new.b2u").exists()


def test_a_hard_link_to_the_input_is_the_input(tmp_path, files, capsys):
    inp, _, model = files
    link = tmp_path / "alias.tif"
    os.link(inp, link)
    before = _digest(inp)
    assert main(["denoise", str(inp), "--model", str(model), "--out", str(link), "--overwrite",
                 *DEN_ARGS]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert _digest(inp) == before


def test_autosave_may_continue_the_checkpoint_it_resumes(tmp_path, files):
    inp, _, _ = files
    ck = tmp_path / "run.b2u"
    assert main(["train", str(inp), "--out", str(tmp_path / "a.b2u"), "--steps", "2",
                 "--autosave", str(ck), *TINY_ARGS]) == 0
    assert main(["train", str(inp), "--out", str(tmp_path / "b.b2u"), "--steps", "4",
                 "--resume", str(ck), "--autosave", str(ck), *TINY_ARGS]) == 0
    assert api.load(ck).info["steps"] == 4
    # but the final model may not replace the checkpoint it resumed from
    assert main(["train", str(inp), "--out", str(ck), "--overwrite", "--steps", "5",
                 "--resume", str(ck), *TINY_ARGS]) == 2


# ---- 3. integer outputs saturate -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
def test_integer_outputs_saturate_instead_of_wrapping(dtype):
    info = np.iinfo(dtype)
    x = np.array([1e30, -1e30, 3e9, -3e9, 0.4, 2.6], np.float32)
    out = cast_output(x, dtype)
    assert out.dtype == np.dtype(dtype)
    assert out[0] == info.max and out[1] == info.min
    assert int(out[2]) == min(3_000_000_000, info.max)
    assert int(out[3]) == max(-3_000_000_000, info.min)
    assert out[4] == 0 and out[5] == 3


# ---- 4. no precision lost before normalization ---------------------------------------------------
def test_large_offsets_keep_their_fine_steps():
    rng = np.random.default_rng(0)
    # float64 at 1e9 + N(0, 1): float32 would make it constant
    x = (1e9 + rng.normal(0, 1, (1, 1, 32, 32))).astype(np.float64)
    norm = fit_normalization(x)
    y = norm.apply(x)
    assert y.dtype == np.float32 and np.unique(y).size > 1000
    np.testing.assert_allclose(norm.invert(y, np.float64), x, rtol=0, atol=1e-5)
    # uint32 around 2e7 (above float32's 2**24): every distinct value survives the round trip
    u = (2e7 + rng.integers(0, 4000, (1, 1, 32, 32))).astype(np.uint32)
    norm = fit_normalization(u)
    back = cast_output(norm.invert(norm.apply(u), np.float64), np.uint32)
    np.testing.assert_array_equal(back, u)
    # uint32 near its maximum is not "constant"
    top = (np.iinfo(np.uint32).max - rng.integers(0, 50, (1, 1, 16, 16))).astype(np.uint32)
    assert np.unique(fit_normalization(top).apply(top)).size > 10


def test_training_and_denoising_far_from_zero(small_stack):
    noisy, _ = small_stack
    x = 1e9 + noisy.astype(np.float64)  # the noise is a few units on top of 1e9
    model = api.train_stack(x, steps=3, **TINY)
    out = model.denoise(x)
    assert out.dtype == np.float64
    # the result lives at the input's level with the input's fine structure, not in 64-steps
    assert np.abs(out - x).mean() < 50 and np.unique(np.round(out - 1e9, 3)).size > 100


def test_values_float32_cannot_hold_are_refused(small_stack):
    noisy, _ = small_stack
    x = noisy.astype(np.float64)
    x[0, 0, 0] = 1e39
    with pytest.raises(InputError, match="beyond what float32"):
        api.train_stack(x, steps=1, **TINY)
    with pytest.raises(InputError, match="too far from the bulk"):
        Normalization([0.0], [1e-5]).apply(np.full((1, 1, 4, 4), 1e35))


# ---- 5. a failed write leaves nothing partial and loses no model --------------------------------
def _full_disk(monkeypatch, module, name, path_arg=1):
    """``module.name`` writes a few bytes to its file argument, then fails like a full disk."""
    real = getattr(module, name)

    def write_then_fail(*a, **k):
        with open(a[path_arg], "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, name, write_then_fail)
    return real


def test_train_on_a_full_disk_keeps_the_model(tmp_path, files, monkeypatch, capsys):
    import torch

    inp, _, _ = files
    out = tmp_path / "out" / "m.b2u"
    real_save = torch.save
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "spare"))
    (tmp_path / "spare").mkdir()

    def save(obj, f, *a, **k):  # only the requested folder is full
        if str(f).startswith(str(out.parent)):
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise RuntimeError("[enforce fail] PytorchStreamWriter failed writing file data/0")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    assert main(["train", str(inp), "--out", str(out), "--steps", "2", *TINY_ARGS]) == 1
    err = capsys.readouterr().err
    assert "could not write the model" in err and "saved to" in err
    spare = list((tmp_path / "spare").glob("m-*.b2u"))
    assert len(spare) == 1 and api.load(spare[0]).info["steps"] == 2
    assert not out.exists() and not list(out.parent.glob("*.part"))


def test_denoise_on_a_full_disk_leaves_no_partial_file(tmp_path, files, monkeypatch, capsys):
    import tifffile as tf

    inp, _, model = files
    _full_disk(monkeypatch, tf, "imwrite", path_arg=0)
    out = tmp_path / "o.tif"
    assert main(["denoise", str(inp), "--model", str(model), "--out", str(out), *DEN_ARGS]) == 1
    assert "could not write the image" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_output_dtypes_tiff_cannot_hold_are_refused_before_work(tmp_path, files, capsys):
    inp, _, model = files
    with pytest.raises(SystemExit) as exc:  # argparse: not one of the choices
        main(["denoise", str(inp), "--model", str(model), "--out", str(tmp_path / "o.tif"),
              "--dtype", "float16", *DEN_ARGS])
    assert exc.value.code == 2 and "float32" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.tif*"))


def test_int64_input_is_written_as_float64(tmp_path, files, small_stack, capsys):
    _, _, model = files
    noisy, _ = small_stack
    inp = tmp_path / "wide.npy"
    np.save(inp, noisy.astype(np.int64))
    out = tmp_path / "o.tif"
    assert main(["denoise", str(inp), "--model", str(model), "--out", str(out), "--axes", "TYX",
                 "--device", "cpu"]) == 0
    assert "cannot store int64" in capsys.readouterr().out
    assert tifffile.imread(out).dtype == np.float64


def test_a_failed_autosave_warns_and_training_goes_on(small_stack, tmp_path, monkeypatch):
    import torch

    noisy, _ = small_stack
    _full_disk(monkeypatch, torch, "save")
    with pytest.warns(UserWarning, match="autosave failed"):
        model = api.train_stack(noisy, steps=4, autosave=str(tmp_path / "ck.b2u"),
                                autosave_every=0, **TINY)
    assert model.info["steps"] == 4
    assert not list(tmp_path.iterdir())  # neither the checkpoint nor a .part
    with pytest.raises(OutputError, match="No space left"):
        model.save(tmp_path / "m.b2u")
    assert not list(tmp_path.iterdir())


# ---- 6. resume refuses other data and writes only where told -----------------------------------
def test_resume_refuses_other_data_of_the_same_shape(small_stack, tmp_path):
    noisy, _ = small_stack
    ck = tmp_path / "ck.b2u"
    api.train_stack(noisy, steps=2, autosave=str(ck), autosave_every=1e9, **TINY)
    others = {
        "other contents": noisy[::-1].copy(),
        "transposed frames": np.ascontiguousarray(noisy.transpose(0, 2, 1)),
        "another dtype": noisy.astype(np.uint16),
    }
    for what, other in others.items():
        with pytest.raises(InputError, match="trained on other data"):
            api.train_stack(other, resume=str(ck), steps=4, **TINY)


def test_resume_never_writes_the_stored_autosave_path(small_stack, tmp_path):
    noisy, _ = small_stack
    ck = tmp_path / "ck.b2u"
    api.train_stack(noisy, steps=2, autosave=str(ck), autosave_every=1e9, **TINY)
    before = _digest(ck)
    resumed = api.train_stack(noisy, resume=str(ck), steps=4, **TINY)
    assert resumed.info["steps"] == 4
    assert _digest(ck) == before  # not given this time: not written
    again = tmp_path / "ck2.b2u"
    api.train_stack(noisy, resume=str(ck), steps=5, autosave=str(again), **TINY)
    assert api.load(again).info["steps"] == 5 and _digest(ck) == before


# ---- 10. a run that never trained yields no model -----------------------------------------------
def test_no_model_without_a_single_step(small_stack, tmp_path):
    noisy, _ = small_stack
    with pytest.raises(TrainingError, match="before its first step"):
        api.train_stack(noisy, max_time=1e-9, **TINY)
    trainer = api.make_trainer(noisy, steps=5, **{k: v for k, v in TINY.items()
                                                  if k != "progress"})
    trainer.stop()
    events = list(trainer)
    assert events[-1].done and "no model" in events[-1].message
    with pytest.raises(TrainingError):
        trainer.result()


def test_cli_saves_nothing_when_nothing_was_trained(tmp_path, files, capsys):
    inp, _, _ = files
    out = tmp_path / "never.b2u"
    assert main(["train", str(inp), "--out", str(out), "--max-time", "1e-9", *TINY_ARGS]) == 1
    assert "no trained model" in capsys.readouterr().err
    assert not out.exists()
