"""The BioImage Model Zoo wing: export a model as a bioimage.io package (:mod:`.export`, its
texts in :mod:`.text`), open one that napari-b2u exported (:func:`read_package`: a model file
dict; ``api.load`` makes the Denoiser), and test one with bioimageio.core. Nothing here imports
the Denoiser: the denoising wing calls the export, the export never calls back.
"""

from .common import EXTRA, check_package, is_package, require_bioimageio
from .package import read_package

__all__ = ["EXTRA", "is_package", "read_package", "check_package", "require_bioimageio"]
