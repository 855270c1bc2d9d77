"""TIFF / OME-TIFF: axes and physical pixel sizes read from the file's metadata (converted to
µm), and the OME-TIFF writer that keeps them and records which model made the output."""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..data import SAMPLE_AXES, single_channel_of_rgb
from ..errors import InputError
from .files import atomic_write
from .image import Image
from .memory import BUDGET_ENV, memory_budget


def normalize_axes(axes: str) -> str:
    """tifffile/bioio axes -> ours: 'S' (RGB samples) is a channel axis; any other
    letter we do not know becomes a free sample (batch) letter. '' when the file's axes cannot
    be named without guessing (e.g. tifffile's 'QQQYX' for a plain 5D array): the caller then
    asks for an axes string."""
    axes = axes.upper()
    if sum(a not in "TZCYXS" for a in axes) > 1:
        return ""  # several dimensions the file does not name: ask rather than guess
    out: list[str] = []
    for a in axes:
        if a == "S" and "C" not in axes:
            a = "C"
        elif not (a in "TZCYX" or (a in SAMPLE_AXES and a != "S")):
            a = "Q"
        if a in out:  # a repeated or unknown letter: the next free sample letter
            free = [b for b in "QIS" if b not in out and b not in axes]
            if not free:
                return ""
            a = free[0]
        out.append(a)
    if "Y" not in out or "X" not in out:
        return ""
    return "".join(out)


#: length units -> micrometres (pixel sizes are kept in µm, OME's default unit)
_TO_UM = {"pm": 1e-6, "Å": 1e-4, "ångström": 1e-4, "angstrom": 1e-4, "nm": 1e-3,
          "nanometer": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0,
          "micrometer": 1.0, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4,
          "m": 1e6, "meter": 1e6}


