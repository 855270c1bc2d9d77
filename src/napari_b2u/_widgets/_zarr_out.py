"""Denoise "to OME-Zarr" from the Denoise panel: for layers whose data is lazy (dask, zarr, a
multiscale pyramid as napari-ome-zarr opens it) and larger than the memory budget, which cannot
be denoised in place or into a layer in memory. The folder chooser, the worker generator
(:func:`~napari_b2u.denoise.to_zarr.denoise_to_zarr_iter`, block by block, cancellable,
resumable) and the result opened as a new lazy multiscale layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from ._denoise_job import relay
from ._forms import hbox
from ._session import META_KEY, unwrap

SUFFIX = "_denoised.ome.zarr"


def level0(data):
    """The full-resolution array of a multiscale layer's data, else the data itself."""
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        return data[0]
    return data


def is_big(layer) -> bool:
    """Lazy data (not a numpy array in memory) too large to denoise in memory."""
    from ..io.memory import in_memory_bytes, memory_budget

    layer = unwrap(layer)
    data = level0(layer.data)
    if isinstance(data, np.ndarray) and not getattr(layer, "multiscale", False):
        return False
    return getattr(layer, "multiscale", False) or in_memory_bytes(
        data.shape, data.dtype) > memory_budget()


def source_folder(layer) -> Path | None:
    """The folder of the file the layer was opened from, if napari knows it."""
    path = getattr(getattr(unwrap(layer), "source", None), "path", None)
    return Path(path).parent if path else None


def output_path(folder, name: str) -> Path:
    """Where a layer named ``name`` is written in ``folder``."""
    return Path(folder) / f"{name}{SUFFIX}"


def cannot_write(out) -> str | None:
    """Why the OME-Zarr output ``out`` cannot be written (a read-only folder, no permission),
    in the core's words, before any work; None if it can."""
    from ..errors import OutputError
    from ..io.files import check_writable

    try:
        check_writable(out, "OME-Zarr output")
    except OutputError as exc:
        return f"Save to: {str(exc)[:1].upper()}{str(exc)[1:]} (Browse…)."
    return None


def reuse_note(blocks: int, skipped: int, refreshed) -> str:
    """What a run into an OME-Zarr folder written before reused: ``skipped`` blocks an earlier
    run had done (``blocks`` denoised now), output layers ``refreshed`` rather than added again;
    '' when none."""
    notes = []
    if skipped:
        total = skipped + blocks
        notes.append(f"{skipped} of {total} blocks already done by an earlier run into the "
                     "same folder were skipped" if blocks else
                     f"all {total} blocks were already done by an earlier run into the same "
                     "folder: nothing was denoised again")
    if refreshed:
        notes.append("the layer " + ", ".join(f"'{n}'" for n in refreshed)
                     + " was refreshed, not added again")
    return f" ({'; '.join(notes)})" if notes else ""


class ZarrTarget(QWidget):
    """The folder the OME-Zarr outputs go to (each ``<layer>_denoised.ome.zarr``)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("folder for the OME-Zarr output(s)")
        self.edit.setToolTip("Each ticked layer is written to <folder>/<layer>_denoised.ome.zarr "
                             "block by block (any size); denoising the same layer into the same "
                             "folder again resumes an interrupted run")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._choose)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setVisible(False)  # no empty line under the folder: shown with its text
        lay.addWidget(hbox(self.edit, self.browse))
        lay.addWidget(self.note)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the OME-Zarr output(s)",
                                                  self.edit.text() or str(Path.home()))
        if folder:
            self.edit.setText(folder)

    def folder(self) -> str:
        return self.edit.text().strip()

    def propose(self, layers, names) -> None:
        """A folder when none is set: the first layer's source folder, else the home folder;
        and the output names (``names``: the layers' names outputs are named after)."""
        if not self.folder() and layers:
            self.edit.setText(str(source_folder(layers[0]) or Path.home()))
        names = ", ".join(output_path(".", name).name for name in names)
        self.note.setText(f"writes {names}" if names else "")
        self.note.setVisible(bool(names))


def zarr_job(cancel, model, items, options: dict):
    """Generator run by the worker thread: ``items`` are (data, axes, output path) per layer;
    yields :class:`DenoiseMessage` s (progress in blocks; the result a ZarrResult). A cancel
    stops within a tile; the finished chunks stay (the same run again resumes)."""
    from ..denoise.to_zarr import denoise_to_zarr_iter

    for k, (data, axes, out) in enumerate(items):
        gen = denoise_to_zarr_iter(model, level0(data), out, axes=axes, **options)
        if (yield from relay(cancel, k, gen, "denoising to OME-Zarr")):
            return


def open_result(viewer, layer, result, state: dict) -> bool:
    """Show a finished OME-Zarr output as a lazy multiscale layer (the input layer's scale,
    placement and contrast when the axes did not change): the layer that already shows this
    output (a run again into the same folder) is refreshed, else a new one is added. Returns
    True when an existing layer was refreshed."""
    from napari.layers import Layer

    levels = result.open()
    path = str(result.path)
    for other in unwrap(viewer).layers:
        if (getattr(other, "multiscale", False) and
                other.metadata.get(META_KEY, {}).get("path") == path):
            other.data = levels
            other.metadata = {**other.metadata, **{META_KEY: state["metadata"][META_KEY]}}
            return True
    state = dict(state)
    if tuple(levels[0].shape) != tuple(level0(unwrap(layer).data).shape):
        state = {k: state[k] for k in ("name", "metadata", "colormap", "blending")
                 if k in state}  # axes were reordered for OME-Zarr: the placement does not fit
        state["axis_labels"] = tuple(a.lower() for a in result.axes)
    state["multiscale"] = True
    viewer.add_layer(Layer.create(levels, state, "image"))
    return False
