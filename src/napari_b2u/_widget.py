"""napari widgets of napari-b2u (implemented in :mod:`napari_b2u._widgets`)."""

from ._widgets._denoise import DenoiseWidget, restore_original
from ._widgets._train import TrainWidget

__all__ = ["TrainWidget", "DenoiseWidget", "restore_original"]
