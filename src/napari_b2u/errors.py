"""The library's exceptions: each message names the problem and what to do about it.

A leaf module (imports nothing of the package), so every layer can raise and catch them.
"""

from __future__ import annotations


class B2UError(Exception):
    """Base of napari-b2u's own errors (the CLI prints them without a traceback)."""


class InputError(B2UError, ValueError):
    """Input the library cannot use; the message names the problem and what to do."""


class OutputError(B2UError, OSError):
    """A file could not be written (disk full, no permission, ...). Nothing partial is left
    behind; the message says what failed and, where something was saved elsewhere, where."""


class TrainingError(B2UError, RuntimeError):
    """Training produced no usable model (e.g. it stopped before its first step)."""


#: how to install the optional packages of big-data denoising (dask, distributed, zarr, ome-zarr)
DISTRIBUTED_EXTRA = 'pip install "napari-b2u[distributed]"'


class MissingExtra(B2UError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class Cancelled(B2UError):
    """A run was cancelled by its user; finished work is kept (a rerun resumes)."""
