"""Qt building blocks shared by the Train and Denoise widgets: layer pickers that follow the
viewer, the device choice, the model bar (load / save), a status line, and error wording."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)
from superqt import QCollapsible, QElidingLabel

from ._layers import candidate_layers, layer_problem
from ._session import session_for

log = logging.getLogger("napari_b2u")

MODEL_FILTER = "napari-b2u model (*.b2u);;All files (*)"


# ---- words ------------------------------------------------------------------------------------
def plain_error(exc: BaseException, doing: str) -> str:
    """A message a biologist can act on, for an exception raised while ``doing`` something."""
    from ..data import InputError

    if isinstance(exc, InputError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if isinstance(exc, MemoryError) or "out of memory" in low:
        return (f"{doing} ran out of memory ({text}). Lower the batch or patch size, use a "
                "smaller tile size, or choose the CPU as device.")
    if isinstance(exc, ValueError):
        return f"{doing} failed: {text}"
    return (f"{doing} failed unexpectedly ({type(exc).__name__}: {text}). The details are in "
            "the terminal / log; please report them.")


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def notify(message: str, kind: str = "info") -> None:
    """A napari notification (``kind``: info, warning, error)."""
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


class StatusLabel(QLabel):
    """One or two lines saying what happens, or what is wrong and what to do."""

    COLORS = {"info": None, "ok": "#5fbf5f", "error": "#ff7070"}

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.kind = "info"

    def show_message(self, text: str, kind: str = "info") -> None:
        self.kind = kind
        color = self.COLORS.get(kind)
        self.setStyleSheet(f"color: {color};" if color else "")
        self.setText(text)


def form_section(title: str, parent=None) -> tuple[QCollapsible, QFormLayout]:
    """A collapsed section (superqt QCollapsible) holding a form."""
    box = QCollapsible(title, parent)
    inner = QWidget()
    form = QFormLayout(inner)
    form.setContentsMargins(0, 0, 0, 0)
    box.addWidget(inner)
    return box, form


def button(text: str, slot, tip: str = "") -> QPushButton:
    b = QPushButton(text)
    b.clicked.connect(lambda *_: slot())
    if tip:
        b.setToolTip(tip)
    return b


def hbox(*widgets) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        lay.addWidget(x)
    return w


# ---- panels and their workers ---------------------------------------------------------------
class Panel(QWidget):
    """Base of the dock widgets: a status line, refusals, and shutting the worker down when
    napari takes the panel away (closing a dock widget removes its parent)."""

    status: StatusLabel
    settings: QWidget  # the form, disabled while busy
    advanced: QCollapsible
    progress: QProgressBar
    _go: QPushButton  # Start / Denoise
    _halt: QPushButton  # Stop / Cancel

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)

    def _settings_form(self, layout) -> QFormLayout:
        self.settings = QWidget()
        form = QFormLayout(self.settings)
        form.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.settings)
        return form

    def _action_row(self, layout, go: tuple, halt: tuple) -> tuple[QPushButton, QPushButton]:
        """The Start/Stop (Denoise/Cancel) buttons, then a progress bar. ``go`` and ``halt``
        are (text, slot) and (text, slot, tooltip)."""
        self._go = button(*go)
        self._halt = button(*halt)
        self._halt.setEnabled(False)
        layout.addWidget(hbox(self._go, self._halt))
        self._progress_bar(layout)
        return self._go, self._halt

    def _progress_bar(self, layout) -> None:
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)

    def _set_busy(self, busy: bool) -> None:
        self._go.setEnabled(not busy)
        self._halt.setEnabled(busy)
        self.settings.setEnabled(not busy)
        self.advanced.setEnabled(not busy)

    def shutdown(self) -> None:
        """Stop the running worker, if any (subclasses)."""

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.shutdown()
        return super().event(ev)

    def _refuse(self, message: str) -> None:
        self.status.show_message(message, "error")
        notify(message, "warning")


def start_worker(title: str, gen, on_yielded, on_finished, stop):
    """Run the generator ``gen`` in a napari thread worker (not started yet: connect more
    signals, then ``.start()``). ``title`` names the task in napari's close dialog; ``stop``
    asks the job to end and is called, with closing ``gen``, when napari aborts the worker
    (the GUI keeps ``gen`` for that: the worker only stops at a yield and drops it)."""
    from napari.qt.threading import create_worker

    def job():
        return (yield from gen)

    job.__qualname__ = f"napari-b2u {title}"
    worker = create_worker(job, _start_thread=False)
    worker.yielded.connect(on_yielded)
    worker.aborted.connect(partial(close_job, stop, gen))
    worker.finished.connect(on_finished)
    return worker


def close_job(stop, gen) -> None:
    """Connected to a worker's ``aborted`` signal (napari quits workers when its window
    closes): ask the job to stop and close its generator, which closes the core's iterator
    (a trainer keeps its model; both free device memory). A plain function, so that it runs
    even when the panel is already gone."""
    stop()
    try:
        gen.close()
    except ValueError:  # still executing: the stop request ends it after the current step
        pass


# ---- layers ---------------------------------------------------------------------------------
class _LayerWatcher:
    """Calls ``self._rebuild()`` when layers are added, removed, moved or renamed."""

    def _watch(self, viewer) -> None:
        self.viewer = viewer
        ev = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered", "renamed"):
            getattr(ev, name).connect(self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        try:
            self._rebuild()
        except RuntimeError:  # the Qt side was deleted (viewer closing)
            pass


class LayerCombo(QComboBox, _LayerWatcher):
    """Picks one layer of the viewer; lists unusable ones too, so that choosing one can say why.
    ``none_text`` adds a first 'no layer' entry."""

    layer_changed = Signal()

    def __init__(self, viewer, none_text: str | None = None, parent=None):
        super().__init__(parent)
        self._none_text = none_text
        self._layers: list = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._watch(viewer)
        self._rebuild()
        self.currentIndexChanged.connect(lambda *_: self.layer_changed.emit())

    def _rebuild(self) -> None:
        current = self.current_layer()
        layers = candidate_layers(self.viewer)
        if current is None and self._none_text is None:
            active = self.viewer.layers.selection.active
            current = active if active in layers and layer_problem(active) is None else None
            if current is None:
                current = next((ly for ly in layers if layer_problem(ly) is None), None)
        self._layers = ([None] if self._none_text is not None else []) + layers
        self.blockSignals(True)
        self.clear()
        for ly in self._layers:
            if ly is None:
                self.addItem(self._none_text)
                continue
            problem = layer_problem(ly)
            self.addItem(ly.name if problem is None else f"{ly.name}  (not usable)")
            if problem:
                self.setItemData(self.count() - 1, problem, Qt.ItemDataRole.ToolTipRole)
        idx = next((i for i, ly in enumerate(self._layers) if ly is current and ly is not None),
                   0)
        self.setCurrentIndex(idx if self._layers else -1)
        self.blockSignals(False)
        if self.current_layer() is not current:
            self.layer_changed.emit()

    def current_layer(self):
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer) -> None:
        for i, ly in enumerate(self._layers):
            if ly is layer:
                self.setCurrentIndex(i)
                return
        raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not in the list")


class LayerChecklist(QListWidget, _LayerWatcher):
    """Layers with check boxes (several may be denoised at once); unusable layers are listed,
    greyed, with the reason as tooltip."""

    changed = Signal()

    def __init__(self, viewer, decorate=None, parent=None):
        super().__init__(parent)
        self._decorate = decorate or (lambda layer: "")
        self._layers: list = []
        self._checked: set[int] = {id(ly) for ly in viewer.layers.selection
                                   if layer_problem(ly) is None}
        self.setMaximumHeight(110)
        self._watch(viewer)
        self._rebuild()
        self.itemChanged.connect(self._on_item_changed)

    def _on_item_changed(self, item) -> None:
        layer = self._layers[self.row(item)]
        if item.checkState() == Qt.CheckState.Checked:
            self._checked.add(id(layer))
        else:
            self._checked.discard(id(layer))
        self.changed.emit()

    def _rebuild(self) -> None:
        self._layers = candidate_layers(self.viewer)
        alive = {id(ly) for ly in self._layers}
        self._checked &= alive
        self.blockSignals(True)
        self.clear()
        for ly in self._layers:
            problem = layer_problem(ly)
            item = QListWidgetItem(ly.name + (self._decorate(ly) if problem is None
                                              else "  (not usable)"))
            if problem is None:
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if id(ly) in self._checked
                                   else Qt.CheckState.Unchecked)
            else:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
                item.setToolTip(problem)
            self.addItem(item)
        self.blockSignals(False)
        self.changed.emit()

    def refresh(self) -> None:
        self._rebuild()

    def layer_at(self, row: int):
        return self._layers[row] if 0 <= row < len(self._layers) else None

    def checked_layers(self) -> list:
        return [ly for ly in self._layers if id(ly) in self._checked]

    def set_checked(self, layers) -> None:
        self._checked = {id(ly) for ly in layers}
        self._rebuild()


# ---- device ---------------------------------------------------------------------------------
class DeviceCombo(QComboBox):
    """'auto' and every device torch sees, with GPU name and free memory (refreshed when the
    list opens)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fill()

    def _fill(self) -> None:
        from ..device import available_devices, device_info

        current = self.device() if self.count() else "auto"
        devices = available_devices()
        texts = {}
        for d in devices:
            try:
                texts[d] = device_info(d).describe()
            except Exception as exc:  # noqa: BLE001 - a broken driver must not break the widget
                texts[d] = f"{d}: unavailable ({exc})"
        self.blockSignals(True)
        self.clear()
        self.addItem(f"auto → {texts[devices[0]]}", "auto")
        for d in devices:
            self.addItem(texts[d], d)
        self.setCurrentIndex(max(0, self.findData(current)))
        self.blockSignals(False)
        self.setToolTip("auto picks the first CUDA GPU, then Apple MPS, then the CPU")

    def showPopup(self) -> None:  # noqa: N802 - Qt name
        self._fill()
        super().showPopup()

    def device(self) -> str:
        return self.currentData() or "auto"

    def set_device(self, device: str) -> None:
        i = self.findData(device)
        if i < 0:
            raise ValueError(f"device {device!r} is not available here")
        self.setCurrentIndex(i)

    def device_type(self) -> str:
        """'cuda', 'mps' or 'cpu': what the choice resolves to (selects the presets)."""
        from ..device import available_devices

        d = self.device()
        d = available_devices()[0] if d == "auto" else d
        return d.split(":")[0]


