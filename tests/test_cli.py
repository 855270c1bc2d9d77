import numpy as np
import pytest
import tifffile

from napari_b2u.cli import main


@pytest.fixture
def noisy_tif(tmp_path, small_stack):
    noisy, _ = small_stack
    p = tmp_path / "noisy.tif"
    tifffile.imwrite(p, noisy, metadata={"axes": "TYX"})
    return p


TINY_ARGS = ["--device", "cpu", "--patch-size", "32", "--floor", "none", "-q"]


def test_train_then_denoise(tmp_path, noisy_tif, monkeypatch, capsys):
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    model = tmp_path / "m.b2u"
    assert main(["train", str(noisy_tif), "--out", str(model), "--steps", "4", *TINY_ARGS]) == 0
    assert model.exists()
    out = tmp_path / "den.tif"
    assert main(["denoise", str(noisy_tif), "--model", str(model), "--out", str(out),
                 "--device", "cpu", "-q"]) == 0
    with tifffile.TiffFile(out) as tif:
        data = tif.asarray()
        assert tif.is_ome
        assert "napari-b2u" in tif.ome_metadata
    assert data.shape == (8, 64, 64) and data.dtype == np.uint8
    # refuses to overwrite the output, and to write over the input
    assert main(["denoise", str(noisy_tif), "--model", str(model), "--out", str(out), "-q"]) == 2
    assert main(["denoise", str(noisy_tif), "--model", str(model), "--out", str(noisy_tif),
                 "--overwrite", "-q"]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert tifffile.imread(noisy_tif).shape == (8, 64, 64)


def test_denoise_tta_option_sets_the_views(tmp_path, noisy_tif, tiny_model, capsys):
    """--tta off / 4 / on give the one-pass, four-view and eight-view outputs of the API; a
    count that is no ensemble is refused before any work."""
    model = tmp_path / "m.b2u"
    tiny_model.save(model)
    noisy = tifffile.imread(noisy_tif)
    for flag, tta in (("off", False), ("4", 4), ("on", True)):
        out = tmp_path / f"den_{flag}.tif"
        assert main(["denoise", str(noisy_tif), "--model", str(model), "--out", str(out),
                     "--device", "cpu", "--tta", flag, "-q"]) == 0
        np.testing.assert_array_equal(tifffile.imread(out),
                                      tiny_model.denoise(noisy, axes="TYX", tta=tta))
    with pytest.raises(SystemExit):
        main(["denoise", str(noisy_tif), "--model", str(model), "--out",
              str(tmp_path / "x.tif"), "--tta", "3"])
    assert "use auto, on, off or 1, 2, 4, 8" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    assert main(["train", str(bad), "--out", str(tmp_path / "m.b2u"), *TINY_ARGS]) == 2
    assert "could not be read as a TIFF" in capsys.readouterr().err


def test_demo(tmp_path, monkeypatch, capsys):
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "6", "--size", "64", "--steps", "5",
                 *TINY_ARGS]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "B2U visible" in text
    for name in ("demo_denoised.tif", "demo_comparison.png", "demo_model.b2u"):
        assert (out / name).exists()


def test_info(capsys):
    assert main(["info"]) == 0
    assert "cpu" in capsys.readouterr().out


def _fmdd_set(root, name, seed):
    from PIL import Image as PILImage

    from napari_b2u.sample_data import fmdd_like_stack

    for v, view in enumerate(["1", "2"]):
        noisy, clean = fmdd_like_stack(2, (64, 64), seed=seed + v)
        (root / name / "raw" / view).mkdir(parents=True)
        (root / name / "gt" / view).mkdir(parents=True)
        for i, f in enumerate(noisy):
            PILImage.fromarray(f).save(root / name / "raw" / view / f"HV_{i:02d}.png")
        PILImage.fromarray(np.rint(clean).astype(np.uint8)).save(
            root / name / "gt" / view / "avg50.png")


