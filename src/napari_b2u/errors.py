"""The library's exceptions: each message names the problem and what to do about it.

A leaf module (imports nothing of the package), so every layer can raise and catch them.
"""

from __future__ import annotations


class B2UError(Exception):
    """Base of napari-b2u's own errors (the CLI prints them without a traceback)."""


class InputError(B2UError, ValueError):
    """Input the library cannot use; the message names the problem and what to do."""


class RangeMismatch(InputError):
    """The image's values lie far outside the range the model was trained on: with the model's
    stored normalization the network would return a near-constant image. ``normalize="image"``
    (CLI ``--normalize image``) scales the image on its own statistics instead. ``channel``:
    the first channel found out of range; ``outside``: the share of its pixels more than one
    training range away from it; ``spread``: its 0.1–99.9 percentile span in training ranges;
    ``image`` and ``training``: (low, high) of the image and of the training range, raw units."""

    def __init__(self, message: str, channel: int = 0, outside: float = 0.0,
                 spread: float = 1.0, image=(0.0, 0.0), training=(0.0, 1.0)):
        super().__init__(message)
        self.channel, self.outside, self.spread = channel, outside, spread
        self.image, self.training = tuple(image), tuple(training)


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
