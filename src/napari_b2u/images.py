"""What a reader returns (:class:`Image`) and the one PNG/JPEG reader: a leaf module shared by
:mod:`napari_b2u.io` and :mod:`napari_b2u.fmdd` (neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError


@dataclass
class Image:
    data: np.ndarray
    axes: str
    pixel_size: dict = field(default_factory=dict)  # e.g. {"X": 0.1, "Y": 0.1, "Z": 0.5} (µm)
    metadata: dict = field(default_factory=dict)
    path: str | None = None


def read_png(path, grey: bool = False) -> np.ndarray:
    """A PNG/JPEG as an array: (Y, X) for grey and 16-bit images, (Y, X, 3|4) for colour
    (``grey``: colour converted to 8-bit grey, as FMDD's frames are)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            if grey and im.mode not in ("L", "I;16", "I", "F"):
                im = im.convert("L")
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"{Path(path)} could not be read as an image: {exc}") from exc
