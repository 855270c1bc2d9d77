"""napari-b2u: self-supervised denoising of fluorescence microscopy with Blind2Unblind.

The core (data, masking, losses, models, methods, engine, inference, io) is GUI-free;
``napari_b2u.api`` is the headless entry point and ``napari_b2u._widgets`` the napari layer.
"""

try:  # written by setuptools-scm when the package is built or installed (from the git tag)
    from ._version import __version__
except ImportError:  # a source tree that was never built: ask the installed metadata
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("napari-b2u")
    except PackageNotFoundError:
        __version__ = "0+unknown"

__all__ = ["__version__"]
