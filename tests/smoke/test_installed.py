"""Smoke tests of an installed napari-b2u: what a user gets from the wheel on PyPI.

CI (.ci/run) builds the sdist and the wheel, installs the wheel into a fresh virtual environment
(no napari, no source tree on the path) and runs these tests from a copy outside the checkout,
with B2U_SOURCE_TREE naming the checkout: then the package under test must be the installed
one, and every data file of the source tree (manifest, samples, pretrained weights) must have
made it into the wheel. In the ordinary test run they check the development install.
Self-contained on purpose: no conftest, no imports from the test suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

SOURCE = os.environ.get("B2U_SOURCE_TREE")
ROOT = Path(SOURCE) if SOURCE else Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "napari_b2u"
TINY = dict(width=16, depth=2, patch_size=32, batch_size=4, device="cpu", progress=False,
            compile=False, floor="none")


def test_the_package_under_test_is_the_installed_one():
    import napari_b2u

    assert napari_b2u.__version__ == version("napari-b2u") != "0+unknown"
    if SOURCE:  # the wheel, not the checkout it was built from
        assert not Path(napari_b2u.__file__).resolve().is_relative_to(ROOT.resolve())


def data_files() -> list[str]:
    """Every file the package needs besides its modules, listed from the source tree (so a new
    pretrained model or sample is checked without editing this test)."""
    found = ["napari.yaml"]
    for folder, patterns in (("sample_files", ("*",)), ("pretrained", ("*.b2u", "*.md"))):
        for pattern in patterns:
            found += [f"{folder}/{p.name}" for p in sorted((SRC / folder).glob(pattern))
                      if p.is_file() and p.name != "__init__.py"]
    return found


def test_every_data_file_of_the_source_tree_is_installed():
    assert SRC.is_dir(), f"no source tree at {SRC}: set B2U_SOURCE_TREE"
    expected = data_files()
    assert "sample_files/dsb2018_nuclei.tif" in expected
    pkg = files("napari_b2u")
    missing = [name for name in expected if not (pkg / name).is_file()]
    assert not missing, f"not in the installed package: {missing}"
    for name in expected:  # the same bytes (a truncated or LFS-pointer file is no model)
        assert (pkg / name).read_bytes() == (SRC / name).read_bytes(), name


def test_pretrained_models_load_and_are_found():
    from napari_b2u.denoise.denoiser import Denoiser
    from napari_b2u.train.warm_start import PACKAGED, packaged_path

    for key, name in PACKAGED.items():
        installed = files("napari_b2u") / "pretrained" / name
        if not (SRC / "pretrained" / name).is_file():
            continue  # not shipped (yet)
        model = Denoiser.load(installed)
        cfg = {"arch": key[0], "in_channels": key[1], "out_channels": key[1],
               "width": key[2], "depth": key[3]}
        assert packaged_path(cfg) is not None and model.n_channels == key[1]


def test_the_plugin_manifest_and_its_qt_free_hooks():
    npe2 = pytest.importorskip("npe2")
    import importlib.util

    from napari_b2u._widgets._hooks import fmdd_sample, nuclei_sample

    manifest = npe2.PluginManifest.from_distribution("napari-b2u")
    assert manifest.display_name == "Blind2Unblind"
    for cmd in manifest.contributions.commands:  # every command's module is installed
        module = cmd.python_name.split(":")[0]
        assert importlib.util.find_spec(module) is not None, cmd.python_name
    (data, meta, kind), = nuclei_sample()
    assert kind == "image" and data.shape == (512, 512)
    assert [d.ndim for d, _, _ in fmdd_sample()] == [2, 3]


def test_train_denoise_and_the_command_line(tmp_path):
    from napari_b2u import api
    from napari_b2u.sample_data import fmdd_like_stack

    noisy, _ = fmdd_like_stack(6, (64, 64), seed=1)
    model = api.train_stack(noisy, steps=3, seed=0, **TINY)
    den = model.denoise(noisy)
    assert den.shape == noisy.shape and den.dtype == noisy.dtype
    path = model.save(tmp_path / "m.b2u")
    np.testing.assert_array_equal(api.load(path).denoise(noisy), den)
    script = Path(sys.executable).with_name("napari-b2u")  # the wheel's console script
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "napari_b2u.cli"]
    out = subprocess.run([*cmd, "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "method b2u" in out.stdout, out.stderr


def test_bioimageio_export_from_the_installed_package(tmp_path):
    pytest.importorskip("bioimageio.core")
    from napari_b2u import api
    from napari_b2u.sample_data import fmdd_like_stack
    from napari_b2u.zoo import check_package

    noisy, _ = fmdd_like_stack(4, (64, 64), seed=2)
    # a package holds a single-frame network (a context model is refused: tests/test_export.py)
    model = api.train_stack(noisy, steps=2, seed=0, context=0, **TINY)
    package = model.export_bioimageio(tmp_path / "m.zip", noisy)  # reads the packaged sources
    assert check_package(package).status == "passed"
    np.testing.assert_array_equal(api.load(package).denoise(noisy), model.denoise(noisy))
