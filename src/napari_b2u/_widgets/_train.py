"""The "Train denoiser" dock widget (Plugins ▸ Blind2Unblind).

It holds no training logic: the form (:mod:`._train_form`) gives the options, the core checks
them (``build_config``) and says what the run will do (``plan_training``), and a napari thread
worker (:mod:`._train_job`) builds the trainer with ``napari_b2u.api.make_trainer`` and reports
to the GUI. Everything about a method — its previews, the term plotted, the schedule's label —
comes from the method's own description. Layers and Qt are touched only in the worker's signal
handlers, which run on the main thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QRadioButton, QVBoxLayout, QWidget

from ..config import FIELDS
from ..errors import InputError
from ._forms import button
from ._layers import (
    camera_of,
    describe_layout,
    layer_array,
    layer_problem,
    preview_size,
    view_target,
)
from ._model_bar import ModelBar
from ._names import DENOISE_WIDGET
from ._panel import Panel, open_panel, start_worker
from ._previews import PreviewLayers
from ._session import in_viewer, same_layer, unwrap
from ._text import MODEL_FILTER, StatusLabel, fmt_time, notify, plain_error, sentence
from ._train_form import TrainForm, method_class
from ._train_job import Control, Packet, train_job
from ._words import kept_words, panel_words, readout_words

#: the shortest time between two preview requests that follow the viewer's slider/camera
_VIEW_DEBOUNCE_MS = 300
#: what the preview row offers besides the method's previews
HIDDEN = "hidden"


@dataclass
class _Run:
    """What the GUI knows about the training in progress."""

    layer: object
    layout: object
    data: object
    ctl: Control
    gen: object
    method: str | None  # None until the trainer says (a resumed run)
    target: tuple = (0, None)
    preview_size: int = 256
    worker: object = None
    info: object = None  # the RunInfo of the "ready" packet
    val_layer: object = None
    layer_gone: bool = False
    last_event: object = None
    previewed: bool = False  # a preview arrived (else the preview layers show the input)
    model: object = None  # the model kept, once returned


def plot_legend(method) -> str:
    """What the plotted loss term is, in the method's words."""
    term = method.plot_term
    text = method.describe(term)
    return text if text != term else term


