"""Regressions of what the file fuzz (benchmarks/fuzz_files.py, issue 32) found: each test
crafts the real file the fuzz made and runs the command that failed on it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import struct
import threading
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_b2u import api
from napari_b2u.cli import main
from napari_b2u.errors import InputError
from napari_b2u.io import read_image
from napari_b2u.modelfile import weights_checksum

from .conftest import load_each_in_a_subprocess, refused

DEN = ["--device", "cpu", "-q", "--tta", "off"]
TRAIN = ["--steps", "1", "--device", "cpu", "--patch-size", "32", "--floor", "none", "-q"]


# ---- a zarr folder holding a FIFO or a device where a chunk or its metadata should be -----------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("fmt", [2, 3])
def test_a_fifo_or_device_inside_a_zarr_folder_is_refused_without_blocking(
        tmp_path, small_stack, model_file, capsys, fmt):
    """A chunk that is a FIFO blocked denoise and train forever (zarr read it in a thread);
    zarr.json / .zarray as a FIFO blocked the opening."""
    zarr = pytest.importorskip("zarr")
    noisy, _ = small_stack
    fifos = []

    def make(name, damage):
        path = tmp_path / name
        zarr.create_array(path, shape=noisy.shape, chunks=(1, 32, 32), dtype=noisy.dtype,
                          zarr_format=fmt)[:] = noisy
        chunk = next(p for p in sorted(path.rglob("*")) if p.is_file()
                     and p.name not in ("zarr.json", ".zarray", ".zattrs"))
        target = {"chunk": chunk, "meta": path / ("zarr.json" if fmt == 3 else ".zarray"),
                  "device": chunk}[damage]
        target.unlink()
        if damage == "device":
            target.symlink_to("/dev/null")
        else:
            os.mkfifo(target)
            fifos.append(target)
        return path, target.relative_to(path)

    done = threading.Event()

    def unblock():  # before the fix a reader waits for a writer: be one, so the test ends
        while not done.wait(0.2):
            for path in fifos:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader (yet)
                    pass

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    try:
        for damage, kind in (("chunk", "a FIFO"), ("meta", "a FIFO"),
                             ("device", "a character device")):
            path, member = make(f"{damage}.zarr", damage)
            words = (f"{path.name} is damaged", f"its file {member} is {kind}")
            refused(capsys, ["denoise", str(path), "--model", str(model_file), "--out",
                              str(tmp_path / f"{damage}.tif"), *DEN], *words)
            refused(capsys, ["train", str(path), "--out", str(tmp_path / f"{damage}.b2u"),
                              *TRAIN], *words)
            with pytest.raises(InputError, match=kind):
                api.load(model_file).denoise(str(path), device="cpu")
            assert not (tmp_path / f"{damage}.tif").exists()
    finally:
        done.set()
        helper.join()
# ---- a model or package that declares a network too deep to build ------------------------------
def _crafted(model_file, path, **changes):
    ck = torch.load(model_file, weights_only=True)
    ck.update(changes)
    ck["weights_sha256"] = weights_checksum(ck["state_dict"])  # as a crafter would
    torch.save(ck, path)
    return path


def test_a_network_too_deep_to_build_is_refused_unbuilt(model_file, tmp_path, tiny_model):
    """A model whose description declares depth 100000 (a package's config too) kept load and
    denoise busy for minutes building it on the meta device; a DBSN blind extent of 10^9 built
    its mask pixel by pixel, forever. Run in a subprocess so that a regression fails on its
    timeout instead of hanging the suite."""
    ck = torch.load(model_file, weights_only=True)
    deep = _crafted(model_file, tmp_path / "deep.b2u",
                    model_config={**ck["model_config"], "depth": 100_000})
    wide = _crafted(model_file, tmp_path / "mask.b2u", method="dbsn", method_params={},
                    model_config={"arch": "dbsn", "in_channels": 1, "out_channels": 1,
                                  "width": 16, "blocks": 2, "est_width": 8,
                                  "blind_ly": 10**9, "blind_lx": 0})
    paths = [deep, wide]
    if importlib.util.find_spec("bioimageio.spec") is not None:  # where the fuzz found it
        paths.append(_deep_package(tiny_model, tmp_path))
    lines, said = load_each_in_a_subprocess(paths)
    assert len(lines) == len(paths), said
    assert "declares a network with depth 100000" in lines[0], lines[0]
    assert "declares a network with blind_ly 1000000000" in lines[1], lines[1]
    for line in lines:
        assert line.startswith("REFUSED") and "refusing to load it" in line, line


def _deep_package(tiny_model, tmp_path):
    from bioimageio.spec.utils import read_yaml

    sample = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    good = tiny_model.export_bioimageio(tmp_path / "good.zip", sample)
    with zipfile.ZipFile(good) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    rdf = read_yaml(files["rdf.yaml"].decode())
    rdf["config"]["napari_b2u"]["model_config"]["depth"] = 100_000
    return _repack(files, rdf, tmp_path / "deep.zip")


def _repack(files: dict, rdf: dict, path):
    """A package at ``path``: the members ``files`` with ``rdf`` as its rdf.yaml."""
    from bioimageio.spec.utils import write_yaml

    text = io.StringIO()
    write_yaml(rdf, text)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in {**files, "rdf.yaml": text.getvalue().encode()}.items():
            zf.writestr(n, data)
    return path


# ---- a stack whose middle frame is constant ------------------------------------------------------
def test_check_measures_a_stack_whose_middle_frame_is_constant(tmp_path, small_stack, capsys):
    """A dropped (all-zero) middle frame: the noise fit took that frame and numpy's polyfit
    divided by its zero spread ("SVD did not converge in Linear Least Squares", printed as the
    error of `napari-b2u check`)."""
    noisy, _ = small_stack
    stack = noisy.copy()
    stack[len(stack) // 2] = 0
    path = tmp_path / "dropped.tif"
    tifffile.imwrite(path, stack, metadata={"axes": "TYX"})
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Poisson-Gaussian fit: variance =" in out
    rep = api.noise_report(stack, "TYX")
    intact = api.noise_report(np.delete(noisy, len(stack) // 2, axis=0), "TYX")
    assert np.isfinite(rep.gain) and np.isfinite(rep.read_var)
    # the fit comes from a frame with noise: as on the stack without the dropped frame
    assert rep.gain == pytest.approx(intact.gain, rel=0.5)


# ---- model files whose free-form info or blend do not fit ---------------------------------------
def _with_deep_info(model_file, path, depth: int):
    """The model with an info list nested ``depth`` deep: written as pickle opcodes (a pickler
    would recurse), in place of a placeholder string in torch's data.pkl."""
    ck = torch.load(model_file, weights_only=True)
    ck["info"] = {"deep": "PLACEHOLDER"}
    buf = io.BytesIO()
    torch.save(ck, buf)
    pickled = b"X" + len(b"PLACEHOLDER").to_bytes(4, "little") + b"PLACEHOLDER"
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert pickled in data
                data = data.replace(pickled, b"]" * depth + b"a" * (depth - 1), 1)
            zout.writestr(info, data)
    return path


def test_a_model_whose_info_nests_deeply_is_refused_at_load(model_file, tmp_path, capsys):
    """An info nested 1000 deep loaded, then `napari-b2u export` (and saving the model) ended in
    a RecursionError traceback."""
    path = _with_deep_info(model_file, tmp_path / "deep.b2u", 5000)
    with pytest.raises(InputError, match="info is nested more than 32 deep"):
        api.load(path)
    refused(capsys, ["export", str(path), "--out", str(tmp_path / "p.zip")],
             "deep.b2u is damaged: its info is nested more than 32 deep")
    assert not (tmp_path / "p.zip").exists()
    shallow = _with_deep_info(model_file, tmp_path / "ok.b2u", 20)  # deeper than ours: fine
    assert api.load(shallow).info["deep"]


def test_a_blend_with_another_number_of_channels_is_refused_at_load(
        model_file, tmp_path, small_stack, capsys):
    """A blend with three Gaussian σ on a one-channel model loaded, then denoising failed in
    torch ("Expected 3D or 4D ... but got: [1, 0, 64, 64]")."""
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, small_stack[0][:2], metadata={"axes": "TYX"})
    for sigma, ok in (([1.0, 1.0, 1.0], False), ([1.0], True)):
        path = _crafted(model_file, tmp_path / f"b{len(sigma)}.b2u", version=3,
                        blend={"weight": 0.5, "gauss_sigma": sigma})
        out = tmp_path / f"o{len(sigma)}.tif"
        argv = ["denoise", str(inp), "--model", str(path), "--out", str(out), *DEN]
        if ok:
            assert api.load(path).blend["gauss_sigma"] == [1.0]
            assert main(argv) == 0 and out.exists()
            continue
        with pytest.raises(InputError, match=r"blend has 3 Gaussian σ for 1 channel\(s\)"):
            api.load(path)
        refused(capsys, argv, "b3.b2u is damaged: its blend has 3 Gaussian σ")
        assert not out.exists()


