"""What a reader returns (:class:`Image`), the one PNG/JPEG reader, and the check that a path is
a regular file (a FIFO or a device would block a reader): shared by the readers, the FMDD
folders and the lazy sources."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .memory import BUDGET_ENV, memory_budget


@dataclass
class Image:
    data: np.ndarray
    axes: str
    pixel_size: dict = field(default_factory=dict)  # e.g. {"X": 0.1, "Y": 0.1, "Z": 0.5} (µm)
    metadata: dict = field(default_factory=dict)
    path: str | None = None


SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_regular(path, folder_ok: bool = False, what: str = "an image file") -> None:
    """Refuse, before it is opened, what is not a regular file (or a folder where ``folder_ok``):
    reading a FIFO blocks until someone writes to it, a device may never end. ``what``: what
    the path should be, for the message."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a FIFO is a FIFO
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
        return
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a folder; point to {what}")
    kind = next((name for test, name in SPECIAL if test(mode)), "not a regular file")
    raise InputError(f"{path} is {kind}, not {what}; give the path of a file on disk")


#: PIL's limit is a global: it is lifted, one reader at a time, only for images that fit memory
_PIL_LIMIT_LOCK = threading.Lock()
#: bytes per pixel of PIL's modes with more than one byte per band
_MODE_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


@contextlib.contextmanager
def _no_pil_limit():
    from PIL import Image as PILImage

    with _PIL_LIMIT_LOCK:
        limit, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = limit


def _check_fits(path, im) -> None:
    """A decoded image (and the float copies its denoising makes) must fit the memory budget:
    PIL's decompression-bomb limit is for files from strangers; these are the user's own."""
    (w, h), bands = im.size, len(im.getbands())
    need = w * h * bands * (_MODE_BYTES.get(im.mode, 1) + 8)  # raw + two float32 copies
    if need > memory_budget():
        raise InputError(
            f"{Path(path)} is a {w}x{h} {im.format or 'image'} ({w * h / 1e6:.0f} megapixels, "
            f"{need / 2**30:.1f} GiB in memory while it is processed), more than the memory "
            f"budget ({memory_budget() / 2**30:.1f} GiB; {BUDGET_ENV} sets it); a PNG/JPEG "
            "is read whole: convert it to a tiled TIFF, which is read a block at a time, or "
            "crop it")


def read_png(path, grey: bool = False) -> np.ndarray:
    """A PNG/JPEG as an array: (Y, X) for grey and 16-bit images, (Y, X, 3|4) for colour
    (``grey``: colour converted to 8-bit grey, as FMDD's frames are). Images above PIL's
    decompression-bomb limit are read when they fit the memory budget."""
    from PIL import Image as PILImage

    check_regular(path)

    def read():
        with PILImage.open(path) as im:
            _check_fits(path, im)
            if grey and im.mode not in ("L", "I;16", "I", "F"):
                im = im.convert("L")
            return np.asarray(im)

    try:
        try:
            with warnings.catch_warnings():  # its size is judged by _check_fits
                warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
                return read()
        except PILImage.DecompressionBombError:
            with _no_pil_limit():
                return read()
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's "broken PNG file" is a SyntaxError
        raise InputError(f"{Path(path)} could not be read as an image: {exc}") from exc
