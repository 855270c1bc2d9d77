"""The napari plugin layer: Train and Denoise dock widgets, sample data, a model reader.

Only this package (and ``napari_b2u._widget``) imports Qt or napari; the core stays GUI-free.
Submodules are imported lazily, so the hooks that need no Qt stay cheap.
"""

__all__ = ["TrainWidget", "DenoiseWidget"]


def __getattr__(name):
    if name == "TrainWidget":
        from ._train import TrainWidget

        return TrainWidget
    if name == "DenoiseWidget":
        from ._denoise import DenoiseWidget

        return DenoiseWidget
    raise AttributeError(name)
