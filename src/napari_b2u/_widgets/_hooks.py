"""npe2 hooks that need no Qt: sample data and the reader of model files (napari.yaml names
their pattern)."""

from __future__ import annotations

from importlib.resources import files

from ._names import DENOISE_WIDGET, MODEL_SUFFIX

NUCLEI_FILE = "dsb2018_nuclei.tif"


def fmdd_sample():
    """The core's FMDD-like noisy stack (20 frames, TYX) and its clean image. The clean
    reference comes first, so that the noisy stack is the layer on top and the selected one
    (the one the Train panel offers)."""
    from ..sample_data import napari_sample

    layers = []
    for data, kwargs, kind in napari_sample():
        kwargs = dict(kwargs)
        kwargs.setdefault("axis_labels", ("t", "y", "x")[-data.ndim:])
        layers.append((data, kwargs, kind))
    reference = [item for item in layers if item[0].ndim == 2]
    return reference + [item for item in layers if item[0].ndim != 2]


def nuclei_sample():
    """A real, noisy widefield image of nuclei (DSB2018 / BBBC038, CC0; see
    sample_files/ATTRIBUTION.md)."""
    import tifffile

    path = files(__package__.rsplit(".", 1)[0]) / "sample_files" / NUCLEI_FILE
    with path.open("rb") as fh:
        data = tifffile.imread(fh)
    meta = {"axes": "YX", "source": "DSB2018 (BBBC038v1), CC0; Caicedo et al. 2019"}
    return [(data, {"name": "DSB2018 nuclei", "metadata": meta, "axis_labels": ("y", "x"),
                    "contrast_limits": (0, float(data.max()))}, "image")]


def get_model_reader(path):
    """npe2 reader: a model file becomes the viewer's model (no layer is added) and
    the Denoise panel opens."""
    if isinstance(path, list) or not str(path).lower().endswith(MODEL_SUFFIX):
        return None
    return read_model


def read_model(path):
    import napari

    from ._model_bar import load_into_session
    from ._session import session_for

    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError("a model file can only be opened in a napari viewer")
    if load_into_session(session_for(viewer), str(path)) is not None:
        from ._denoise import DenoiseWidget
        from ._panel import open_panel

        open_panel(viewer, DENOISE_WIDGET, DenoiseWidget)
    return [(None,)]
