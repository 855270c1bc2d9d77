"""Reading an image file, whatever it is: TIFF/OME-TIFF (tifffile), PNG, .npy, FMDD folders,
and — when the optional ``bioio`` extra is installed — proprietary microscope formats. A file is
recognized by its content, not its name. Readers return an :class:`~.image.Image` with the
array, its axes string and the physical pixel sizes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..data import default_axes, single_channel_of_rgb
from ..errors import InputError
from .fmdd import is_fmdd_folder, read_fmdd_folder
from .image import Image, check_regular, read_png
from .tiff import read_tiff


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
        return _read_bioio(path)
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


def _read_bioio(path: Path) -> Image:
    try:
        from bioio import BioImage
    except ImportError:
        raise InputError(
            f"{path.name}: this format needs the optional bioio reader; install it with "
            "`pip install 'napari-b2u[bioio]'` plus the bioio plugin for your format "
            "(e.g. bioio-czi, bioio-nd2, bioio-lif), or convert the file to TIFF"
        ) from None
    try:
        im = BioImage(path)
        data = np.asarray(im.data)  # TCZYX
        ps = im.physical_pixel_sizes
    except Exception as exc:  # noqa: BLE001 - bioio raises many types for unreadable files
        raise InputError(f"{path} could not be read by bioio: {exc}") from exc
    axes = "TCZYX"
    # drop singleton T/C/Z for a compact layout
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    pixel_size = {a: float(v) for a, v in zip("ZYX", (ps.Z, ps.Y, ps.X)) if v}
    return Image(data, axes, pixel_size, {}, str(path))