class TrainWidget(Panel):
    """Train a self-supervised denoiser on an image layer, with live progress and previews."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._run: _Run | None = None
        self.previews = PreviewLayers(self.viewer)
        self._build()
        self._on_method_changed()
        self._on_layer_changed()
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(_VIEW_DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._push_view_target)
        self.viewer.dims.events.current_step.connect(self._on_view_changed)
        camera = camera_of(self.viewer)
        camera.events.center.connect(self._on_view_changed)
        camera.events.zoom.connect(self._on_view_changed)

    # ---- building ------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self.body)
        self.form = self.settings = TrainForm(self.viewer, self.session,
                                              on_resume=self._choose_resume)
        self.form.layer_changed.connect(self._on_layer_changed)
        self.form.layer_removed.connect(self._on_chosen_layer_removed)
        self.form.method_changed.connect(self._on_method_changed)
        f = self.form  # its inputs, as attributes of the widget (tests, scripts)
        self.layer_combo, self.val_combo, self.axes_edit = f.layer_combo, f.val_combo, f.axes_edit
        self.shape_hint, self.method_combo, self.fields = f.shape_hint, f.method_combo, f.fields
        self.length_unit, self.device_combo = f.length_unit, f.device_combo
        lay.addWidget(self.form)
        lay.addWidget(self.form.advanced)
        self._locked += [self.form, self.form.advanced]
        self.start_button, self.stop_button = self._action_row(
            lay, ("Start training", self.start),
            ("Stop", self.stop, "End training now (the step in progress is dropped) and keep "
                                "the best model so far"))
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
        self.model_bar.said.connect(self.status.show_message)
        self.denoise_button = button("Denoise ▸", self.open_denoise,
                                     "Open the Blind2Unblind Denoise panel")
        self.model_bar.layout().addWidget(self.denoise_button)
        lay.addWidget(self.model_bar)

    # ---- the form (delegated; also used by tests and scripts) ---------------------------------
    def configure(self, **values) -> None:
        """Set form inputs by name (see :meth:`TrainForm.configure`)."""
        self.form.configure(**values)

    def params(self) -> dict:
        """The ``api.make_trainer`` keyword arguments of the form."""
        return self.form.params()

    def reset_defaults(self) -> None:
        self.form.reset_defaults()

    @property
    def preview_layers(self) -> dict:
        """Preview name -> its napari layer."""
        return self.previews.layers

    @property
    def is_training(self) -> bool:
        return self._run is not None

    def _on_layer_changed(self) -> None:
        if self._run is not None:
            return
        layer = self.form.layer()
        problem = layer_problem(layer)
        if layer is None and self.form.layer_combo.removed_text:
            return  # _on_chosen_layer_removed said what happened
        swapped = self.form.layer_combo.swap_note if problem is None else None
        if swapped:
            self.status.show_message(swapped, "warning")
            return
        self.status.show_message(problem or "", "info" if problem is None or layer is None
                                 else "error")

    def _on_chosen_layer_removed(self, name: str) -> None:
        if self._run is None:
            self.status.show_message(f"'{name}' was removed from the viewer: pick the layer to "
                                     "train on.", "warning")

    def _on_method_changed(self) -> None:
        self._set_preview_row(self.form.method_class())

    def _set_preview_row(self, method) -> None:
        for b in self.preview_buttons.buttons():
            self.preview_buttons.removeButton(b)
            b.deleteLater()
        row = self.preview_row.layout()
        while row.count():
            item = row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        names = list(method.preview_names)
        self.previews.set_choice(method.first_preview())
        if not names:
            return
        row.addWidget(QLabel("Preview:"))
        for name in names + [HIDDEN]:
            rb = QRadioButton(name)
            rb.setToolTip(method.describe(name) if name != HIDDEN else
                          "hide the preview layers")
            rb.setChecked(name == self.previews.choice)
            self.preview_buttons.addButton(rb)
            row.addWidget(rb)

    def _on_preview_choice(self, rb) -> None:
        name = rb.text()
        self.previews.set_choice(None if name == HIDDEN else name)

    # ---- start / stop ----------------------------------------------------------------------------
    def _choose_resume(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Resume from checkpoint", "", MODEL_FILTER)
        if path:
            self.start(resume=path)

    def start(self, resume: str | None = None) -> bool:
        """Check the choices and start training in a worker thread; False (with a message in
        the widget and a notification) if something is wrong. ``resume``: continue from this
        autosaved checkpoint (same data) instead of starting afresh; its settings come from the
        file, only the length, the time limit and the autosave are taken from the form."""
        if self._run is not None:
            return False
        f = self.form
        layer = f.layer()
        if layer is None and f.layer_combo.removed_text:
            self._refuse("The layer chosen to train on was removed: pick a layer in 'Image'.")
            return False
        problem = layer_problem(layer)
        if problem is not None:
            self._refuse(problem)
            return False
        try:
            layout = f.layout()
        except InputError as exc:
            self._refuse(f"Axes: {exc}")
            return False
        val_layer = f.val_layer()
        val_data = None
        if val_layer is not None:
            problem = layer_problem(val_layer)
            if problem is not None:
                self._refuse(f"Validation: {problem}")
                return False
            if same_layer(val_layer, layer):
                self._refuse("Validation: choose a different layer from the training image, "
                             "or leave it on '(hold out part of the image)'.")
                return False
            val_data = layer_array(self.session, val_layer)
        options = f.options()
        autosave = options.get("autosave")
        if autosave and Path(autosave).exists() and (
                resume is None or Path(autosave).resolve() != Path(resume).resolve()):
            self._refuse(f"Autosave: {autosave} exists; choose another file name (an autosave "
                         "rewrites its file), or resume from it.")
            return False
        if resume is None:
            try:  # the core's checks, on the GUI thread, before anything starts
                config = f.config()
                f.plan()
            except InputError as exc:
                self._refuse(sentence(str(exc)))
                return False
            kwargs = {"method": f.method_name(), "device": f.device(), **options}
            method, cap = f.method_name(), config.preview_size
            previews_on = config.preview_every != 0
        else:
            if f.length_in_epochs():
                self._refuse("Resume: give the length in steps (a resumed run is extended to "
                             "that many steps), or leave it at the checkpoint's length.")
                return False
            kwargs = {"device": f.device(), "resume": str(resume), "steps": options["steps"],
                      "max_time": options["max_time"], "autosave": autosave}
            method, cap, previews_on = None, FIELDS["preview_size"].default, True
        self.session.choose_axes(layer, layout.axes)
        self._launch(layer, layout, kwargs, val_data, method, cap, previews_on)
        self._run.val_layer = val_layer
        return True

    def _launch(self, layer, layout, kwargs, val_data, method, cap, previews_on) -> None:
        data = layer_array(self.session, layer)
        size = preview_size(layout, cap)
        target = view_target(self.viewer, layer, layout, size)
        ctl = Control(target)
        gen = train_job(ctl, data, layout.axes, val_data, kwargs)
        run = self._run = _Run(layer=layer, layout=layout, data=data, ctl=ctl, gen=gen,
                               method=method, target=target, preview_size=size)
        worker = run.worker = start_worker(f"training on '{layer.name}'", gen, self._on_packet,
                                           self._on_finished, ctl.stop)
        worker.returned.connect(self._on_result)
        self._set_busy(True)
        note = ("" if not self.session.has_original(layer) else
                " (on its raw data: the layer is shown denoised in place)")
        what = (f"Resuming '{layer.name}' from {Path(kwargs['resume']).name}"
                if kwargs.get("resume") else f"Preparing '{layer.name}'")
        self.status.show_message(f"{what}{note}…")
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.metrics.setText("")
        if method is not None:
            self._show_method(method_class(method), previews_on)
        worker.start()

    def _show_method(self, method, previews_on: bool) -> None:
        """Reset the plot for ``method`` and make its preview layers (at the start of a run:
        adding layers is what costs the GUI thread time, not updating them)."""
        run = self._run
        self.plot.reset(method.plot_term, plot_legend(method),
                        method.schedule_label if method.schedule_name else None)
        if method.preview_names and previews_on:
            self.previews.prepare(run.layer, run.data, run.layout, method.preview_names,
                                  method.spread_previews, *run.target)

    def stop(self) -> None:
        """End training now: the step in progress is dropped, the best model so far kept."""
        if self._run is not None:
            self._run.ctl.stop()
            self.stop_button.setEnabled(False)
            self.progress.setFormat(self.progress.format() + " · stopping…")

    def open_denoise(self):
        """Dock the Denoise widget (or show it if it is open); returns it."""
        from ._denoise import DenoiseWidget

        return open_panel(self.viewer, DENOISE_WIDGET, DenoiseWidget)

    # ---- shutdown: viewer closing, panel closed, layer removed --------------------------------
    def shutdown(self) -> None:
        """Stop training now (the worker thread ends within the current step)."""
        run = getattr(self, "_run", None)
        if run is not None:
            run.ctl.stop()

    def _on_layer_removed(self, event) -> None:
        layer = unwrap(event.value)
        if same_layer(layer, self.previews.source):
            self.previews.remove_all()  # previews of a layer that is gone mean nothing
        run = self._run
        if run is None:
            return
        if same_layer(layer, run.layer) or same_layer(layer, run.val_layer):
            run.layer_gone = True
            run.ctl.stop()
            self.status.show_message(
                f"'{layer.name}' was removed: training stops and keeps the model so far.",
                "warning")

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
            self._on_ready(run, packet.info)
            return
        ev = run.last_event = packet.event
        self.plot.add(packet.rows)
        self._show_progress(ev)
        if ev.previews is not None and not run.layer_gone:
            self.previews.show(ev.previews, run.layout)
            run.previewed = True
        if ev.message and not ev.done:
            self.status.show_message(sentence(ev.message))
            notify(sentence(ev.message), "info")

    def _on_ready(self, run: _Run, info) -> None:
        run.info = info
        if run.method is None or run.method != info.method_name:  # a resumed run
            run.method = info.method_name
            method = method_class(info.method_name)
            self._set_preview_row(method)
            self._show_method(method, info.previews)
        length = " or ".join(
            ([f"{info.steps:,} steps"] if info.steps else [])
            + ([f"{fmt_time(info.max_time)} (time limit)"] if info.max_time else []))
        split = f"; {info.split}" if info.split else ""
        notes = "".join(f" {sentence(n)}" for n in info.notes)
        compile_note = (" The first steps compile the network: expect a minute before "
                        "progress." if info.compile else "")
        self.status.show_message(
            f"Training {info.method} on '{run.layer.name}' ({run.layout.axes}, "
            f"{describe_layout(run.layout)}) on {info.device}: {length}, patch "
            f"{info.patch_size} × batch {info.batch_size}{split}.{notes}{compile_note}",
            "warning" if info.notes else "info")

    def _show_progress(self, ev) -> None:
        self.progress.setValue(int(round(1000 * ev.progress)))
        total = f"/{ev.total_steps}" if ev.total_steps else ""
        parts = [f"step {ev.step}{total}"]
        if ev.steps_per_s:
            parts.append(f"{ev.steps_per_s:.1f} steps/s")
        if ev.phase:  # after the last step: what the end phase is doing, its own ETA
            parts.append(ev.phase)
        parts.append(f"ETA {fmt_time(ev.eta)}" if not ev.done else f"{fmt_time(ev.elapsed)}")
        if self._run is not None and self._run.ctl.stop_requested.is_set() and not ev.done:
            parts.append("stopping…")
        self.progress.setFormat(" · ".join(parts))
        method = method_class(self._run.method) if self._run and self._run.method else None
        m = []
        if ev.loss is not None:
            m.append(f"loss {ev.loss:.4g}")
        if method is not None and method.plot_term != "loss" and method.plot_term in ev.terms:
            m.append(f"{method.plot_term} {ev.terms[method.plot_term]:.4g}")
        if ev.schedule is not None and method is not None and method.schedule_label:
            m.append(f"{method.schedule_label} {ev.schedule:.3g}")
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
        if model is None:  # an error (said already), or stopped before the first step
            if ev is not None and ev.done and ev.message:
                self.status.show_message(sentence(ev.message), "warning")
            return
        run.model = model
        info = model.info
        words = kept_words(model)  # the panels' words for what the core kept (None: unknown)
        short = words[1] if words else info['chosen']
        self.session.set_model(
            model, f"trained on '{self.session.plain_name(run.layer)}' ({info['steps']} steps, "
                   f"{short})",
            layer=run.layer)
        how = "Stopped" if (ev is not None and ev.stopped) else "Done"
        if how == "Stopped" and (ev.message or "").startswith("stopped while choosing"):
            how = "Stopped while choosing the model"  # the end phase: no comparison was made
        if run.layer_gone:
            gone = run.val_layer if in_viewer(self.viewer, run.layer) else run.layer
            how = f"'{gone.name}' was removed, training stopped"
        if words:
            kept = f"{words[0]}; {info['steps']} steps"
        else:
            kept = panel_words(ev.message if ev is not None and ev.done and ev.message else
                               f"kept the {info['chosen']} model after {info['steps']} steps")
        msg = f"{how}: {kept} in {fmt_time(info.get('seconds'))}."
        if model.readout():  # e.g. a fitted noise model
            msg += f" {readout_words(model)}"
        msg += " Denoise with the Denoise panel (Denoise ▸), or save the model."
        self.status.show_message(msg, "ok")
        notify(msg)

    def _on_finished(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            if run.model is None or not run.previewed:
                self.previews.remove_all()  # they would show the input, not a model's output
            self._set_busy(False)
            if run.last_event is None:
                self.progress.setFormat("idle")
            self.form.update_plan()
        except RuntimeError:  # the widget was deleted with its viewer
            pass
