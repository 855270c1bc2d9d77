"""The "Blind2Unblind: Train" dock widget.

It holds no training logic: it builds a :class:`~napari_b2u.engine.Trainer` through
``napari_b2u.api.make_trainer`` in a napari thread worker and shows what the trainer reports.
The worker yields to the GUI at most ``_GUI_INTERVAL`` apart (plus every preview, validation,
message and the end), carrying the loss rows of all steps in between, so the plot is complete
while the GUI thread stays idle. Layers and Qt are touched only in the worker's signal handlers,
which run on the main thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..data import InputError
from ..methods import get_method, method_titles
from ._common import (
    DeviceCombo,
    LayerCombo,
    ModelBar,
    Panel,
    StatusLabel,
    button,
    fmt_time,
    form_section,
    hbox,
    log,
    notify,
    plain_error,
    start_worker,
)
from ._layers import (
    META_KEY,
    camera_of,
    describe_layout,
    infer_axes,
    layer_problem,
    layout_of,
    preview_placement,
    preview_size,
    view_target,
)

#: the longest the GUI waits between two updates from the training thread (seconds)
_GUI_INTERVAL = 0.1
#: the shortest time between two preview requests that follow the viewer's slider/camera
_VIEW_DEBOUNCE_MS = 300

#: TrainConfig fields whose default is the device preset (shown in the form)
_PRESET_KEYS = ("steps", "patch_size", "batch_size", "lr", "width", "depth", "preview_every")

_OUTPUT_HELP = {
    "blind": "blind h(f(Ωy)): every pixel predicted by the copy in which it was masked",
    "visible": "visible f(y): the network on the unmasked image (the fast denoiser)",
    "weighted": "weighted (h + λ·f)/(λ + 1): B2U's re-visible combination (best quality)",
    "mu": "μ: the blind-spot network's estimate (D-BSN)",
    "bayes": "Bayes: μ combined with the noisy pixel by the estimated noise (D-BSN)",
    "noise_std": "the estimated noise standard deviation, in the input's units",
}


def default_preview(method) -> str:
    """The preview shown first: B2U's weighted output, else the method's default output."""
    names = list(method.preview_names)
    for name in ("weighted", method.outputs[0]):
        if name in names:
            return name
    return names[0]


def is_noise_map(name: str) -> bool:
    """Previews that are not intensities (e.g. a noise level) get their own contrast."""
    return "noise" in name or "std" in name


# ---- the training thread -----------------------------------------------------------------------
class _Control:
    """Shared by the GUI thread and the training thread (everything here is thread-safe)."""

    def __init__(self, preview):
        self.trainer = None
        self.stop_requested = threading.Event()
        self.preview = preview  # (frame, region) the previews should show

    def stop(self) -> None:
        self.stop_requested.set()
        trainer = self.trainer
        if trainer is not None:
            trainer.stop()


@dataclass
class Packet:
    kind: str  # "ready", "progress" or "error"
    event: object = None  # the latest TrainEvent
    rows: list = field(default_factory=list)  # (step, terms, sched, val_error) since last packet
    info: dict = field(default_factory=dict)
    error: BaseException | None = None


def train_job(ctl: _Control, data, axes: str, val_data, kwargs: dict):
    """Generator run by the worker thread: builds the trainer, trains, returns the Denoiser
    (or None). Errors are yielded as packets, so the GUI words them and recovers."""
    from .. import api

    try:
        trainer = api.make_trainer(data, axes=axes, val_stack=val_data,
                                   preview_frame=ctl.preview[0], **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
        log.debug("creating the trainer failed", exc_info=True)
        yield Packet("error", error=exc)
        return None
    ctl.trainer = trainer
    if ctl.stop_requested.is_set():
        trainer.stop()
    trainer.set_preview(*ctl.preview, now=False)
    method, cfg = trainer.method, trainer.config
    yield Packet("ready", info={
        "method": method.title, "loss_terms": method.loss_terms,
        "schedule_name": method.schedule_name, "preview_names": method.preview_names,
        "steps": cfg.steps, "max_time": cfg.max_time, "patch_size": trainer.patch_size,
        "batch_size": trainer.batch_size, "device": str(trainer.device),
        "split": trainer.data.split,
        "compile": bool(cfg.compile and trainer.device.type == "cuda"),
    })
    rows, last, last_terms = [], time.monotonic(), None
    events = iter(trainer)
    try:
        for ev in events:
            fresh = ev.terms if ev.terms and ev.terms != last_terms else None
            if fresh is not None or ev.validated:
                rows.append((ev.step, fresh, ev.lam, ev.val_error if ev.validated else None))
                last_terms = ev.terms
            now = time.monotonic()
            if (ev.done or ev.previews is not None or ev.message or ev.validated
                    or now - last >= _GUI_INTERVAL):
                yield Packet("progress", event=ev, rows=rows)
                rows, last = [], now
    except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
        log.debug("training failed", exc_info=True)
        yield Packet("error", error=exc)
        return None
    finally:
        events.close()  # an early close keeps the model trained so far
        ctl.trainer = None  # napari may keep the worker (and ctl) alive: drop the frames
    try:
        return trainer.result()
    except RuntimeError:
        return None


@dataclass
class _Run:
    """What the GUI knows about the training in progress."""

    layer: object
    layout: object
    ctl: _Control
    gen: object
    worker: object = None
    info: dict = field(default_factory=dict)
    layer_gone: bool = False
    target: tuple = (0, None)
    preview_size: int = 256
    val_layer: object = None
    last_event: object = None


# ---- the widget -------------------------------------------------------------------------------
class TrainWidget(Panel):
    """Train a self-supervised denoiser on an image layer, with live progress and previews."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._run: _Run | None = None
        self._loading = False
        self._edited: set[str] = set()
        self.preview_layers: dict = {}  # preview name -> napari layer
        self._preview_choice = "weighted"
        self._build()
        self._on_method_changed()
        self._on_layer_changed()
        ev = napari_viewer.layers.events
        ev.removed.connect(self._on_layer_removed)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(_VIEW_DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._push_view_target)
        napari_viewer.dims.events.current_step.connect(self._on_view_changed)
        camera = camera_of(napari_viewer)
        camera.events.center.connect(self._on_view_changed)
        camera.events.zoom.connect(self._on_view_changed)

    # ---- form ----------------------------------------------------------------------------------
    def _spin(self, key, lo, hi, step=1, tip="", decimals=None, special=None):
        if decimals is None:
            w = QSpinBox()
        else:
            w = QDoubleSpinBox()
            w.setDecimals(decimals)
        w.setRange(lo, hi)
        w.setSingleStep(step)
        if special:
            w.setSpecialValueText(special)
        w.setToolTip(tip)
        w.valueChanged.connect(lambda *_: self._mark_edited(key))
        self.fields[key] = w
        return w

    def _build(self) -> None:
        self.fields: dict[str, QWidget] = {}
        lay = QVBoxLayout(self)
        form = self._settings_form(lay)

        self.layer_combo = LayerCombo(self.viewer)
        self.layer_combo.setToolTip("The image to train on: every frame of a time series or "
                                    "z-stack is a training sample")
        self.layer_combo.layer_changed.connect(self._on_layer_changed)
        form.addRow("Image", self.layer_combo)
        self.val_combo = LayerCombo(self.viewer, none_text="(hold out part of the image)")
        self.val_combo.setToolTip(
            "Optional separate stack for the self-supervised validation that picks the best "
            "model; by default some frames (or, for < 5 frames, a band of each frame) are held "
            "out of training")
        form.addRow("Validation", self.val_combo)
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip(
            "One letter per dimension: T time, Z depth, S/I/Q other samples, C channel "
            "(denoised jointly), Y and X the image. Inferred from the layer; edit if wrong.")
        self.axes_edit.textEdited.connect(lambda *_: self._update_shape_hint())
        self.shape_hint = QLabel()
        form.addRow("Axes", hbox(self.axes_edit, self.shape_hint))
        self.method_combo = QComboBox()
        for name, title in method_titles().items():
            self.method_combo.addItem(title, name)
        self.method_combo.currentIndexChanged.connect(lambda *_: self._on_method_changed())
        form.addRow("Method", self.method_combo)
        self.length_unit = QComboBox()
        self.length_unit.addItem("steps", "steps")
        self.length_unit.addItem("epochs", "epochs")
        self.length_unit.setToolTip(
            "Count the training length in steps (one batch of random patches each) or in "
            "epochs (passes over the layer's pixels: steps = epochs × pixels / (batch × "
            "patch²)). Switching converts the number for the selected layer.")
        self.length_unit.currentIndexChanged.connect(lambda *_: self._on_length_unit_changed())
        form.addRow("Length", hbox(
            self._spin("steps", 1, 10_000_000, 50, "Training length, in the unit on the right. "
                       "The default is the device preset's number of steps."),
            self.length_unit,
            QLabel("time limit"),
            self._spin("max_minutes", 0, 100_000, 1, "Stop after this many minutes (off: "
                       "steps only). With a limit and untouched steps, only the time counts; "
                       "λ and the learning rate then follow the time used.", 1, "off")))
        form.addRow("Patch, batch", hbox(
            self._spin("patch_size", 8, 4096, 16, "Side of the square training patches (a "
                       "multiple of 2^depth; reduced automatically to fit small images)"),
            self._spin("batch_size", 1, 1024, 1, "Patches per step")))
        form.addRow("Cells s, lr", hbox(
            self._spin("cells", 2, 8, 1, "B2U's global-mask cell size s: s² masked copies per "
                       "patch"),
            self._spin("lr", 1e-6, 1.0, 1e-4, "Learning rate (Adam), decayed over training",
                       decimals=6)))
        self.device_combo = DeviceCombo()
        self.device_combo.currentIndexChanged.connect(lambda *_: self._apply_presets())
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self._spin("seed", 0, 2**31 - 1, 1, "Random seed (same seed, same "
                                                               "data, same device: same model)"))

        self.advanced, adv = form_section("Advanced settings")
        adv.addRow("Network width", self._spin("width", 4, 512, 4, "Channels of the U-Net's "
                                                                   "first level"))
        adv.addRow("Network depth", self._spin("depth", 1, 7, 1, "U-Net levels"))
        adv.addRow("Validation fraction", self._spin(
            "val_fraction", 0.0, 0.5, 0.05, "Fraction of frames held out to choose the best "
                                            "model (0: keep the last model)", decimals=2))
        adv.addRow("Preview every", self._spin("preview_every", 0, 1_000_000, 5,
                                               "Steps between live previews (0: off)",
                                               special="off"))
        self.compile_combo = QComboBox()
        self.amp_combo = QComboBox()
        for combo in (self.compile_combo, self.amp_combo):
            for text, value in (("auto (device preset)", None), ("on", True), ("off", False)):
                combo.addItem(text, value)
        self.compile_combo.setToolTip("torch.compile on CUDA (faster after a slow first minute)")
        self.amp_combo.setToolTip("bf16/fp16 mixed precision on CUDA")
        adv.addRow("torch.compile", self.compile_combo)
        adv.addRow("Mixed precision", self.amp_combo)
        self.autosave_edit = QLineEdit()
        self.autosave_edit.setPlaceholderText("off")
        self.autosave_edit.setToolTip(
            "A checkpoint file (.b2u) rewritten every 5 minutes and at the end: if napari or "
            "the computer stops, at most 5 minutes are lost. Continue with 'Resume…'; it also "
            "opens as a model for denoising.")
        adv.addRow("Autosave", hbox(self.autosave_edit, button(
            "…", self._choose_autosave, "Choose the autosave file")))
        adv.addRow(hbox(
            button("Resume…", self._choose_resume, "Continue training from an autosaved "
                   "checkpoint of this layer's data (its settings come from the file; a larger "
                   "'Length' or a time limit extends the run)"),
            button("Reset to defaults", self.reset_defaults,
                   "Show the device preset and method defaults again")))
        lay.addWidget(self.advanced)

        self.start_button, self.stop_button = self._action_row(
            lay, ("Start training", self.start),
            ("Stop", self.stop, "End training after the current step and keep the best model "
                                "so far"))
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        lay.addWidget(self.metrics)
        self.status = StatusLabel("")
        lay.addWidget(self.status)

        from ._plot import LossPlot

        self.plot = LossPlot()
        lay.addWidget(self.plot, 1)
        self.preview_row = QWidget()
        self.preview_buttons = QButtonGroup(self)
        self.preview_buttons.buttonClicked.connect(self._on_preview_choice)
        QHBoxLayout(self.preview_row).setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.preview_row)
        self.model_bar = ModelBar(self.viewer, allow_load=False)
        self.denoise_button = button("Denoise ▸", self.open_denoise,
                                     "Open the Blind2Unblind: Denoise panel")
        self.model_bar.layout().addWidget(self.denoise_button)
        lay.addWidget(self.model_bar)

    def _mark_edited(self, key: str) -> None:
        if not self._loading:
            self._edited.add(key)

    def _set_field(self, key: str, value) -> None:
        self._loading = True
        try:
            self.fields[key].setValue(value)
        finally:
            self._loading = False

    def _apply_presets(self) -> None:
        """Show the device preset (and method defaults) in every field the user left alone."""
        from ..engine import PRESETS, TrainConfig

        preset = PRESETS.get(self.device_combo.device_type(), PRESETS["cpu"])
        defaults = {k: preset[k] for k in _PRESET_KEYS}
        method = get_method(self.method_combo.currentData())
        defaults["cells"] = method.params.get("cells", 2)
        defaults["max_minutes"] = 0
        defaults["seed"] = TrainConfig.seed
        defaults["val_fraction"] = TrainConfig.val_fraction
        for key, value in defaults.items():
            if key not in self._edited:
                self._set_field(key, value)

    def _steps_per_epoch(self) -> float | None:
        """Steps in one pass over the selected layer's pixels (None without a usable layer)."""
        layer = self.layer_combo.current_layer()
        if layer is None or layer_problem(layer) is not None:
            return None
        try:
            layout = layout_of(layer, self.axes_edit.text())
        except InputError:
            return None
        h, w = layout.frame_shape
        patch = min(self.fields["patch_size"].value(), h, w)
        return layout.n_frames * h * w / (self.fields["batch_size"].value() * patch**2)

    def _on_length_unit_changed(self) -> None:
        # keep the same training length in the new unit when a layer tells how long an epoch is
        per_epoch = self._steps_per_epoch()
        spin = self.fields["steps"]
        if per_epoch:
            value = spin.value()
            new = value / per_epoch if self.length_unit.currentData() == "epochs" else \
                value * per_epoch
            self._set_field("steps", max(1, round(new)))
        self._edited.add("steps")  # a length in epochs is always the user's choice

    def reset_defaults(self) -> None:
        self._edited.clear()
        self.length_unit.blockSignals(True)
        self.length_unit.setCurrentIndex(0)
        self.length_unit.blockSignals(False)
        self.compile_combo.setCurrentIndex(0)
        self.amp_combo.setCurrentIndex(0)
        self._apply_presets()

    def _on_method_changed(self) -> None:
        method = get_method(self.method_combo.currentData())
        self.fields["cells"].setEnabled("cells" in method.defaults)
        self._edited.discard("cells")
        self._apply_presets()
        for b in self.preview_buttons.buttons():
            self.preview_buttons.removeButton(b)
            b.deleteLater()
        row = self.preview_row.layout()
        while row.count():
            item = row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        names = list(method.preview_names)
        if not names:
            return
        self._preview_choice = default_preview(method)
        row.addWidget(QLabel("Preview:"))
        for name in names + ["hidden"]:
            rb = QRadioButton(name)
            rb.setToolTip(_OUTPUT_HELP.get(name, "hide the preview layers"))
            rb.setChecked(name == self._preview_choice)
            self.preview_buttons.addButton(rb)
            row.addWidget(rb)

    def _on_preview_choice(self, rb) -> None:
        self._preview_choice = rb.text()
        for name, layer in self.preview_layers.items():
            layer.visible = name == self._preview_choice

    def _on_layer_changed(self) -> None:
        layer = self.layer_combo.current_layer()
        problem = layer_problem(layer)
        if problem is None:
            self.axes_edit.setText(infer_axes(layer))
            self.status.show_message("")
        else:
            self.axes_edit.setText("")
            if self._run is None:
                self.status.show_message(problem, "error" if layer is not None else "info")
        self._update_shape_hint()

    def _update_shape_hint(self) -> None:
        layer = self.layer_combo.current_layer()
        if layer_problem(layer) is not None:
            self.shape_hint.setText("")
            return
        try:
            self.shape_hint.setText(describe_layout(layout_of(layer, self.axes_edit.text())))
        except InputError:
            self.shape_hint.setText(f"shape {tuple(layer.data.shape)}")

    # ---- public API (also used by tests and scripts) -----------------------------------------
    def configure(self, **values) -> None:
        """Set form fields by their TrainConfig names (steps or epochs, patch_size, batch_size,
        cells, lr, width, depth, val_fraction, preview_every, seed, max_minutes) and ``device``,
        ``axes``, ``layer``, ``method``; set fields count as chosen by the user."""
        if "layer" in values:
            self.layer_combo.set_layer(values.pop("layer"))
        if "method" in values:
            self.method_combo.setCurrentIndex(self.method_combo.findData(values.pop("method")))
        if "device" in values:
            self.device_combo.set_device(values.pop("device"))
        if "axes" in values:
            self.axes_edit.setText(values.pop("axes"))
        if "autosave" in values:
            self.autosave_edit.setText(str(values.pop("autosave") or ""))
        if "epochs" in values:  # the length in epochs instead of steps
            self.length_unit.blockSignals(True)
            self.length_unit.setCurrentIndex(self.length_unit.findData("epochs"))
            self.length_unit.blockSignals(False)
            values["steps"] = values.pop("epochs")
        for key, value in values.items():
            if key not in self.fields:
                raise KeyError(f"unknown setting {key!r}; known: {sorted(self.fields)}")
            self.fields[key].setValue(value)
            self._edited.add(key)

    def params(self) -> dict:
        """make_trainer keyword arguments from the form; untouched preset fields are None, so
        the core's device preset decides."""
        f = self.fields

        def chosen(key):
            return f[key].value() if key in self._edited else None

        out = {key: chosen(key) for key in _PRESET_KEYS}
        if self.length_unit.currentData() == "epochs":
            out["epochs"], out["steps"] = float(f["steps"].value()), None
        minutes = f["max_minutes"].value()
        out["max_time"] = minutes * 60.0 if minutes > 0 else None
        out["cells"] = chosen("cells") if f["cells"].isEnabled() else None
        out["method"] = self.method_combo.currentData()
        out["device"] = self.device_combo.device()
        out["seed"] = f["seed"].value()
        out["val_fraction"] = f["val_fraction"].value()
        out["compile"] = self.compile_combo.currentData()
        out["amp"] = self.amp_combo.currentData()
        autosave = self.autosave_edit.text().strip()
        if autosave:
            out["autosave"] = autosave
        return out

    @property
    def is_training(self) -> bool:
        return self._run is not None

    def _choose_autosave(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Autosave checkpoint", "",
                                              "napari-b2u model (*.b2u)")
        if path:
            self.autosave_edit.setText(path if path.endswith(".b2u") else path + ".b2u")

    def _choose_resume(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Resume from checkpoint", "",
                                              "napari-b2u model (*.b2u)")
        if path:
            self.start(resume=path)

    def start(self, resume: str | None = None) -> bool:
        """Check the choices and start training in a worker thread; False (with a message in
        the widget and a notification) if something is wrong. ``resume``: continue from this
        autosaved checkpoint (same data) instead of starting afresh."""
        if self._run is not None:
            return False
        layer = self.layer_combo.current_layer()
        problem = layer_problem(layer)
        if problem is not None:
            self._refuse(problem)
            return False
        try:
            layout = layout_of(layer, self.axes_edit.text())
        except InputError as exc:
            self._refuse(f"Axes: {exc}")
            return False
        params = self.params()
        h, w = layout.frame_shape
        if params["patch_size"] is not None and params["patch_size"] > min(h, w):
            self._refuse(
                f"The frames of '{layer.name}' are {h}×{w} pixels, smaller than the patch size "
                f"{params['patch_size']}. Lower 'Patch' to at most {min(h, w)} or pick a larger "
                "image.")
            return False
        val_layer = self.val_combo.current_layer()
        val_data = None
        if val_layer is not None:
            problem = layer_problem(val_layer)
            if problem is not None:
                self._refuse(f"Validation: {problem}")
                return False
            if val_layer is layer:
                self._refuse("Validation: choose a different layer from the training image, "
                             "or leave it on '(hold out part of the image)'.")
                return False
            val_data = self.session.raw_data(val_layer)
        autosave = params.get("autosave")
        if autosave and Path(autosave).exists() and (
                resume is None or Path(autosave).resolve() != Path(resume).resolve()):
            self._refuse(f"Autosave: {autosave} exists; choose another file name (an autosave "
                         "rewrites its file), or resume from it.")
            return False
        if resume is not None:
            from ..inference import read_checkpoint

            try:
                ck = read_checkpoint(resume)
            except InputError as exc:
                self._refuse(f"Resume: {exc}")
                return False
            if not ck.get("training"):
                self._refuse(f"Resume: {Path(resume).name} holds no training state (it was "
                             "saved after training, not autosaved during it).")
                return False
            params = {**params, "resume": str(resume), "method": ck["method"]}
        if not self._launch(layer, layout, params, val_data):
            return False
        self._run.val_layer = val_layer
        return True

    def _launch(self, layer, layout, params, val_data) -> bool:
        from ..engine import TrainConfig

        data = self.session.raw_data(layer)
        size = preview_size(layout, TrainConfig.preview_size)
        target = view_target(self.viewer, layer, layout, size)
        ctl = _Control(target)
        gen = train_job(ctl, data, layout.axes, val_data, params)
        run = self._run = _Run(layer=layer, layout=layout, ctl=ctl, gen=gen, target=target,
                               preview_size=size)
        worker = run.worker = start_worker(f"training on '{layer.name}'", gen, self._on_packet,
                                           self._on_finished, ctl.stop)
        worker.returned.connect(self._on_result)
        self._set_busy(True)
        note = ("" if not self.session.has_original(layer) else
                " (on its raw data: the layer is shown denoised in place)")
        what = (f"Resuming '{layer.name}' from {Path(params['resume']).name}"
                if params.get("resume") else f"Preparing '{layer.name}'")
        self.status.show_message(f"{what}{note}…")
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.metrics.setText("")
        method = get_method(params["method"])
        self.plot.reset(method.loss_terms, method.schedule_name)
        self._prepare_preview_layers(layer, method.preview_names)
        worker.start()
        return True

    def stop(self) -> None:
        """End training after the current step; the best model so far is kept."""
        if self._run is not None:
            self._run.ctl.stop()
            self.stop_button.setEnabled(False)
            self.progress.setFormat(self.progress.format() + " · stopping…")

    def open_denoise(self):
        """Dock the Blind2Unblind: Denoise widget (or show it if it is open)."""
        return self.viewer.window.add_plugin_dock_widget("napari-b2u", "Blind2Unblind: Denoise")

    # ---- shutdown: viewer closing, panel closed, layer removed --------------------------------
    def shutdown(self) -> None:
        """Stop training now (the worker thread ends after the current step)."""
        run = getattr(self, "_run", None)
        if run is not None:
            run.ctl.stop()

    def _on_layer_removed(self, event) -> None:
        run, layer = self._run, event.value
        if run is None:
            return
        if layer is run.layer or layer is run.val_layer:
            run.layer_gone = True
            run.ctl.stop()
            self.status.show_message(
                f"'{layer.name}' was removed: training stops and keeps the model so far.")

    # ---- following the viewer ------------------------------------------------------------------
    def _on_view_changed(self, event=None) -> None:
        if self._run is not None:
            self._view_timer.start()

    def _push_view_target(self) -> None:
        run = self._run
        if run is None or run.layer_gone or run.ctl.trainer is None:
            return
        target = view_target(self.viewer, run.layer, run.layout, run.preview_size)
        if target != run.target:
            run.target = target
            run.ctl.preview = target
            run.ctl.trainer.set_preview(*target, now=True)

    # ---- previews ------------------------------------------------------------------------------
    def _prepare_preview_layers(self, layer, names) -> None:
        """Keep the preview layers of an earlier run if they still fit this layer and method."""
        for name, ply in list(self.preview_layers.items()):
            if ply not in self.viewer.layers or ply.ndim != layer.ndim or name not in names:
                if ply in self.viewer.layers:
                    self.viewer.layers.remove(ply)
                del self.preview_layers[name]
            elif not is_noise_map(name):
                ply.scale = layer.scale
                ply.colormap = layer.colormap
                ply.contrast_limits = layer.contrast_limits

    def _show_previews(self, previews: dict) -> None:
        run = self._run
        src, region = run.layer, previews["_region"]
        selected = set(self.viewer.layers.selection)
        added = False
        for name in run.info.get("preview_names", ()):
            if name not in previews:
                continue
            arr, translate = preview_placement(previews[name], region, run.layout, src)
            layer = self.preview_layers.get(name)
            look = ({"colormap": "magma"} if is_noise_map(name) else
                    {"colormap": src.colormap, "contrast_limits": src.contrast_limits})
            if layer is None:
                self.preview_layers[name] = self.viewer.add_image(
                    arr, name=f"preview: {name}", translate=translate, scale=src.scale,
                    axis_labels=src.axis_labels, units=src.units,
                    visible=name == self._preview_choice, metadata={META_KEY: {"preview": name}},
                    **look)
                added = True
            elif layer in self.viewer.layers:  # (a preview the user removed stays removed)
                layer.data = arr
                layer.translate = translate
                if is_noise_map(name):
                    layer.reset_contrast_limits()
        if added:  # adding a layer selects it; give the user their selection back
            self.viewer.layers.selection.clear()
            self.viewer.layers.selection.update(selected)

    # ---- worker signals (main thread) ---------------------------------------------------------
    def _on_packet(self, packet: Packet) -> None:
        run = self._run
        if run is None:
            return
        if packet.kind == "error":
            msg = plain_error(packet.error, "Training")
            self.status.show_message(msg, "error")
            notify(msg, "error")
            return
        if packet.kind == "ready":
            run.info = packet.info
            i = packet.info
            length = (f"{i['steps']} steps" if i["steps"] else "") + (
                f"{' or ' if i['steps'] else ''}{fmt_time(i['max_time'])} (time limit)"
                if i["max_time"] else "")
            note = (" The first steps compile the network: expect a minute before progress."
                    if i["compile"] else "")
            self.status.show_message(
                f"Training {i['method']} on '{run.layer.name}' ({run.layout.axes}, "
                f"{describe_layout(run.layout)}) on {i['device']}: {length}, patch "
                f"{i['patch_size']} × batch {i['batch_size']}; {i['split']}.{note}")
            return
        ev = run.last_event = packet.event
        self.plot.add(packet.rows)
        self._show_progress(ev)
        if ev.previews is not None and not run.layer_gone:
            self._show_previews(ev.previews)
        if ev.message and not ev.done:
            self.status.show_message(ev.message)
            notify(ev.message, "info")

    def _show_progress(self, ev) -> None:
        self.progress.setValue(int(round(1000 * ev.progress)))
        total = f"/{ev.total_steps}" if ev.total_steps else ""
        parts = [f"step {ev.step}{total}"]
        if ev.steps_per_s:
            parts.append(f"{ev.steps_per_s:.1f} steps/s")
        parts.append(f"ETA {fmt_time(ev.eta)}" if not ev.done else f"{fmt_time(ev.elapsed)}")
        if self._run is not None and self._run.ctl.stop_requested.is_set() and not ev.done:
            parts.append("stopping…")
        self.progress.setFormat(" · ".join(parts))
        m = []
        if ev.loss is not None:
            m.append(f"loss {ev.loss:.4g}")
        if ev.lam is not None:
            m.append(f"λ {ev.lam:.3g}")
        m.append(f"lr {ev.lr:.2g}")
        if ev.best_val_error is not None:
            m.append(f"validation {ev.val_error:.4g} (best {ev.best_val_error:.4g} at step "
                     f"{ev.best_step})")
        self.metrics.setText(" · ".join(m))

    def _on_result(self, model) -> None:
        run = self._run
        if run is None:
            return
        ev = run.last_event
        if model is None or not model.info.get("steps"):
            if run.ctl.stop_requested.is_set() and model is not None:
                self.status.show_message("Stopped before the first step: no model.")
            return
        info = model.info
        self.session.set_model(
            model, f"trained on '{run.layer.name}' ({info['steps']} steps, {info['chosen']})",
            layer=run.layer)
        how = "Stopped" if (ev is not None and ev.stopped) else "Done"
        msg = (f"{how}: kept the {info['chosen']} model after {info['steps']} steps in "
               f"{fmt_time(info.get('seconds'))}. Denoise with the Denoise panel "
               "(Denoise ▸), or save the model.")
        if model.readout():  # B2S: a photon-transfer estimate of the detector
            line = model.describe_readout()
            msg += f" {line[:1].upper()}{line[1:]}."
        self.status.show_message(msg, "ok")
        notify(msg)

    def _on_finished(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            self._set_busy(False)
            if run.last_event is None:
                self.progress.setFormat("idle")
        except RuntimeError:  # the widget was deleted with its viewer
            pass
