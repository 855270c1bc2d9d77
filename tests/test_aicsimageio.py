"""aicsimageio, named by this project's users, reads what tifffile and bioio cannot when it is
installed (issue 30, item 13) — without being a dependency: it pins old tifffile/zarr, so the
test injects a minimal stand-in module with the API surface the reader uses (``AICSImage(path)``,
``.dims.order``, ``.data``, ``.physical_pixel_sizes``)."""

import io
import sys
import types
from collections import namedtuple

import numpy as np
import pytest

from napari_b2u.errors import InputError
from napari_b2u.io.readers import read_image

MAGIC = b"FAKEAICS"  # no format napari-b2u, tifffile or bioio knows
Sizes = namedtuple("PhysicalPixelSizes", "Z Y X")  # as aicsimageio.types.PhysicalPixelSizes


def fake_file(path, data, order, sizes=(None, 0.2, 0.2)):
    buf = io.BytesIO()
    np.save(buf, data)
    path.write_bytes(MAGIC + order.encode().ljust(8) + repr(sizes).encode().ljust(40)
                     + buf.getvalue())
    return path


def fake_aicsimageio():
    """A module ``aicsimageio`` whose AICSImage reads :func:`fake_file` files (and, as the real
    one, raises for anything else)."""
    class Dimensions:
        def __init__(self, order):
            self.order = order

    class AICSImage:
        def __init__(self, path):
            raw = open(path, "rb").read()
            if not raw.startswith(MAGIC):
                raise ValueError(f"no reader for {path}")
            self.dims = Dimensions(raw[8:16].decode().strip())
            self.physical_pixel_sizes = Sizes(*eval(raw[16:56].decode()))
            self.data = np.load(io.BytesIO(raw[56:]))

    mod = types.ModuleType("aicsimageio")
    mod.AICSImage = AICSImage
    return mod


def test_a_file_only_aicsimageio_reads_is_read_through_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "aicsimageio", fake_aicsimageio())
    data = np.random.default_rng(0).integers(0, 4000, (3, 2, 1, 16, 20)).astype(np.uint16)
    img = read_image(fake_file(tmp_path / "cells.czi", data, "TCZYX", (1.5, 0.2, 0.25)))
    assert img.axes == "TCYX" and img.data.shape == (3, 2, 16, 20)  # the singleton Z dropped
    np.testing.assert_array_equal(img.data, data[:, :, 0])
    assert img.pixel_size == {"Y": 0.2, "X": 0.25}
    # RGB samples (aicsimageio's S) are a channel axis
    rgb = np.random.default_rng(1).integers(0, 255, (1, 1, 1, 16, 20, 3)).astype(np.uint8)
    img = read_image(fake_file(tmp_path / "rgb.nd2", rgb, "TCZYXS"))
    assert img.axes == "YXC" and img.data.shape == (16, 20, 3)


def test_without_a_reader_the_message_names_bioio_and_aicsimageio(tmp_path, monkeypatch):
    p = fake_file(tmp_path / "cells.czi", np.zeros((1, 1, 1, 8, 8), np.uint8), "TCZYX")
    monkeypatch.setitem(sys.modules, "aicsimageio", None)  # not installed: import fails
    with pytest.raises(InputError) as info:
        read_image(p)
    text = str(info.value)
    assert "aicsimageio" in text and "pip install aicsimageio" in text and "bioio" in text
    monkeypatch.setitem(sys.modules, "bioio", None)  # neither installed
    with pytest.raises(InputError) as info:
        read_image(p)
    text = str(info.value)
    assert "napari-b2u[bioio]" in text and "pip install aicsimageio" in text
    assert "convert the file to TIFF" in text


def test_a_file_neither_reads_names_what_each_said(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "aicsimageio", fake_aicsimageio())
    p = tmp_path / "scan.lif"
    p.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(InputError, match="aicsimageio could not read it .*no reader for"):
        read_image(p)
