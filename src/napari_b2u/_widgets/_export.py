"""*Export…* in the Denoise panel: the session's model as a bioimage.io package (.zip) that Fiji /
deepImageJ, ilastik and bioimageio.core run. Its test image is a crop of the highlighted (or first
ticked) layer — the raw data, also when that layer was denoised in place — and the pixel size
comes from the layer's scale when its units are lengths. The export runs in a worker thread."""

from __future__ import annotations

from pathlib import Path

from ._layers import layer_array, layer_problem, layout_of
from ._panel import start_worker
from ._text import log, notify, plain_error, sentence

PACKAGE_FILTER = "bioimage.io package (*.zip);;All files (*)"
#: micrometres per unit of a napari layer's axis units
_UM = {"micrometer": 1.0, "micron": 1.0, "nanometer": 1e-3, "millimeter": 1e3,
       "centimeter": 1e4, "meter": 1e6, "angstrom": 1e-4}


def pixel_size(layer, axes: str) -> dict:
    """{"Y": µm, "X": µm} from the layer's scale where its units are lengths (napari >= 0.6 has
    units; a scale in plain pixels is no pixel size)."""
    units = getattr(layer, "units", None)
    scale = list(layer.scale)
    out = {}
    if units is None or len(scale) != len(axes):
        return out
    for a in "YX":
        i = axes.index(a)
        um = _UM.get(str(units[i]).lower())
        if um is not None and float(scale[i]) > 0:
            out[a] = float(scale[i]) * um
    return out


def default_path(layer) -> str:
    src = getattr(getattr(layer, "source", None), "path", None)
    folder = Path(src).parent if src else Path.home()
    return str(folder / f"{layer.name}_b2u.zip".replace("/", "_"))


def _output(model, chosen: str | None) -> str:
    """The output chosen in the panel if a package can hold it (one network pass), else the
    method's single-pass default (the README in the package says which)."""
    from ..errors import InputError
    from ..zoo.export import exportable_output

    try:
        return exportable_output(model, chosen)
    except InputError:
        return exportable_output(model)


def export_model(panel, path: str | None = None):
    """Export the session's model (asks for a file unless ``path`` is given). Returns the
    started worker, or None with a message when something is missing."""
    from ..errors import InputError, MissingExtra
    from ..zoo import require_bioimageio

    model = panel.session.model
    if model is None:
        panel._refuse("No model to export yet: train one, or Load… a model file.")
        return None
    try:
        require_bioimageio()
        _output(model, None)  # a classical filter has nothing to export: say so now
    except (MissingExtra, InputError) as exc:
        panel._refuse(sentence(str(exc)))
        return None
    layer = panel._highlighted()
    problem = layer_problem(layer)
    if problem is not None:
        panel._refuse("Tick the layer whose crop becomes the package's test image (an image "
                      f"like the training data). {problem}")
        return None
    axes = panel.axes_for(layer)
    try:
        layout_of(layer, axes)
    except Exception as exc:  # noqa: BLE001 - worded by the core
        panel._refuse(f"Axes of '{layer.name}': {exc}")
        return None
    if path is None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(panel, "Export model to bioimage.io",
                                              default_path(layer), PACKAGE_FILTER)
        if not path:
            return None
    source = getattr(getattr(layer, "source", None), "path", None)
    sample, px = layer_array(panel.session, layer), pixel_size(layer, axes)
    output = _output(model, panel.output_combo.currentData())

    def job():
        try:  # the file dialog asked before replacing a file
            yield "done", model.export_bioimageio(path, sample, axes, output=output,
                                                  pixel_size=px, overwrite=True,
                                                  inputs=[source])
        except Exception as exc:  # noqa: BLE001 - reported to the user below
            log.debug("export failed", exc_info=True)
            yield "error", exc

    def on_result(packet):
        kind, value = packet
        if kind == "done":
            text = (f"Exported the model's '{output}' output to {value} (a bioimage.io "
                    f"package; test image: a crop of '{layer.name}').")
            panel.status.show_message(text, "ok")
            notify(text)
        else:
            text = plain_error(value, "Exporting the model")
            panel.status.show_message(text, "error")
            notify(text, "error")

    def finished():
        panel._export_worker = None
        try:
            panel.model_bar.export_button.setEnabled(panel.session.model is not None)
        except RuntimeError:  # the panel was deleted meanwhile
            pass

    gen = job()
    worker = start_worker("exporting a model", gen, on_result, finished, lambda: None)
    panel._export_worker = worker
    panel.model_bar.export_button.setEnabled(False)
    panel.status.show_message(f"Exporting the model to {path}…")
    worker.start()
    return worker