def test_train_on_an_fmdd_folder(tmp_path, monkeypatch, capsys):
    from napari_b2u import api
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    root = tmp_path / "FMDD"
    _fmdd_set(root, "Confocal_A", 1)
    model = tmp_path / "fmdd.b2u"
    # the set's raw views x frames are the training samples (2 views x 2 frames of 64²)
    assert main(["train", str(root / "Confocal_A"), "--out", str(model), "--steps", "3",
                 *TINY_ARGS]) == 0
    info = api.load(model).info
    assert info["steps"] == 3 and info["axes"] == "STYX"
    # a root with several sets is refused with the names, not silently cut to the first
    _fmdd_set(root, "Confocal_B", 5)
    assert main(["train", str(root), "--out", str(tmp_path / "x.b2u"), "--steps", "3",
                 *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert "holds 2 FMDD sets (Confocal_A, Confocal_B)" in err


def test_autosave_and_resume_from_the_cli(tmp_path, noisy_tif, monkeypatch):
    from napari_b2u import api
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    ck = tmp_path / "run.b2u"
    assert main(["train", str(noisy_tif), "--out", str(tmp_path / "a.b2u"), "--steps", "3",
                 "--autosave", str(ck), *TINY_ARGS]) == 0
    assert ck.exists() and api.load(ck).info["steps"] == 3
    # continue the autosaved run to 5 steps
    out = tmp_path / "b.b2u"
    assert main(["train", str(noisy_tif), "--out", str(out), "--steps", "5", "--resume",
                 str(ck), *TINY_ARGS]) == 0
    assert api.load(out).info["steps"] == 5


def test_train_length_in_epochs(tmp_path, noisy_tif, monkeypatch, capsys):
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    model = tmp_path / "e.b2u"
    # 8 frames of 64², one held out: 0.25 epoch = 0.25 × 7·64² / (4 × 32²) -> 2 steps
    assert main(["train", str(noisy_tif), "--out", str(model), "--epochs", "0.25",
                 *TINY_ARGS]) == 0
    from napari_b2u import api

    assert api.load(model).info["steps"] == 2
    # --steps and --epochs exclude each other: the config says so, exit 2, nothing written
    assert main(["train", str(noisy_tif), "--out", str(tmp_path / "x.b2u"), "--steps", "3",
                 "--epochs", "1", *TINY_ARGS]) == 2
    assert "steps or as epochs" in capsys.readouterr().err
    assert not (tmp_path / "x.b2u").exists()


@pytest.mark.parametrize("flag, native, expected", [("--no-amp", True, False),
                                                     ("--amp", True, True),
                                                     ("--amp", False, False)])
def test_mixed_precision_flag(tmp_path, noisy_tif, monkeypatch, flag, native, expected):
    """--amp/--no-amp reach training; --amp on a CPU without native bf16 stays fp32."""
    from napari_b2u import api, device
    from napari_b2u.config import PRESETS

    monkeypatch.setattr(device, "cpu_bf16_native", lambda: native)
    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    model = tmp_path / "m.b2u"
    assert main(["train", str(noisy_tif), "--out", str(model), "--steps", "2", flag,
                 *TINY_ARGS]) == 0
    assert api.load(model).info["train_config"]["amp"] is expected


@pytest.mark.parametrize("method", ["b2s", "dbsn", "n2v", "nbr2nbr"])
def test_every_method_trains_and_denoises_from_the_cli(tmp_path, noisy_tif, monkeypatch, capsys,
                                                      method):
    from napari_b2u.api import load
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    model = tmp_path / f"{method}.b2u"
    assert main(["train", str(noisy_tif), "--out", str(model), "--method", method,
                 "--steps", "3", *TINY_ARGS]) == 0
    printed = capsys.readouterr().out
    assert load(model).method_name == method
    # B2S and D-BSN print their fitted noise model
    assert ("fitted noise" in printed) == (method == "b2s")
    out = tmp_path / f"{method}.tif"
    assert main(["denoise", str(noisy_tif), "--model", str(model), "--out", str(out),
                 "--device", "cpu", "-q"]) == 0
    assert tifffile.imread(out).shape == (8, 64, 64)


@pytest.mark.parametrize("argv,words", [
    (["--cells", "0"], "cells=0"),
    (["--cells", "-2"], "cells=-2"),
    (["--cells", "1000"], "cells=1000"),
    (["--width", "0"], "width=0"),
    (["--width", "-2"], "width=-2"),
    (["--epochs", "inf"], "epochs=inf"),
    (["--max-time", "nan"], "max_time=nan"),
    (["--max-time", "inf"], "max_time=inf"),
    (["--steps", str(10**12)], "steps=1000000000000"),
    (["--lr", "0"], "lr=0"),
    (["--param", "lambda_end=-1"], "lambda_end='-1' is not allowed"),
    (["--param", "nonsense"], "NAME=VALUE"),
    (["--method", "n2v", "--cells", "4"], "unknown option 'cells' for method 'n2v'"),
])
def test_bad_training_options_are_one_message_and_exit_2(tmp_path, noisy_tif, capsys, argv,
                                                         words):
    out = tmp_path / "m.b2u"
    assert main(["train", str(noisy_tif), "--out", str(out), *argv, *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_bad_output_options_exit_2(tmp_path, noisy_tif, capsys, tiny_model):
    model = tiny_model.save(tmp_path / "m.b2u")
    with pytest.raises(SystemExit) as exc:
        main(["denoise", str(noisy_tif), "--model", str(model), "--out",
              str(tmp_path / "o.tif"), "--dtype", "bogus"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["demo", "--out", str(afile), "--steps", "1", *TINY_ARGS]) == 2
    assert "is a file" in capsys.readouterr().err


def test_export_finds_the_training_stack_and_passes_the_bioimageio_test(tmp_path, noisy_tif,
                                                                        monkeypatch, capsys):
    pytest.importorskip("bioimageio.core")
    import zipfile

    from napari_b2u import api
    from napari_b2u.config import PRESETS

    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "width": 16, "depth": 2})
    model = tmp_path / "m.b2u"
    assert main(["train", str(noisy_tif), "--out", str(model), "--steps", "3", "--context", "0",
                 *TINY_ARGS]) == 0  # a package holds a single-frame network
    package = tmp_path / "m.zip"
    # no --sample: the model names the stack it was trained on
    assert main(["export", str(model), "--out", str(package), "--author", "Ada Lovelace",
                 "--test"]) == 0
    out = capsys.readouterr().out
    assert "'visible' output" in out and "bioimageio.core test: passed" in out
    loaded = api.load(package)
    assert "training_data" in api.load(model).info and "training_data" not in loaded.info
    with zipfile.ZipFile(package) as zf:  # the package does not tell where the data lies
        assert str(noisy_tif.parent) not in zf.read("rdf.yaml").decode()
    np.testing.assert_array_equal(loaded.denoise(tifffile.imread(noisy_tif), tta=False),
                                  api.load(model).denoise(tifffile.imread(noisy_tif), tta=False))
    # never over an existing file, never over the input; a missing sample is named
    assert main(["export", str(model), "--out", str(package)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(model), "--out", str(noisy_tif), "--overwrite"]) == 2
    assert "a .zip file" in capsys.readouterr().err
    assert main(["export", str(model), "--out", str(tmp_path / "n.zip"), "--sample",
                 str(noisy_tif), "--output", "weighted"]) == 2
    assert "takes 5 network passes" in capsys.readouterr().err
    noisy_tif.unlink()
    assert main(["export", str(model), "--out", str(tmp_path / "n.zip")]) == 2
    assert "give --sample" in capsys.readouterr().err


def test_check_reports_correlation_and_the_mask(tmp_path, capsys):
    import json

    from napari_b2u.sample_data import fmdd_like_stack

    plain = tmp_path / "plain.tif"
    corr = tmp_path / "scan.tif"
    tifffile.imwrite(plain, fmdd_like_stack(2, (160, 160), seed=1)[0])
    tifffile.imwrite(corr, fmdd_like_stack(2, (160, 160), seed=2, corr_x=0.3)[0])
    assert main(["check", str(plain), str(corr)]) == 0
    out = capsys.readouterr().out
    assert "along X" in out and "one-pixel blind spot" in out and "x-line" in out
    assert main(["check", "--json", str(plain), str(corr)]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert reports[str(plain)]["mask"] == "pixel"
    assert reports[str(corr)]["mask"].startswith("x-line")
    assert reports[str(corr)]["corr_x"][0] > 0.15 > abs(reports[str(corr)]["corr_y"][0])
    assert main(["check", str(tmp_path / "missing.tif")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_exports_sample_without_axis_metadata_takes_the_models_axes(tmp_path, capsys):
    """tifffile reads a plain 4-frame stack as the planes of an RGBA image (CYX): for the
    sample of a single-channel model trained on TYX, the model's axes are the guess (the
    export refused with 'trained on 1 channel(s) but the stack has 4'); --axes still wins,
    and a sample whose axes fit the model keeps them."""
    from napari_b2u.cli import sample_axes
    from napari_b2u.io.readers import read_image

    path = tmp_path / "four.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 32), np.uint8))
    img = read_image(path)
    assert img.axes == "CYX"  # what the file says: if this changes, the fix is moot
    assert sample_axes(img, 1, "TYX", path) == "TYX"
    assert "using the axes it was trained with, TYX" in capsys.readouterr().out
    assert sample_axes(img, 4, "CYX", path) == "CYX"  # a 4-channel model: the file is right
    assert sample_axes(img, 1, None, path) == "CYX"  # nothing recorded: the file's (refused
    # later with the channel message)
    assert sample_axes(read_image(path, "TYX"), 1, "ZYX", path) == "TYX"


def test_train_help_shows_every_settings_help_verbatim(capsys, monkeypatch):
    """The options' help comes from the settings' descriptions; argparse %-formats help, so a
    description with a % (the compile setting's) printed a dump of the option instead."""
    import dataclasses

    from napari_b2u.config import FIELDS

    for name, help_ in (("compile", "3 % more steps/s"), ("width", "100 % wider (%d)")):
        monkeypatch.setitem(FIELDS, name, dataclasses.replace(FIELDS[name], help=help_))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{'option_strings'" not in out
    shown = [s for s in FIELDS.values() if s.user and s.name not in
             ("method", "autosave", "preview_every")]
    assert {"compile", "width"} <= {s.name for s in shown}
    for spec in shown:
        assert " ".join(spec.help.split()) in out, spec.name