# ---- an unpacked package whose weights are a FIFO -----------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_package_folder_whose_weights_are_a_fifo_is_refused_without_blocking(
        tmp_path, tiny_model, small_stack, capsys):
    """bioimageio.spec read the weights of an unpacked package that were a FIFO: load and
    denoise blocked forever."""
    pytest.importorskip("bioimageio.spec")
    good = tiny_model.export_bioimageio(tmp_path / "good.zip", small_stack[0][0])
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(good) as zf:
        zf.extractall(folder)
    (folder / "weights.pt").unlink()
    os.mkfifo(folder / "weights.pt")
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, small_stack[0][:2], metadata={"axes": "TYX"})
    done = threading.Event()

    def unblock():  # before the fix a reader waits for a writer: be one, so the test ends
        while not done.wait(0.2):
            try:
                os.close(os.open(folder / "weights.pt", os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (yet)
                pass

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    try:
        for path in (folder, folder / "rdf.yaml"):
            with pytest.raises(InputError, match="its file weights.pt is not a regular file"):
                api.load(path)
        refused(capsys, ["denoise", str(inp), "--model", str(folder), "--out",
                          str(tmp_path / "o.tif"), *DEN], "its file weights.pt is not a regular")
    finally:
        done.set()
        helper.join()


# ---- damaged image files -------------------------------------------------------------------------
def test_an_fmdd_view_with_frames_of_two_sizes_is_refused_by_name(tmp_path, small_stack, capsys):
    """numpy's "all input arrays must have the same shape" was the message."""
    from PIL import Image

    raw = tmp_path / "set" / "raw" / "1"
    raw.mkdir(parents=True)
    Image.fromarray(small_stack[0][0]).save(raw / "0.png")
    Image.fromarray(small_stack[0][1][:40, :50]).save(raw / "1.png")
    for cmd in (["check"], ["train", "--out", str(tmp_path / "m.b2u"), *TRAIN]):
        refused(capsys, [cmd[0], str(tmp_path / "set"), *cmd[1:]],
                 "1.png is 50x40 pixels, the first frame", "64x64", "crop or remove it")


def test_an_npy_file_whose_header_does_not_parse_isrefused(tmp_path, small_stack, capsys):
    """A '(' in the header's padding: numpy's header parser raised tokenize.TokenError, which
    is no ValueError, and the commands ended in a traceback."""
    path = tmp_path / "x.npy"
    np.save(path, small_stack[0][:2])
    raw = bytearray(path.read_bytes())
    end = raw.index(b"\n")
    raw[end - 8] = ord("(")
    path.write_bytes(bytes(raw))
    refused(capsys, ["check", str(path)], "x.npy is not a readable .npy array (TokenError")
    refused(capsys, ["train", str(path), "--out", str(tmp_path / "m.b2u"), *TRAIN],
             "x.npy is not a readable .npy array")


def test_a_tiff_that_declares_more_than_memory_is_refused_before_allocating(
        tmp_path, small_stack, capsys):
    """ImageWidth 2^31 - 1 on a 4 KB file: `check` tried to allocate 128 GiB and printed
    numpy's MemoryError."""
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, small_stack[0][0])
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["ImageWidth"]
        at, fmt = tag.valueoffset, "<" + tifffile.TIFF.DATA_FORMATS[tag.dtype][-1]
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, at, 2**31 - 1)
    path.write_bytes(bytes(raw))
    refused(capsys, ["check", str(path)], "wide.tif declares a 64x2147483647 uint8 image "
             "(128.0 GiB), more than the memory budget")
    with pytest.raises(InputError, match="declares a 64x2147483647"):
        read_image(path)