def to_um(value, unit: str | None, where: str) -> float | None:
    """``value`` in ``unit`` as µm; None (with a warning) for a unit that is not a length."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    u = (unit or "µm").strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    factor = _TO_UM.get(u, _TO_UM.get(u.lower()))
    if factor is None:
        warnings.warn(f"{where}: pixel size unit {unit!r} is not a length unit I know; the "
                      "pixel size is not kept", stacklevel=3)
        return None
    if not (math.isfinite(v) and v > 0):
        warnings.warn(f"{where}: pixel size {value!r} is not a positive number; it is not kept",
                      stacklevel=3)
        return None
    return v * factor


def _ome_pixel_size(xml: str) -> dict:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            out = {}
            for ax in "XYZ":
                v = el.get(f"PhysicalSize{ax}")
                if v is not None:
                    um = to_um(v, el.get(f"PhysicalSize{ax}Unit"), "OME metadata")
                    if um is not None:
                        out[ax] = um
            return out
    return {}


def tiff_metadata(tif, path) -> tuple[dict, dict]:
    """The pixel sizes (µm, from OME or ImageJ metadata) and the JSON description of an open
    ``tifffile.TiffFile`` (read without touching the pixels)."""
    pixel_size, meta = {}, {}
    if tif.ome_metadata:
        pixel_size = _ome_pixel_size(tif.ome_metadata)
    elif tif.imagej_metadata:
        ij = tif.imagej_metadata
        unit = ij.get("unit", "micron")  # ImageJ's default; "pixel": no size
        if unit not in ("pixel", "pixels", ""):
            if "spacing" in ij:
                z = to_um(ij["spacing"], unit, f"{path} (ImageJ)")
                if z is not None:
                    pixel_size["Z"] = z
            page = tif.pages[0]
            rx, ry = page.tags.get("XResolution"), page.tags.get("YResolution")
            for ax, res in (("X", rx), ("Y", ry or rx)):
                if res is not None and res.value[0]:
                    v = to_um(res.value[1] / res.value[0], unit, f"{path} (ImageJ)")
                    if v is not None:
                        pixel_size[ax] = v
    desc = tif.pages[0].description if tif.pages else ""
    if desc.startswith("{"):
        try:
            meta = json.loads(desc)
        except ValueError:
            meta = {}
    return pixel_size, meta


def read_tiff(path) -> Image:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_declared_size(path, series.shape, series.dtype)
            data = series.asarray()
            axes = series.axes
            pixel_size, meta = tiff_metadata(tif, path)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - damaged files raise anything (0 width: ZeroDivision)
        raise InputError(
            f"{path} could not be read as a TIFF ({type(exc).__name__}: {exc}); the file may be "
            "truncated or not a TIFF"
        ) from exc
    img = Image(data, normalize_axes(axes), pixel_size, meta, str(path))
    if img.axes.endswith("YXC") and data.shape[-1] in (3, 4) and series.axes.endswith("S"):
        one = single_channel_of_rgb(data)  # an RGB TIFF that holds one channel
        if one is not None:
            warnings.warn(f"{Path(path).name}: {one[1]}", stacklevel=3)
            img.data, img.axes = one[0], img.axes[:-1]
    return img


def _check_declared_size(path, shape, dtype) -> None:
    """A TIFF read whole must fit the memory budget: a damaged header can declare 2^31 pixels
    a row (numpy's "Unable to allocate 128 GiB" came after)."""
    need = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    if need > memory_budget():
        raise InputError(
            f"{path} declares a {'x'.join(map(str, shape))} {np.dtype(dtype).name} image "
            f"({need / 2**30:.1f} GiB), more than the memory budget ({memory_budget() / 2**30:.1f}"
            f" GiB; {BUDGET_ENV} sets it) for reading it whole; if the file is that large, "
            "train or denoise it from the command line (read a block at a time), else its "
            "header is damaged")


def tiff_axes(axes: str) -> str:
    """The order :func:`write_tiff` writes ``axes`` in. OME-TIFF needs the image plane last and
    stores a sample axis (S, I, Q) as a 'modulo' of a T, Z or C axis: the given order when it
    complies, else Y and X moved last, else T, Z, C each followed by one sample axis."""
    ax = axes.upper()
    if _ome_takes(ax):
        return ax
    rest = [a for a in ax if a not in "YX"]
    if _ome_takes("".join(rest) + "YX"):  # e.g. MATLAB's YXT -> TYX
        return "".join(rest) + "YX"
    free = [a for a in rest if a in "SIQ"]
    out = ""
    for a in "TZC":
        if a in rest:
            out += a + (free.pop(0) if free else "")
    return "".join(free) + out + "YX"  # any left take a T, Z or C the stack lacks


def _ome_letters(axes: str) -> str:
    """Our axes as tifffile's OME letters: the first sample axis is 'other' (Q), further ones
    angle (A) and phase (P), as each letter may appear once (the note records ours)."""
    free = iter("QAP")
    return "".join(next(free) if a in "SIQ" else a for a in axes)


def _ome_takes(axes: str) -> bool:
    """Whether tifffile writes ``axes`` as OME-TIFF (its own check, on a 2-pixel shape)."""
    import tifffile

    if not axes.endswith("YX"):  # tifffile also takes YXC, as RGB samples: not for our data
        return False
    shape = (2,) * len(axes)
    try:
        tifffile.OmeXml().addimage(np.uint8, shape, (2 ** (len(axes) - 2), 1, 1, 2, 2, 1),
                                   axes=_ome_letters(axes))
    except (tifffile.OmeXmlError, ValueError):
        return False
    return True


def write_tiff(path, data: np.ndarray, axes: str, pixel_size: dict | None = None,
               note: dict | None = None, overwrite: bool = False) -> Path:
    """Write OME-TIFF with axes and physical pixel sizes; ``note`` (e.g. which model made the
    image) goes into the OME description with the axes written. Axes OME-TIFF cannot take in
    their order (e.g. 'YXT') are written transposed (see :func:`tiff_axes`), with a warning.
    Refuses to overwrite unless asked; writes atomically."""
    import tifffile

    path = Path(path)
    check_tiff_dtype(data.dtype)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another output name (or pass overwrite)")
    axes = axes.upper()
    out_axes = tiff_axes(axes)
    note = {**(note or {}), "axes": out_axes}
    if out_axes != axes:
        data = np.transpose(data, [axes.index(a) for a in out_axes])
        note["input_axes"] = axes
        warnings.warn(f"{path.name}: OME-TIFF needs the image plane last; axes {axes} are "
                      f"written as {out_axes} (transposed)", stacklevel=2)
    meta: dict = {"axes": _ome_letters(out_axes)}
    for ax, key in (("X", "PhysicalSizeX"), ("Y", "PhysicalSizeY"), ("Z", "PhysicalSizeZ")):
        if pixel_size and pixel_size.get(ax):
            meta[key] = float(pixel_size[ax])
            meta[key + "Unit"] = "µm"  # explicit, though it is OME's default
    meta["Description"] = json.dumps(note, default=str)
    with atomic_write(path, "the image") as tmp:
        tifffile.imwrite(tmp, data, ome=True, metadata=meta, photometric="minisblack")
    return path


#: pixel types OME-TIFF can hold (no float16, no 64-bit integers)
OME_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def check_tiff_dtype(dtype) -> np.dtype:
    """Refuse, before any work, a pixel type OME-TIFF cannot store."""
    dt = np.dtype(dtype)
    if dt.name not in OME_DTYPES and dt != np.bool_:
        raise InputError(f"OME-TIFF cannot store {dt.name} pixels; choose one of "
                         f"{', '.join(OME_DTYPES)} (e.g. --dtype float32)")
    return dt


def tiff_dtype_for(dtype) -> np.dtype:
    """The input's dtype when OME-TIFF can store it, else the float that holds it."""
    dt = np.dtype(dtype)
    if dt.name in OME_DTYPES:
        return dt
    return np.dtype(np.float64 if dt.itemsize >= 8 else np.float32)
