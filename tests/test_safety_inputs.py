"""Input readers give one clear message for damaged or unusual files, and a stack with its frame
axis last is written after the work, not refused (issue 32, items 8 and 11): MATLAB's YXT, PNGs
above PIL's decompression-bomb limit, damaged OME-Zarr metadata and chunks, FIFOs, sockets and
devices, 0-size dimensions, complex and string dtypes. Every file here is a real crafted one."""

import importlib.util
import itertools
import json
import os
import socket
import struct
import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from napari_b2u import api
from napari_b2u.cli import main
from napari_b2u.errors import InputError
from napari_b2u.io.frames import open_image
from napari_b2u.io.memory import BUDGET_ENV
from napari_b2u.io.readers import read_image
from napari_b2u.io.tiff import _ome_takes, tiff_axes, write_tiff

from .conftest import refused

DEN = ["--device", "cpu", "-q"]
#: train stops at reading its input in every refusal below: no model is needed
TRAIN = ["--steps", "1", "--device", "cpu", "--patch-size", "32", "-q"]


# ---- 8. a frame axis last or in the middle ---------------------------------------------------
def _note(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        root = ET.fromstring(tif.ome_metadata)
    desc = next(el.text for el in root.iter() if el.tag.endswith("}Description"))
    return json.loads(desc)


def test_yxt_stack_is_denoised_and_written_transposed(model_file, small_stack, tmp_path):
    noisy, _ = small_stack
    yxt = np.ascontiguousarray(np.moveaxis(noisy, 0, -1))  # (64, 64, 8), as MATLAB keeps it
    inp, out = tmp_path / "x.tif", tmp_path / "o.tif"
    tifffile.imwrite(inp, yxt, photometric="minisblack")
    with pytest.warns(UserWarning, match="axes YXT are written as TYX"):
        assert main(["denoise", str(inp), "--axes", "YXT", "--model", str(model_file),
                     "--out", str(out), *DEN]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TYX"
        res = tif.series[0].asarray()
    note = _note(out)
    assert note["axes"] == "TYX" and note["input_axes"] == "YXT"
    expected = api.load(model_file).denoise(yxt, axes="YXT", device="cpu")
    assert expected.shape == yxt.shape
    np.testing.assert_array_equal(np.moveaxis(res, 0, -1), expected)
    assert read_image(out).axes == "TYX"  # and it reads back as written


def test_frame_axis_in_the_middle_and_x_before_y(tmp_path):
    data = np.arange(5 * 3 * 6 * 2, dtype=np.uint16).reshape(5, 3, 6, 2)  # Y T X C
    with pytest.warns(UserWarning, match="written as TCYX"):
        p = write_tiff(tmp_path / "a.tif", data, "YTXC", {"X": 0.5, "Y": 0.5})
    img = read_image(p)
    assert img.axes == "TCYX" and img.pixel_size == {"X": 0.5, "Y": 0.5}
    np.testing.assert_array_equal(img.data, np.transpose(data, (1, 3, 0, 2)))
    with pytest.warns(UserWarning, match="written as TYX"):
        p = write_tiff(tmp_path / "b.tif", data[..., 0], "YTX")
    np.testing.assert_array_equal(read_image(p).data, np.transpose(data[..., 0], (1, 0, 2)))
    # several sample axes: OME stores each as a 'modulo' of a T, Z or C axis
    seven = np.arange(2**5 * 6 * 5, dtype=np.uint8).reshape(2, 2, 2, 2, 2, 6, 5)
    with pytest.warns(UserWarning, match="written as TSZQCYX"):
        p = write_tiff(tmp_path / "c.tif", seven, "SQTZCYX")
    assert _note(p)["axes"] == "TSZQCYX"
    np.testing.assert_array_equal(tifffile.imread(p), np.transpose(seven, (2, 0, 3, 1, 4, 5, 6)))


def test_every_axes_order_can_be_written():
    """No layout the library accepts fails in the writer after the work."""
    letters = "TZCSIQ"
    for k in range(len(letters) + 1):
        for rest in itertools.permutations(letters, k):
            r = "".join(rest)
            for axes in (r + "YX", "YX" + r, r[:1] + "X" + r[1:] + "Y", "Y" + r + "X"):
                out = tiff_axes(axes)
                assert sorted(out) == sorted(axes) and out.endswith("YX"), axes
                assert _ome_takes(out), (axes, out)
    assert tiff_axes("TZYX") == "TZYX" and tiff_axes("YXT") == "TYX"  # valid orders kept


# ---- 11. PNGs above PIL's decompression-bomb limit --------------------------------------------
@pytest.fixture(scope="module")
def big_png(tmp_path_factory):
    """A 20000x9000 8-bit PNG (180 MP, above PIL's 179 MP error limit): mostly zero, 175 kB."""
    from PIL import Image

    p = tmp_path_factory.mktemp("png") / "slide.png"
    im = Image.new("L", (20000, 9000))
    im.putpixel((123, 45), 200)
    im.putpixel((19999, 8999), 7)
    im.save(p)
    return p


def test_a_large_png_that_fits_memory_is_read(big_png, monkeypatch):
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv(BUDGET_ENV, "4GB")
    img = read_image(big_png)
    assert img.data.shape == (9000, 20000) and img.data.dtype == np.uint8
    assert img.data[45, 123] == 200 and img.data[-1, -1] == 7 and img.data.sum() == 207
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's limit is back for everyone else


def test_a_large_png_beyond_the_budget_is_one_message(big_png, monkeypatch, capsys):
    monkeypatch.setenv(BUDGET_ENV, "256MB")
    refused(capsys, ["check", str(big_png)], "slide.png", "20000x9000", "memory budget",
             "TIFF")
    with pytest.raises(InputError, match="20000x9000"):
        read_image(big_png)


# ---- 11. OME-Zarr with damaged metadata or chunks ---------------------------------------------
try:
    import zarr
except ImportError:  # the `distributed` extra is not installed
    zarr = None
needs_zarr = pytest.mark.skipif(zarr is None or importlib.util.find_spec("ome_zarr") is None,
                                reason='needs pip install "napari-b2u[distributed]"')


def _ome_zarr(path, data, chunks=None, fmt=3):
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    write_image(data, group, axes=list("tyx"), scale_factors=(),
                storage_options={"chunks": chunks or data.shape})
    return path


def _stack(shape=(3, 40, 44), dtype=np.uint16):
    return np.random.default_rng(0).integers(0, 255, shape).astype(dtype)


def _edit_attrs(path, edit):
    f = path / "zarr.json"
    meta = json.loads(f.read_text())
    edit(meta["attributes"]["ome"])
    f.write_text(json.dumps(meta))


def _ms(o):
    return o["multiscales"][0]


def _ds(o):
    return o["multiscales"][0]["datasets"][0]


BAD_METADATA = {
    "multiscales missing": (lambda o: o.pop("multiscales"), "not an OME-Zarr image"),
    "multiscales empty": (lambda o: o.update(multiscales=[]), "not an OME-Zarr image"),
    "multiscales not a list": (lambda o: o.update(multiscales={"a": 1}), "multiscales"),
    "datasets missing": (lambda o: _ms(o).pop("datasets"), "datasets[0].path"),
    "datasets empty": (lambda o: _ms(o).update(datasets=[]), "datasets[0].path"),
    "path missing": (lambda o: _ds(o).pop("path"), "datasets[0].path"),
    "path to no array": (lambda o: _ds(o).update(path="9"), "no array '9'"),
    "transformations a string": (lambda o: _ds(o).update(coordinateTransformations="scale"),
                                 "coordinateTransformations"),
    "transformation not a dict": (lambda o: _ds(o).update(coordinateTransformations=["x"]),
                                  "coordinateTransformations"),
    "scale not numbers": (lambda o: _ds(o).update(coordinateTransformations=[
        {"type": "scale", "scale": [None, 1, 1]}]), "scale"),
    "scale too short": (lambda o: _ds(o).update(coordinateTransformations=[
        {"type": "scale", "scale": [1.0]}]), "not 3 numbers"),
    "axes not a list": (lambda o: _ms(o).update(axes=5), "axes"),
    "axes of another rank": (lambda o: _ms(o).update(axes=[{"name": "y"}, {"name": "x"}]),
                             "2 axes for an array of 3"),
}


@needs_zarr
@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_damaged_ome_zarr_metadata_is_one_message(case, tmp_path, capsys):
    edit, words = BAD_METADATA[case]
    src = _ome_zarr(tmp_path / "in.ome.zarr", _stack())
    _edit_attrs(src, edit)
    refused(capsys, ["train", str(src), "--out", str(tmp_path / "m.b2u"), *TRAIN],
             "in.ome.zarr", words)
    with pytest.raises(InputError, match="in.ome.zarr"):
        open_image(src)
    assert not (tmp_path / "m.b2u").exists()


@needs_zarr
@pytest.mark.parametrize("edit", [lambda d: d.pop("coordinateTransformations"),
                                  lambda d: d.update(coordinateTransformations=None)])
def test_ome_zarr_without_transformations_has_no_pixel_size(edit, tmp_path):
    """OME-Zarr before 0.4 declares none: read, with no invented 1 µm pixels."""
    src = _ome_zarr(tmp_path / "in.ome.zarr", _stack())
    _edit_attrs(src, lambda o: edit(_ds(o)))
    img = open_image(src)
    assert img.axes == "TYX" and img.pixel_size == {}


def _edit_array(path, edit):
    f = path / "s0" / "zarr.json"
    meta = json.loads(f.read_text())
    edit(meta)
    f.write_text(json.dumps(meta))


BAD_ARRAYS = {
    "chunk shape 0": (lambda m: m["chunk_grid"]["configuration"].update(
        chunk_shape=[0, 40, 44]), "chunk shape (0, 40, 44)"),
    "unknown data type": (lambda m: m.update(data_type="foo"), "could not be read as zarr"),
    "invalid JSON": (None, "could not be read as zarr"),
}


@needs_zarr
@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_damaged_zarr_array_metadata_is_one_message(case, tmp_path, capsys):
    edit, words = BAD_ARRAYS[case]
    src = _ome_zarr(tmp_path / "in.ome.zarr", _stack())
    if edit is None:
        (src / "s0" / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    else:
        _edit_array(src, edit)
    refused(capsys, ["train", str(src), "--out", str(tmp_path / "m.b2u"), *TRAIN],
             "in.ome.zarr", words)
    with pytest.raises(InputError, match=words.split(" (")[0]):
        open_image(src)


@needs_zarr
def test_a_truncated_chunk_names_the_file_and_the_chunk(model_file, tmp_path, capsys):
    src = _ome_zarr(tmp_path / "in.ome.zarr", _stack(), chunks=(1, 40, 44))
    chunk = src / "s0" / "c" / "1" / "0" / "0"  # frame 1
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    words = ("in.ome.zarr is damaged", "chunk (1, 0, 0)", "[1:2, 0:40, 0:44]", "'s0'",
             "could not be decoded")
    refused(capsys, ["denoise", str(src), "--model", str(model_file),
                      "--out", str(tmp_path / "o.tif"), *DEN], *words)
    assert not (tmp_path / "o.tif").exists()
    refused(capsys, ["train", str(src), "--out", str(tmp_path / "m2.b2u"), *TRAIN], *words)
    with pytest.raises(InputError, match=r"chunk \(1, 0, 0\)"):
        api.denoise_stack(src, model_file, device="cpu")
    with pytest.raises(InputError, match="is damaged"):
        np.asarray(open_image(src).data)


@needs_zarr
def test_a_truncated_blosc_chunk_of_a_zarr_array(tmp_path, capsys):
    codec = zarr.codecs.BloscCodec(cname="lz4")
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=(3, 40, 44), chunks=(1, 40, 44),
                          dtype="uint16", compressors=codec)
    z[:] = _stack()
    chunk = tmp_path / "in.zarr" / "c" / "2" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    refused(capsys, ["train", str(tmp_path / "in.zarr"), "--out", str(tmp_path / "m.b2u"),
                      *TRAIN], "in.zarr is damaged", "chunk (2, 0, 0)")


@needs_zarr
@pytest.mark.parametrize("kind", ["complex", "string", "empty frames", "empty rows"])
def test_zarr_dtypes_and_sizes_it_cannot_denoise(kind, tmp_path, capsys):
    p = tmp_path / "in.zarr"
    if kind == "complex":
        _ome_zarr(p, _stack().astype(np.complex64))
        words = "complex-valued"
    elif kind == "string":
        zarr.create_array(str(p), shape=(3, 40, 44), chunks=(1, 40, 44), dtype=str)
        words = "not numeric"
    else:
        shape = (0, 40, 44) if kind == "empty frames" else (3, 0, 44)
        zarr.create_array(str(p), shape=shape, chunks=(1, 40, 44), dtype="uint8")
        words = f"empty (shape {shape})"
    refused(capsys, ["train", str(p), "--out", str(tmp_path / "m.b2u"), *TRAIN], words)


# ---- 11. TIFFs with a 0-size dimension ---------------------------------------------------------
def test_tiff_with_zero_width_is_one_message(tmp_path, capsys):
    p = tmp_path / "w0.tif"
    tifffile.imwrite(p, np.full((64, 64), 5, np.uint8))
    with tifffile.TiffFile(p) as tif:
        tag = tif.pages[0].tags["ImageWidth"]
        fmt, off = ("<H" if tag.dtype == 3 else "<I"), tag.valueoffset
    raw = bytearray(p.read_bytes())
    raw[off:off + struct.calcsize(fmt)] = struct.pack(fmt, 0)  # ImageWidth = 0
    p.write_bytes(bytes(raw))
    refused(capsys, ["check", str(p)], "w0.tif could not be read as a TIFF")
    refused(capsys, ["train", str(p), "--out", str(tmp_path / "m.b2u"), *TRAIN],
             "w0.tif could not be read as a TIFF")  # the lazy reader (TiffSource) too
    tifffile.imwrite(tmp_path / "e.tif", np.zeros((0, 64, 64), np.uint8))
    refused(capsys, ["check", str(tmp_path / "e.tif")], "the stack is empty")


# ---- 11. FIFOs, sockets and devices ------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_a_tiff_is_refused_without_blocking(tmp_path, capsys):
    fifo, model = tmp_path / "x.tif", tmp_path / "m.b2u"  # torch.load would block on a model
    for path in (fifo, model):
        os.mkfifo(path)
    tifffile.imwrite(tmp_path / "w.tif", np.ones((32, 32), np.uint8))
    done = threading.Event()

    def unblock():  # before the fix a reader waits for a writer: be one, so the test ends
        while not done.wait(0.2):
            for path in (fifo, model):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader (yet)
                    pass

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    try:
        refused(capsys, ["check", str(fifo)], "x.tif is a FIFO")
        refused(capsys, ["train", str(fifo), "--out", str(tmp_path / "n.b2u"), *TRAIN],
                 "x.tif is a FIFO")
        with pytest.raises(InputError, match="FIFO"):
            open_image(fifo)
        refused(capsys, ["denoise", str(tmp_path / "w.tif"), "--model", str(model), "--out",
                          str(tmp_path / "o.tif")], "m.b2u is a FIFO")
        with pytest.raises(InputError, match="FIFO"):
            api.load(model)
    finally:
        done.set()
        helper.join()


def test_check_of_a_constant_image_names_it(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((64, 64), np.uint8))
    refused(capsys, ["check", str(tmp_path / "z.tif")], "channel 0 is constant")


def test_sockets_and_devices_are_refused_by_name(tmp_path, capsys):
    if hasattr(socket, "AF_UNIX"):
        path = tmp_path / "s.png"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
            refused(capsys, ["check", str(path)], "s.png is a socket")
    if os.path.exists("/dev/null"):
        refused(capsys, ["check", "/dev/null"], "/dev/null is a character device")
        with pytest.raises(InputError, match="character device"):
            read_image("/dev/null")