# ---- a weight that declares 10^10 values over one stored value ----------------------------------
def _huge_view():
    return torch.zeros(1).as_strided((100_000, 100_000), (0, 0))  # 4 bytes on disk


def test_a_weight_declaring_ten_billion_values_is_refused_before_it_is_read(
        model_file, tmp_path, tiny_model, small_stack):
    """A view of one float as 100000x100000 (torch.save stores the 4 bytes and the shape): the
    NaN check allocated it (torch's 'DefaultCPUAllocator: can't allocate memory: you tried to
    allocate 40000000000 bytes', a traceback), in a model file and a package's weights.pt."""
    ck = torch.load(model_file, weights_only=True)
    key = next(iter(ck["state_dict"]))
    path = tmp_path / "huge.b2u"
    torch.save({**ck, "state_dict": {**ck["state_dict"], key: _huge_view()}}, path)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(InputError, match=rf"weight {key} declares 10,000,000,000 values"):
        api.load(path)
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec.utils import read_yaml

    good = tiny_model.export_bioimageio(tmp_path / "good.zip", small_stack[0][0])
    with zipfile.ZipFile(good) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    torch.save({"model.w": _huge_view()}, buf)
    files["weights.pt"] = buf.getvalue()
    rdf = read_yaml(files["rdf.yaml"].decode())  # the crafter updates the digest too
    rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    pkg = _repack(files, rdf, tmp_path / "huge.zip")
    with pytest.raises(InputError, match="weight w declares 10,000,000,000 values"):
        api.load(pkg)


