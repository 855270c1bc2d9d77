"""napari-b2u: self-supervised denoising of fluorescence microscopy with Blind2Unblind.

The core (data, masking, losses, models, methods, engine, inference, io) is GUI-free;
``napari_b2u.api`` is the headless entry point and ``napari_b2u._widgets`` the napari layer.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
