"""'Model: …' with Load… / Save… (and, in the Denoise panel, Export…) buttons, bound to the
viewer's session, and loading a model file into a session (also used by the model file reader)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QSizePolicy, QWidget
from superqt import QElidingLabel

from ._forms import button
from ._session import session_for
from ._text import MODEL_FILTER, MODEL_SUFFIX, log, notify, plain_error, sentence

#: Load… also opens the bioimage.io packages napari-b2u exports (api.load tells them apart)
LOAD_FILTER = (f"model file (*{MODEL_SUFFIX} *.zip);;model file (*{MODEL_SUFFIX});;"
               "bioimage.io package exported by napari-b2u (*.zip);;All files (*)")


class ModelBar(QWidget):
    """'Model: …' with Load… / Save… buttons, bound to the viewer's session; ``export``: a
    callable that adds an Export… button (bioimage.io). What Load… and Save… did, or why they
    could not, is emitted as ``said(text, kind)`` for the panel's status line (and notified)."""

    said = Signal(str, str)

    def __init__(self, viewer, allow_load: bool = True, export=None, parent=None):
        super().__init__(parent)
        self.session = session_for(viewer)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QElidingLabel()
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.label, 1)
        self.load_button = None
        if allow_load:
            self.load_button = button("Load…", self.load_model,
                                      f"Load a model file ({MODEL_SUFFIX}) saved earlier")
            lay.addWidget(self.load_button)
        self.save_button = button("Save…", self.save_model,
                                  f"Save the current model ({MODEL_SUFFIX})")
        lay.addWidget(self.save_button)
        self.export_button = None
        if export is not None:  # the Denoise panel: it knows the layer for the test image
            self.export_button = button(
                "Export…", lambda: export(),
                "Export the model as a bioimage.io package (.zip) for Fiji/deepImageJ, "
                "ilastik, bioimageio.core, …; its test image is a crop of the highlighted "
                "layer (needs napari-b2u[bioimageio])")
            lay.addWidget(self.export_button)
        self.session.model_changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        s = self.session
        try:
            if s.model is None:
                self.label.setText(f"Model: none yet — train one or load a {MODEL_SUFFIX} file")
                self.label.setToolTip("")
            else:
                self.label.setText(f"Model: {s.model_source}")
                self.label.setToolTip(f"{s.model_source}\n{s.model!r}")
            self.save_button.setEnabled(s.model is not None)
            if self.export_button is not None:
                self.export_button.setEnabled(s.model is not None)
        except RuntimeError:  # the Qt side was deleted with its panel
            pass

    def _default_path(self) -> str:
        layer = self.session.trained_layer()
        folder = Path.home()
        name = f"model{MODEL_SUFFIX}"
        if layer is not None:
            src = getattr(getattr(layer, "source", None), "path", None)
            if src:
                folder = Path(src).parent
            name = f"{self.session.plain_name(layer)}{MODEL_SUFFIX}".replace("/", "_")
        return str(folder / name)

    def save_model(self, path: str | None = None):
        """Save the current model (asks for a file unless ``path`` is given); returns the path
        written, or None."""
        model = self.session.model
        if model is None:
            self._say("There is no model to save yet: train one first.", "warning")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", self._default_path(),
                                                  MODEL_FILTER)
            if not path:
                return None
        try:
            written = model.save(path)
        except Exception as exc:  # noqa: BLE001 - the core's OutputError says what failed
            log.debug("saving %s failed", path, exc_info=True)
            self._say(sentence(plain_error(exc, "Saving the model")) + " Nothing was saved: "
                      "choose another folder (Save…).", "error")
            return None
        self._say(f"Model saved to {written}.", "ok")
        return written

    def _say(self, text: str, kind: str) -> None:
        self.said.emit(text, kind)
        notify(text, "info" if kind == "ok" else kind)

    def load_model(self, path: str | None = None):
        """Load a model file into the session (asks for a file unless ``path`` is given)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load model", str(Path.home()),
                                                  LOAD_FILTER)
            if not path:
                return None
        return load_into_session(self.session, path, self._say)


def load_into_session(session, path, say=None):
    """Load the model file at ``path`` as the session's model; says how it went either way
    (``say(text, kind)``, else a notification)."""
    from .. import api

    say = say or (lambda text, kind: notify(text, "info" if kind == "ok" else kind))
    try:
        model = api.load(path)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none crashes napari
        log.debug("loading %s failed", path, exc_info=True)
        say(plain_error(exc, f"Loading {Path(path).name}"), "error")
        return None
    steps = model.info.get("steps")
    session.set_model(model, f"{Path(path).name}" + (f" ({steps} steps)" if steps else ""))
    say(f"Loaded model {Path(path).name}: {model.method.title}, "
        f"{model.n_channels} channel(s).", "ok")
    return model