# ---- damaged autosaves the field checks let through ---------------------------------------------
@pytest.fixture
def autosave(tmp_path, small_stack):
    from .conftest import TINY

    noisy, _ = small_stack
    path = tmp_path / "ck.b2u"
    api.train_stack(noisy, steps=2, autosave=str(path), autosave_every=1e9, seed=0, **TINY)
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, noisy, metadata={"axes": "TYX"})
    return path, inp


def _resumerefused(capsys, tmp_path, ck, inp, *words):
    out = tmp_path / "out.b2u"
    refused(capsys, ["train", str(inp), "--out", str(out), "--resume", str(ck), "--steps",
                      "4", "--device", "cpu", "-q"], *words)
    assert not out.exists()


def test_an_autosave_with_an_optimizer_setting_of_another_type_isrefused(
        autosave, tmp_path, capsys):
    """eps '1e-8' (a string) passed the checks and Adam's step failed ('add_(): argument
    'other' must be Tensor, not str'); a moment declaring 10^10 values was allocated by the NaN
    check before its shape was compared."""
    path, inp = autosave
    for name, change in (("eps", lambda o: o["param_groups"][0].update(eps="1e-8")),
                         ("amsgrad", lambda o: o["param_groups"][0].update(amsgrad="yes")),
                         ("betas", lambda o: o["param_groups"][0].update(betas=(0.9,))),
                         ("moment", lambda o: next(iter(o["state"].values())).update(
                             exp_avg=_huge_view()))):
        ck = torch.load(path, weights_only=True)
        change(ck["training"]["optimizer"])
        bad = tmp_path / f"{name}.b2u"
        torch.save(ck, bad)
        _resumerefused(capsys, tmp_path, bad, inp, f"{bad.name}: the autosave is damaged "
                        "(optimizer)")


