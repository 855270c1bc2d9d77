"""Reading an image file, whatever it is: TIFF/OME-TIFF (tifffile), PNG, .npy, FMDD folders,
and — when the optional ``bioio`` extra, or aicsimageio, is installed — proprietary microscope
formats. A file is recognized by its content, not its name. Readers return an
:class:`~.image.Image` with the array, its axes string and the physical pixel sizes.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np

from ..data import default_axes, single_channel_of_rgb
from ..errors import InputError
from .fmdd import is_fmdd_folder, read_fmdd_folder
from .image import Image, check_regular, read_png
from .tiff import normalize_axes, read_tiff


def read_image(path, axes: str | None = None) -> Image:
    """Read an image file. ``axes`` overrides what the file says."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    check_regular(path, folder_ok=True)  # a FIFO or device would block or never end
    if path.is_dir():
        if is_fmdd_folder(path):
            img = read_fmdd_folder(path)
        else:
            raise InputError(
                f"{path} is a folder; point to an image file or an FMDD-style folder "
                "(<set>/raw/<view>/*.png)")
    else:
        img = _read_file(path)
    if axes is not None:
        img.axes = axes.upper()
    elif not img.axes or len(img.axes) != img.data.ndim:
        if img.data.ndim > 3:
            raise InputError(
                f"{path} holds a {img.data.ndim}D array of shape {img.data.shape} whose axes the "
                "file does not name; give them, e.g. --axes TZYX or axes='TCYX' (T time, Z "
                "depth, C channel, Y X the image)")
        img.axes = default_axes(img.data.ndim)
    return img


MAGIC = {
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
    b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg", b"\x93NUMPY": "npy",
}
SUFFIX_KIND = {".tif": "tiff", ".tiff": "tiff", ".btf": "tiff", ".tf8": "tiff", ".png": "png",
               ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}


def sniff(path: Path) -> str | None:
    """The file's real format from its first bytes (None if not one we read directly)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise InputError(f"{path} is empty (0 bytes)")
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _read_file(path: Path) -> Image:
    kind = sniff(path)
    claimed = SUFFIX_KIND.get(path.suffix.lower())
    if kind is None:
        if claimed is not None:
            raise InputError(
                f"{path} is named like a {claimed.upper()} file but its content is not one "
                "(corrupt, or another format renamed); check the file")
        return _read_other(path)
    if claimed is not None and claimed != kind:
        warnings.warn(f"{path.name} is a {kind.upper()} file despite its extension; reading it "
                      f"as {kind.upper()}", stacklevel=3)
    if kind == "tiff":
        return read_tiff(path)
    if kind == "npy":
        try:
            data = np.load(path, allow_pickle=False, mmap_mode="r")
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged header: ValueError, TokenError...
            raise InputError(f"{path} is not a readable .npy array ({type(exc).__name__}: "
                             f"{exc})") from exc
        return Image(np.asarray(data), "", path=str(path))
    return _colour_mapped(Image(read_png(path), "YX", path=str(path)))


def _colour_mapped(img: Image) -> Image:
    """A (Y, X, 3|4) image that is really one channel (grey or a one-colour lookup table) is
    read as that channel, with a warning; true colour keeps its channel axis (and gets the
    core's RGB error unless axes are given)."""
    if img.data.ndim == 3 and img.data.shape[-1] in (3, 4):
        one = single_channel_of_rgb(img.data)
        if one is not None:
            warnings.warn(f"{Path(img.path).name}: {one[1]}", stacklevel=4)
            img.data, img.axes = one[0], "YX"
        else:
            img.axes = "YXC"
    return img


#: the optional readers of other formats, tried in this order: (module, class, how to get it).
#: bioio is aicsimageio's successor (same team, same API) and installs beside napari without
#: downgrades; aicsimageio, which many users already have, pins old tifffile/zarr
#: (docs/robustness.md), so it is used when installed, never required
OTHER_READERS = (
    ("bioio", "BioImage", "bioio (`pip install 'napari-b2u[bioio]'` plus the bioio plugin for "
                          "your format, e.g. bioio-czi, bioio-nd2, bioio-lif)"),
    ("aicsimageio", "AICSImage", "aicsimageio (`pip install aicsimageio` with the extra of your "
                                 "format, e.g. aicsimageio[nd2])"),
)


def _read_other(path: Path) -> Image:
    """A format napari-b2u does not read itself, through bioio, else aicsimageio (whichever is
    installed and reads it); the InputError names both and what each said."""
    failed, missing = [], []
    for module, cls, how in OTHER_READERS:
        try:
            reader = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            missing.append(how)
            continue
        try:
            return _read_with(reader, path)
        except Exception as exc:  # noqa: BLE001 - the readers raise many types for bad files
            said = " ".join(str(exc).split())  # one line, whatever the reader wrote
            failed.append(f"{module} could not read it ({type(exc).__name__}: {said})")
    said = "; ".join(failed)
    if not failed:
        raise InputError(
            f"{path.name}: napari-b2u reads TIFF/OME-TIFF, PNG and .npy itself; this format "
            f"needs an optional reader: {' or '.join(missing)} — or convert the file to TIFF")
    more = f"; {' or '.join(missing)} may read it" if missing else ""
    raise InputError(f"{path}: {said}{more}; or convert the file to TIFF")


def _read_with(reader, path: Path) -> Image:
    """Read ``path`` with a bioio ``BioImage`` or aicsimageio ``AICSImage`` class: the data in
    its ``dims.order`` (TCZYX, TCZYXS for RGB), singleton T/C/Z dropped, and the pixel sizes."""
    im = reader(path)
    dims = im.dims
    order = str(getattr(dims, "order", dims)).upper()  # aicsimageio 3 gave the order itself
    data = np.asarray(im.data)
    if len(order) != data.ndim:
        raise ValueError(f"dimensions {order!r} do not match the data's shape {data.shape}")
    keep = [i for i, a in enumerate(order) if a in "YX" or data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = normalize_axes("".join(order[i] for i in keep))
    ps = getattr(im, "physical_pixel_sizes", None)
    pixel_size = {a: float(v) for a in "ZYX" if (v := getattr(ps, a, None)) and a in axes}
    return Image(data, axes, pixel_size, {}, str(path))
