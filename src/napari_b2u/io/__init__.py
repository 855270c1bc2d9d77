"""The reading wing: image files and lazy stacks in, OME-TIFF out, files written safely.

- :mod:`.readers` — :func:`read_image`: any file (TIFF, PNG, .npy, FMDD folder, bioio formats)
- :mod:`.tiff` — TIFF metadata (axes, pixel sizes in µm) and the OME-TIFF writer
- :mod:`.image` — the :class:`Image` readers return, the PNG reader, regular-file checks
- :mod:`.fmdd` — FMDD-style folders (``<set>/raw/<view>/*.png``)
- :mod:`.sources` — lazy inputs (zarr / OME-Zarr, big TIFF, dask): one ``Source`` read a few
  chunks at a time, and the ``FrameReader`` of (N, C, Y, X) frames over it
- :mod:`.memory` — the memory budget that decides when the lazy paths take over
- :mod:`.files` — atomic writes, outputs never over inputs

Nothing here imports torch, Qt or napari.
"""

from .image import Image
from .readers import read_image
from .tiff import OME_DTYPES, check_tiff_dtype, tiff_dtype_for, write_tiff

__all__ = ["Image", "read_image", "write_tiff", "check_tiff_dtype", "tiff_dtype_for",
           "OME_DTYPES"]