# ---- model ----------------------------------------------------------------------------------
class ModelBar(QWidget):
    """'Model: …' with Load… / Save… buttons, bound to the viewer's session."""

    def __init__(self, viewer, allow_load: bool = True, parent=None):
        super().__init__(parent)
        self.session = session_for(viewer)
        self.viewer = viewer
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QElidingLabel()
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.label, 1)
        self.load_button = None
        if allow_load:
            self.load_button = button("Load…", self.load_model,
                                      "Load a model file (.b2u) saved earlier")
            lay.addWidget(self.load_button)
        self.save_button = button("Save…", self.save_model, "Save the current model (.b2u)")
        lay.addWidget(self.save_button)
        self.session.model_changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        s = self.session
        if s.model is None:
            self.label.setText("Model: none yet — train one or load a .b2u file")
            self.label.setToolTip("")
        else:
            self.label.setText(f"Model: {s.model_source}")
            self.label.setToolTip(f"{s.model_source}\n{s.model!r}")
        self.save_button.setEnabled(s.model is not None)

    def _default_path(self) -> str:
        layer = self.session.trained_layer()
        folder = Path.home()
        name = "model.b2u"
        if layer is not None:
            src = getattr(getattr(layer, "source", None), "path", None)
            if src:
                folder = Path(src).parent
            name = f"{layer.name}.b2u".replace("/", "_")
        return str(folder / name)

    def save_model(self, path: str | None = None):
        """Save the current model (asks for a file unless ``path`` is given); returns the path
        written, or None."""
        model = self.session.model
        if model is None:
            notify("There is no model to save yet: train one first.", "warning")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", self._default_path(),
                                                  MODEL_FILTER)
            if not path:
                return None
        try:
            written = model.save(path)
        except OSError as exc:
            notify(f"Could not save the model to {path}: {exc}", "error")
            return None
        notify(f"Model saved to {written}")
        return written

    def load_model(self, path: str | None = None):
        """Load a model file into the session (asks for a file unless ``path`` is given)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load model", str(Path.home()),
                                                  MODEL_FILTER)
            if not path:
                return None
        return load_into_session(self.session, path)


def load_into_session(session, path):
    """Load the model file at ``path`` as the session's model; a notification either way."""
    from .. import api

    try:
        model = api.load(path)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none crashes napari
        log.debug("loading %s failed", path, exc_info=True)
        notify(plain_error(exc, f"Loading {Path(path).name}"), "error")
        return None
    info = model.info
    steps = info.get("steps")
    session.set_model(model, f"{Path(path).name}" + (f" ({steps} steps)" if steps else ""))
    notify(f"Loaded model {Path(path).name}: {model.method.title}, "
           f"{model.n_channels} channel(s)")
    return model