def test_an_autosave_whose_training_entry_is_a_tensor_isrefused(autosave, tmp_path, capsys):
    """An empty tensor as the training entry: 'Boolean value of Tensor with no values is
    ambiguous', a traceback."""
    path, inp = autosave
    for value in (torch.zeros(0), [1, 2], "x"):
        ck = torch.load(path, weights_only=True)
        ck["training"] = value
        bad = tmp_path / "bad.b2u"
        torch.save(ck, bad)
        _resumerefused(capsys, tmp_path, bad, inp, "bad.b2u: the autosave is damaged "
                        "(training)")


# ---- an unpacked package that refers to a name too long for the file system --------------------
def test_a_package_folder_referring_to_a_name_too_long_isrefused(tmp_path, tiny_model,
                                                                   small_stack):
    """A cover named 'x' * 100000: the folder check's stat raised 'File name too long'
    (OSError), a traceback."""
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec.utils import read_yaml, write_yaml

    good = tiny_model.export_bioimageio(tmp_path / "good.zip", small_stack[0][0])
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(good) as zf:
        zf.extractall(folder)
    rdf = read_yaml((folder / "rdf.yaml").read_text())
    rdf["covers"] = ["x" * 100_000]
    with open(folder / "rdf.yaml", "w") as f:
        write_yaml(rdf, f)
    for path in (folder, folder / "rdf.yaml"):
        with pytest.raises(InputError, match=r"refers to 'xxx.*', which is no file of the "
                                             r"package \(File name too long\)"):
            api.load(path)


# ---- messages the fuzz found unhelpful -----------------------------------------------------------
def test_a_model_path_that_is_no_file_is_named_as_a_model(tmp_path, small_stack, capsys):
    """A folder or a device given as the model was 'not an image file'."""
    folder, device = tmp_path / "m.b2u", tmp_path / "d.b2u"
    folder.mkdir()
    device.symlink_to("/dev/null")
    inp = tmp_path / "in.tif"
    tifffile.imwrite(inp, small_stack[0][:2], metadata={"axes": "TYX"})
    for path, words in ((folder, "m.b2u is a folder; point to a model file"),
                        (device, "d.b2u is a character device, not a model file")):
        with pytest.raises(InputError, match=words):
            api.load(path)
        refused(capsys, ["denoise", str(inp), "--model", str(path), "--out",
                          str(tmp_path / "o.tif"), *DEN], words)


def test_a_package_error_names_its_cause(tmp_path, tiny_model, small_stack):
    """The cause was the last line of the validator's message: pydantic's 'For further
    information visit https://errors.pydantic.dev/...' link, or a YAML error's caret ('^ (line:
    3)')."""
    pytest.importorskip("bioimageio.spec")
    good = tiny_model.export_bioimageio(tmp_path / "good.zip", small_stack[0][0])
    with zipfile.ZipFile(good) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    text = files["rdf.yaml"]
    for k, (new, words) in enumerate((
            (text.replace(b"type: model", b"type: null", 1),
             "(type: Input should be a valid string)"),
            (text.replace(b"\nname: ", b"\nname: !!python/name:os.system\nx: ", 1),
             "could not determine a constructor for the tag "
             "'tag:yaml.org,2002:python/name:os.system' (line: 3)"))):
        path = tmp_path / f"p{k}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, data in {**files, "rdf.yaml": new}.items():
                zf.writestr(n, data)
        with pytest.raises(InputError) as err:
            api.load(path)
        assert words in str(err.value) and "For further information" not in str(err.value)
