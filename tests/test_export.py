"""bioimage.io export and import: packages pass bioimageio.core's own model test (it loads
both weight formats, runs the test input, compares with the test output and runs other sizes),
the description says what the model is (normalization, axes, pixel size, citations), napari-b2u
opens its packages again as the same model, and every refusal is one clear error."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

from napari_b2u import api
from napari_b2u.errors import InputError, MissingExtra

from .conftest import TINY as _TINY

#: a package holds a single-frame network: context models are refused (tested below)
TINY = {**_TINY, "context": 0}

pytest.importorskip("bioimageio.core")

from bioimageio.spec.utils import read_yaml  # noqa: E402

from napari_b2u.zoo import check_package, is_package  # noqa: E402
from napari_b2u.zoo.export import TOLERANCE, scale_unit  # noqa: E402


def rdf(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return read_yaml(zf.read("rdf.yaml").decode())


def round_trip(model, stack, axes, path, output=None):
    """Export, check with bioimageio.core, load back; the loaded model denoises identically."""
    written = model.export_bioimageio(path, stack, axes, output=output)
    assert written == path and is_package(path)
    summary = check_package(path)
    assert summary.status == "passed", summary.format()
    loaded = api.load(path)
    assert loaded.method_name == model.method_name and loaded.outputs == model.outputs
    for out in model.outputs:  # the full model comes back, not only the exported output
        a = model.denoise(stack, axes=axes, output=out, dtype="float32", tta=False)
        b = loaded.denoise(stack, axes=axes, output=out, dtype="float32", tta=False)
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-5)
    return rdf(path), loaded


def test_b2u_package_passes_the_bioimageio_test_and_round_trips(tmp_path, small_stack,
                                                               tiny_model):
    noisy, _ = small_stack
    path = tmp_path / "b2u.zip"
    d = tiny_model.export_bioimageio(path, noisy, "TYX", pixel_size={"Y": 0.1, "X": 0.1},
                                     authors=["Ada Lovelace"], license="MIT")
    assert check_package(d).status == "passed"
    loaded = api.load(d)
    np.testing.assert_array_equal(loaded.denoise(noisy, tta=False),
                                  tiny_model.denoise(noisy, tta=False))
    assert loaded.info["bioimageio"]["output"] == "visible"
    assert loaded.info["steps"] == tiny_model.info["steps"]
    y = rdf(d)
    assert y["format_version"].startswith("0.5") and y["license"] == "MIT"
    assert [a["name"] for a in y["authors"]] == ["Ada Lovelace"]
    assert any("2203.06967" in c["url"] for c in y["cite"])  # Blind2Unblind, always
    assert set(y["weights"]) == {"pytorch_state_dict", "torchscript"}
    arch = y["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "ExportNet" and arch["kwargs"]["output"] == "visible"
    inp, out = y["inputs"][0], y["outputs"][0]
    assert [a.get("type") for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    ax_y = inp["axes"][2]
    assert (ax_y["unit"], ax_y["scale"]) == ("nanometer", 100.0)  # 0.1 µm, a whole number
    assert ax_y["size"] == {"min": 36, "step": 4}  # the U-Net's multiple, room for the halo
    assert out["axes"][2]["halo"] == 16
    # uint8 data: raw / 255 in, × 255 out (the model's own normalization)
    lin = [p for p in inp["preprocessing"] if p["id"] == "scale_linear"][0]["kwargs"]
    assert lin["gain"] == pytest.approx(1 / 255) and lin["offset"] == 0.0
    back = [p for p in out["postprocessing"] if p["id"] == "scale_linear"][0]["kwargs"]
    assert back["gain"] == pytest.approx(255.0)
    tol = y["config"]["bioimageio"]["reproducibility_tolerance"][0]
    assert tol["absolute_tolerance"] == pytest.approx(TOLERANCE * 255)
    with zipfile.ZipFile(d) as zf:
        names = set(zf.namelist())
        readme = zf.read("README.md").decode()
        test_in = np.load(zf.open("test_input.npy"))
    assert {"cover.png", "napari_b2u_network.py", "weights.pt", "weights_torchscript.pt",
            "test_input.npy", "test_output.npy"} <= names
    assert "## Validation" in readme and "visible" in readme
    # the test input is a crop of the training data, in raw units
    assert test_in.shape == (1, 1, 64, 64)
    np.testing.assert_array_equal(test_in[0, 0], noisy[4].astype(np.float32))


@pytest.fixture(scope="module")
def stack96():
    from napari_b2u.sample_data import fmdd_like_stack

    return fmdd_like_stack(6, (96, 80), seed=5)[0]


@pytest.mark.parametrize("method, output", [("b2s", None), ("dbsn", None), ("dbsn", "bayes")])
def test_other_methods_export_their_single_pass_output(tmp_path, stack96, method, output):
    model = api.train_stack(stack96, method=method, steps=3, seed=0, **TINY)
    y, loaded = round_trip(model, stack96, "TYX", tmp_path / f"{method}.zip", output)
    exported = y["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["output"]
    assert exported == (output or model.outputs[0])
    assert loaded.info["bioimageio"]["output"] == exported
    paper = {"b2s": "2303.05183", "dbsn": "2008.13711"}[method]
    assert any(paper in c["url"] for c in y["cite"])
    assert ("chosen at export" in y["description"]) == (output is not None)


def test_a_multi_pass_default_exports_the_single_pass_output_and_says_so(tmp_path, stack96):
    from napari_b2u.methods import Blind2Unblind, register, unregister

    class WeightedFirst(Blind2Unblind):  # a method whose default output takes s² + 1 passes
        name = "b2u_weighted_first"
        outputs = ("weighted", "visible", "blind")

    register(WeightedFirst)
    try:
        model = api.train_stack(stack96, method=WeightedFirst.name, steps=2, seed=0, **TINY)
        y, _ = round_trip(model, stack96, "TYX", tmp_path / "w.zip")
    finally:
        unregister(WeightedFirst.name)
    assert y["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["output"] == "visible"
    assert "default output 'weighted' needs more than one network pass" in y["description"]


def test_channels_are_normalized_each_with_its_own_scale(tmp_path, stack96):
    # two uint16 channels far apart: per-channel scale_linear along the channel axis
    two = np.stack([stack96.astype(np.uint16) * 40 + 100,
                    (255 - stack96).astype(np.uint16) * 10 + 3000], 1)
    model = api.train_stack(two, axes="TCYX", steps=3, seed=0, **TINY)
    y, _ = round_trip(model, two, "TCYX", tmp_path / "two.zip")
    inp = y["inputs"][0]
    assert inp["axes"][1]["channel_names"] == ["channel0", "channel1"]
    lin = [p for p in inp["preprocessing"] if p["id"] == "scale_linear"][0]["kwargs"]
    norm = model.normalization
    assert lin["axis"] == "channel"
    np.testing.assert_allclose(lin["gain"], [1 / s for s in norm.scale])
    np.testing.assert_allclose(lin["offset"], [-o / s for o, s in zip(norm.offset, norm.scale)])
    back = [p for p in y["outputs"][0]["postprocessing"] if p["id"] == "scale_linear"][0]
    np.testing.assert_allclose(back["kwargs"]["offset"], norm.offset)


def test_what_cannot_be_exported_is_refused_in_plain_words(tmp_path, small_stack, tiny_model):
    noisy, _ = small_stack
    with pytest.raises(InputError, match="takes 5 network passes.*export 'visible'"):
        tiny_model.export_bioimageio(tmp_path / "w.zip", noisy, output="weighted")
    gauss = api.train_stack(noisy, method="gauss", steps=2, **TINY)
    with pytest.raises(InputError, match="classical Gaussian.*not a network"):
        gauss.export_bioimageio(tmp_path / "g.zip", noisy)
    with pytest.raises(InputError, match="ending in .zip"):
        tiny_model.export_bioimageio(tmp_path / "m.b2u", noisy)
    with pytest.raises(InputError, match="at least 36×36"):
        tiny_model.export_bioimageio(tmp_path / "s.zip", noisy[:, :32, :32])
    with pytest.raises(InputError, match="trained on 1 channel"):
        tiny_model.export_bioimageio(tmp_path / "c.zip", np.stack([noisy] * 2, 1), "TCYX")
    with pytest.raises(InputError, match="SPDX"):
        tiny_model.export_bioimageio(tmp_path / "l.zip", noisy, license="my own terms")
    with pytest.raises(InputError, match="author"):
        tiny_model.export_bioimageio(tmp_path / "a.zip", noisy, authors=["A/B"])
    far = noisy.astype(np.float64) + 1e9  # float32 cannot hold its steps
    with pytest.raises(InputError, match="too far from zero for float32"):
        api.train_stack(far, steps=2, seed=0, **TINY).export_bioimageio(tmp_path / "f.zip", far)
    existing = tmp_path / "exists.zip"
    existing.write_bytes(b"the user's file")
    with pytest.raises(InputError, match="exists"):
        tiny_model.export_bioimageio(existing, noisy)
    assert existing.read_bytes() == b"the user's file"
    assert not list(tmp_path.glob("*.part"))


def test_only_napari_b2u_packages_open_and_tampering_is_caught(tmp_path, small_stack,
                                                             tiny_model):
    import hashlib
    import io

    import torch
    from bioimageio.spec.utils import write_yaml

    noisy, _ = small_stack
    good = tiny_model.export_bioimageio(tmp_path / "good.zip", noisy)
    with zipfile.ZipFile(good) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}

    def repack(name, **changed):
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as zf:
            for n, data in {**files, **changed}.items():
                zf.writestr(n, data)
        return out

    y = rdf(good)
    del y["config"]["napari_b2u"]
    stream = io.StringIO()
    write_yaml(y, stream)
    foreign = repack("foreign.zip", **{"rdf.yaml": stream.getvalue()})
    with pytest.raises(InputError, match="did not export"):
        api.load(foreign)
    state = torch.load(io.BytesIO(files["weights.pt"]), weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 0.01
    buf = io.BytesIO()
    torch.save(state, buf)
    with pytest.raises(InputError, match="damaged.*SHA256"):  # the file's hash, by bioimageio
        api.load(repack("tampered.zip", **{"weights.pt": buf.getvalue()}))
    y = rdf(good)  # a consistent package with other weights: napari-b2u's own checksum
    y["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    stream = io.StringIO()
    write_yaml(y, stream)
    with pytest.raises(InputError, match="checksum"):
        api.load(repack("rehashed.zip", **{"weights.pt": buf.getvalue(),
                                           "rdf.yaml": stream.getvalue()}))
    # a folder with the unpacked package opens too
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(good).extractall(folder)
    assert is_package(folder) and api.load(folder).method_name == "b2u"
    # a .b2u file (also a zip) is no package
    assert not is_package(tiny_model.save(tmp_path / "m.b2u"))


def test_a_missing_extra_is_one_error_naming_it(tmp_path, small_stack, tiny_model, monkeypatch):
    noisy, _ = small_stack
    package = tiny_model.export_bioimageio(tmp_path / "p.zip", noisy)
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # import fails as if missing
    for action in (lambda: tiny_model.export_bioimageio(tmp_path / "q.zip", noisy),
                   lambda: api.load(package)):
        with pytest.raises(MissingExtra, match=r'pip install "napari-b2u\[bioimageio\]"'):
            action()
    assert not (tmp_path / "q.zip").exists()


def test_the_architecture_file_stands_alone_and_matches_the_training_networks():
    import torch

    from napari_b2u.methods import get_method
    from napari_b2u.models.export_net import ExportNet
    from napari_b2u.zoo.export import architecture_source

    ns: dict = {}
    exec(compile(architecture_source(), "napari_b2u_network.py", "exec"), ns)  # torch only
    for method in ("b2u", "b2s", "dbsn"):
        m = get_method(method)
        cfg = m.model_config(2, width=8, depth=2)
        trained = m.build(cfg).state_dict()
        output = "mu" if method == "dbsn" else "visible"
        standalone = ns["ExportNet"](output=output, **cfg)
        assert {k[len("model."):]: tuple(v.shape) for k, v in standalone.state_dict().items()
                } == {k: tuple(v.shape) for k, v in trained.items()}
        x = torch.rand(1, 2, 16, 16)
        standalone.model.load_state_dict(trained)
        ours = ExportNet(output=output, **cfg)
        ours.model.load_state_dict(trained)
        with torch.no_grad():
            assert torch.equal(standalone.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("um, scale, unit", [(0.1, 100.0, "nanometer"), (2.0, 2.0, "micrometer"),
                                             (0.1083, 108300.0, "picometer"),
                                             (0.065, 65.0, "nanometer")])
def test_pixel_sizes_are_whole_numbers_so_output_sizes_are_exact(um, scale, unit):
    s, u = scale_unit(um)
    assert (s, u) == (scale, unit)
    assert all(k * s / s == k for k in range(1, 5000))  # how the spec computes output sizes


def test_bioimageio_core_predicts_any_size_in_tiles_like_napari_b2u(tmp_path, stack96):
    """A consumer's tiled prediction (the halo crops each tile's border) of an image of no
    valid size equals napari-b2u's away from the image border; at the border consumers pad
    the image (by reflection, as the package asks) where napari-b2u does not."""
    import warnings

    from bioimageio.core import predict
    from bioimageio.core.tensor import Tensor

    from napari_b2u.zoo.export import HALO

    model = api.train_stack(stack96, steps=3, seed=0, **TINY)
    path = model.export_bioimageio(tmp_path / "m.zip", stack96)
    assert rdf(path)["inputs"][0]["pad"] == {"mode": "reflect"}
    # the whole image (of a valid size: min + n × step), then tiles of 40 × 40 with a 16-pixel
    # halo of an image of any size
    for blocks, frame in ((None, stack96[2, :88, :76]), (1, stack96[2, :90, :77])):
        ours = model.denoise(frame, dtype="float32", tta=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = predict(model=str(path), blocksize_parameter=blocks,
                          inputs=Tensor(frame.astype(np.float32)[None, None],
                                        dims=("batch", "channel", "y", "x")))
        got = next(iter(out.members.values())).data.values[0, 0]
        assert got.shape == frame.shape
        inner = (slice(HALO, -HALO),) * 2
        np.testing.assert_allclose(got[inner], ours[inner], rtol=TOLERANCE, atol=TOLERANCE * 255)


def test_a_stack_context_model_is_refused_with_what_to_do(tmp_path, stack96):
    model = api.train_stack(stack96, steps=2, seed=0, **{**TINY, "context": 1})
    with pytest.raises(InputError, match="neighbouring frame.*train it with context=0"):
        model.export_bioimageio(tmp_path / "c.zip", stack96)
    assert not (tmp_path / "c.zip").exists()
