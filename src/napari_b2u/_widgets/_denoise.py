"""The "Denoise" dock widget (Plugins ▸ Blind2Unblind): denoise checked layers with the
session's model, in place (the raw array is kept; "Restore original" brings it back bit-exact)
or into a new ``<name>_denoised`` layer. Denoising runs in a worker (:mod:`._denoise_job`)
through ``Denoiser.denoise_iter`` (batched over frames, tiled for large frames by the core),
reports progress and can be cancelled. The outputs and their descriptions come from the
model's method; Export… writes a bioimage.io package (:mod:`._export`).
Layers too large for memory (lazy dask/zarr data, pyramids) are denoised "to OME-Zarr" block by
block and opened as new lazy layers (:mod:`._zarr_out`)."""

from __future__ import annotations

import threading

import napari.viewer
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from ..denoise.predict import TTA_CHOICES
from ..errors import InputError, RangeMismatch
from ._denoise_axes import DenoiseAxes
from ._denoise_job import DenoiseJob, DenoiseMessage, denoise_job
from ._forms import AxesRow, button, form_section, hbox
from ._layers import (
    META_KEY,
    layer_array,
    layer_problem,
    layout_of,
    output_kwargs,
    rgb_channel,
)
from ._model_bar import ModelBar
from ._panel import Panel, start_worker
from ._pickers import DeviceCombo, LayerChecklist
from ._scaling import LABEL, ScalingCombo, own_button, range_message
from ._session import in_viewer, same_layer, session_for, unwrap
from ._text import MODEL_SUFFIX, StatusLabel, notify, plain_error
from ._zarr_out import (
    ZarrTarget,
    cannot_write,
    is_big,
    open_result,
    output_path,
    reuse_note,
    zarr_job,
)


class DenoiseWidget(DenoiseAxes, Panel):
    """Denoise image layers with the trained or loaded model."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._job: DenoiseJob | None = None
        self._build()
        self.session.model_changed.connect(self._on_model_changed)
        self.session.originals_changed.connect(self._on_originals_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._on_model_changed(tick=False)
        self._say_unusable_selection()

    # ---- form ----------------------------------------------------------------------------------
    def _initial_layers(self) -> list:
        """The layer the session's model was trained on, if it is here; else the selection."""
        trained = self.session.trained_layer()
        if in_viewer(self.viewer, trained):
            return [trained]
        return [unwrap(ly) for ly in self.viewer.layers.selection]

    def _say_unusable_selection(self) -> None:
        """A selected layer that cannot be denoised is not ticked: say why."""
        for layer in self._initial_layers():
            problem = layer_problem(layer, True)
            if problem is not None:
                self.status.show_message(f"Not ticked: {problem}", "warning")
                return

    def _build(self) -> None:
        lay = QVBoxLayout(self.body)
        self._export_worker = None
        self.model_bar = ModelBar(self.viewer, export=self.export_model)
        lay.addWidget(self.model_bar)
        self._locked.append(self.model_bar)
        form = self._settings_form(lay)
        self._build_layers(form)
        self._build_result(form)
        self.device_combo = DeviceCombo()
        form.addRow("Device", self.device_combo)
        lay.addWidget(self._build_advanced())
        self._build_actions(lay)
        self.model_bar.said.connect(self.status.show_message)
        self._update_restore()
        self._show_axes()

    def _build_layers(self, form) -> None:
        """The layers to denoise and the axes of the highlighted one."""
        self.layer_list = LayerChecklist(self.viewer, decorate=self._decorate,
                                         initial=self._initial_layers(), multiscale_ok=True)
        self.layer_list.setToolTip("Tick the layers to denoise; all frames of each are denoised")
        self.layer_list.changed.connect(self._on_checked_changed)
        self.layer_list.currentRowChanged.connect(self._show_axes)
        form.addRow("Layers", self.layer_list)
        self.axes_row = AxesRow(
            form, "Axes of the highlighted layer (T time, Z depth, C channel, Y X the image): "
            "its axis labels or metadata, else those the model was trained with, else a guess; "
            "edit if wrong", self._on_axes_edited)
        self.axes_edit, self.axes_hint = self.axes_row.edit, self.axes_row.hint
        self.axes_note = self.axes_row.note

    def _build_result(self, form) -> None:
        """Which output, the ensembling, and where the result goes."""
        self.output_combo = QComboBox()
        self.output_combo.setToolTip("Which output of the model's method to use")
        form.addRow("Output", self.output_combo)
        self.tta_combo = QComboBox()
        for value, text in TTA_CHOICES:
            self.tta_combo.addItem(text, value)
        self.tta_combo.setToolTip("Test-time ensembling: the mean of the model's output over "
                                  "flips and rotations of the input — a little cleaner, a "
                                  "multiple of the time")
        form.addRow("Ensembling", self.tta_combo)
        self.scaling_combo = ScalingCombo()
        form.addRow(LABEL, self.scaling_combo)
        self.in_place = QRadioButton("in place")
        self.in_place.setToolTip("Replace the layer's data; 'Restore original' brings the raw "
                                 "data back bit-exact at any time")
        self.new_layer = QRadioButton("new layer <name>_denoised")
        self.new_layer.setToolTip("Add a new layer with the same scale, position, axis labels, "
                                  "metadata and contrast; the input is untouched")
        self.to_zarr = QRadioButton("to OME-Zarr")
        self.to_zarr.setToolTip("Write <layer>_denoised.ome.zarr block by block (layers of any "
                                "size: the way for data larger than memory) and open it as a new "
                                "lazy layer; the input is untouched")
        self.in_place.setChecked(True)
        self._mode = QButtonGroup(self)
        for b in (self.in_place, self.new_layer, self.to_zarr):
            self._mode.addButton(b)
        form.addRow("Result", hbox(self.in_place, self.new_layer, self.to_zarr))
        self.zarr_target = ZarrTarget()
        self.zarr_target.setEnabled(False)
        self.to_zarr.toggled.connect(self._on_zarr_toggled)
        form.addRow("Save to", self.zarr_target)

    def _build_advanced(self):
        """The collapsed section: tile size and frames per batch."""
        self.advanced, adv = form_section("Advanced settings")
        self._locked.append(self.advanced)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 65536)
        self.tile_spin.setSingleStep(128)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setToolTip("Frames larger than this are denoised in overlapping tiles "
                                  "(auto: by device; lower it if memory runs out)")
        adv.addRow("Tile size", self.tile_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 4096)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setToolTip("Frames per batch (auto: by device memory budget)")
        adv.addRow("Frames per batch", self.batch_spin)
        return self.advanced

    def _build_actions(self, lay) -> None:
        """Denoise, Cancel, Restore original and the status line."""
        self.denoise_button, self.cancel_button = self._action_row(
            lay, ("Denoise", self.denoise),
            ("Cancel", self.cancel, "Stop denoising after the current batch or tile; "
                                    "unfinished layers stay as they are"))
        self.restore_button = button(
            "Restore original", self.restore,
            "Put the raw data back into the ticked layers that were denoised in place (also "
            "while denoising: that cancels the run)")
        lay.addWidget(self.restore_button)
        self.status = StatusLabel("")
        lay.addWidget(self.status)
        self.own_button = own_button(self.denoise_on_own_scale)  # offered after a refusal
        lay.addWidget(self.own_button)
        lay.addStretch(1)

    def _decorate(self, layer) -> str:
        """A mark for a layer denoised in place whose name does not show it (renamed)."""
        s = self.session
        return "  (denoised in place)" if (s.has_original(layer) and s.plain_name(layer)
                                           == layer.name) else ""

    def _on_model_changed(self, tick: bool = True) -> None:
        model = self.session.model
        self.own_button.hide()  # an offer made for the model before
        current = self.output_combo.currentData()
        self.output_combo.clear()
        if model is None:
            return
        if getattr(self, "_said_no_model", False):  # the red "No model yet" is over
            self._said_no_model = False
            self.status.show_message(f"Model ready ({self.session.model_source}): tick the "
                                     "layers and press Denoise.", "ok")
        for name in model.outputs:
            self.output_combo.addItem(model.method.describe(name), name)
        self.output_combo.setCurrentIndex(max(0, self.output_combo.findData(current)))
        trained = self.session.trained_layer()
        if tick and in_viewer(self.viewer, trained) and layer_problem(trained) is None:
            self.layer_list.set_checked([trained])  # a new model: propose its own layer
        self._show_axes()

    def _on_originals_changed(self) -> None:
        self.layer_list.refresh()
        self._update_restore()

    def _on_checked_changed(self) -> None:
        self._update_restore()
        self._show_axes()
        if any(is_big(ly) for ly in self.layer_list.checked_layers()):
            self.to_zarr.setChecked(True)  # too large for memory: the one way
        self._on_zarr_toggled(self.to_zarr.isChecked())

    def _on_zarr_toggled(self, on: bool) -> None:
        self.zarr_target.setEnabled(on)
        if on:
            layers = self.layer_list.checked_layers()
            self.zarr_target.propose(layers, [self.session.plain_name(ly) for ly in layers])

    def _update_restore(self) -> None:
        ok = any(self.session.has_original(ly) for ly in self.layer_list.checked_layers())
        self.restore_button.setEnabled(ok)

    # ---- public API ----------------------------------------------------------------------------
    @property
    def is_busy(self) -> bool:
        return self._job is not None

    def set_layers(self, layers, axes: str | None = None) -> None:
        """Tick ``layers`` (and set the axes of all of them, if given)."""
        self.layer_list.set_checked(layers)
        if axes is not None:
            for ly in layers:
                self.session.choose_axes(ly, axes)
        self._show_axes()

    def options(self) -> dict:
        """Keyword arguments for Denoiser.denoise_iter from the form (0 = auto = None)."""
        return {"output": self.output_combo.currentData(), "device": self.device_combo.device(),
                "tile_size": self.tile_spin.value() or None,
                "batch_size": self.batch_spin.value() or None,
                "tta": self.tta_combo.currentData(),
                "normalize": self.scaling_combo.currentData()}

    def denoise(self) -> bool:
        """Denoise the ticked layers in a worker; False (with a message) if something is wrong.
        Whether the model fits a layer (its channels) is checked by the core as each layer
        starts."""
        if self._job is not None:
            return False
        model = self.session.model
        if model is None:
            self._refuse("No model yet: train one in the Train denoiser panel (Plugins ▸ "
                         f"Blind2Unblind), or Load… a saved {MODEL_SUFFIX} model file.")
            self._said_no_model = True
            return False
        layers = self.layer_list.checked_layers()
        if not layers:
            self._refuse("No layer ticked: tick the image layer(s) to denoise in the list.")
            return False
        items, zarr = [], self.to_zarr.isChecked()
        folder = self.zarr_target.folder()
        if zarr and not folder:
            self._refuse("Choose the folder for the OME-Zarr output(s) (Save to: Browse…).")
            return False
        for layer in layers:
            problem = layer_problem(layer, True)
            if problem is None and not zarr and is_big(layer):
                problem = (f"'{layer.name}' is a pyramid or lazy data larger than the memory "
                           "budget: choose Result 'to OME-Zarr' (written block by block).")
            if problem is not None:
                self._refuse(problem)
                return False
            try:
                layout = layout_of(layer, self.axes_for(layer))
            except InputError as exc:
                self._refuse(f"Axes of '{layer.name}': {exc}")
                return False
            out = output_path(folder, self.session.plain_name(layer)) if zarr else None
            problem = cannot_write(out) if zarr else None
            if problem is not None:
                self._refuse(problem)
                return False
            items.append((layer_array(self.session, layer), layout.axes) + (
                (str(out),) if zarr else ()))
        return self._launch(model, layers, items)

    def denoise_on_own_scale(self) -> bool:
        """The offer after a refusal: Scaling 'each layer on its own', then Denoise."""
        self.scaling_combo.set_own()
        return self.denoise()

    def _launch(self, model, layers, items) -> bool:
        self.own_button.hide()
        cancel = threading.Event()
        options = self.options()
        zarr = self.to_zarr.isChecked()
        gen = (zarr_job if zarr else denoise_job)(cancel, model, items, options)
        worker = start_worker(f"denoising {len(layers)} layer(s)", gen, self._on_packet,
                              self._on_finished, cancel.set)
        # a colour-mapped RGB layer cannot show one channel in place: its result is a new layer
        in_place = [self.in_place.isChecked() and rgb_channel(ly) is None for ly in layers]
        self._job = DenoiseJob(layers=layers, in_place=in_place, cancel=cancel, gen=gen,
                         worker=worker, note={"model": self.session.model_source,
                                              "output": options["output"] or model.outputs[0]},
                         unit="block" if zarr else "frame", axes=[it[1] for it in items])
        self._set_busy(True)
        self.progress.setValue(0)
        self.status.show_message(f"Denoising {len(layers)} layer(s)…")
        worker.start()
        return True

    def export_model(self, path: str | None = None):
        """Export… (bioimage.io): the model, with a crop of the highlighted layer as its test
        image; returns the started worker or None (see :mod:`._export`)."""
        from ._export import export_model

        return export_model(self, path)

    def cancel(self) -> None:
        """Stop after the current batch or tile; finished layers keep their result."""
        if self._job is not None:
            self._job.cancel.set()
            self.cancel_button.setEnabled(False)

    def restore(self) -> list:
        """Put the raw data back into the ticked layers denoised in place; returns them.
        Available while denoising too: a running job is cancelled first, so that it cannot
        write into a restored layer afterwards."""
        job = self._job
        checked = self.layer_list.checked_layers()
        if job is not None and any(same_layer(ly, j) for ly in checked for j in job.layers):
            job.cancel.set()
            job.restored = {id(ly) for ly in checked}
            job.message = ("Restored the original data: denoising cancelled.", "info")
        restored = [ly for ly in checked if self.session.restore(ly)]
        if restored:
            self.status.show_message(
                "Restored the original data of " + ", ".join(f"'{ly.name}'" for ly in restored)
                + ".", "ok")
        else:
            self.status.show_message("Nothing to restore: none of the ticked layers was "
                                     "denoised in place.")
        return restored

    def shutdown(self) -> None:
        if getattr(self, "_job", None) is not None:
            self._job.cancel.set()

    # ---- worker signals (main thread) ----------------------------------------------------------
    def _on_packet(self, msg: DenoiseMessage) -> None:
        job = self._job
        if job is None:
            return
        k, layers = msg.index, job.layers
        layer = layers[k]
        if msg.kind == "progress":
            self.progress.setValue(int(1000 * (k + msg.done / max(msg.total, 1)) / len(layers)))
            self.progress.setFormat(f"'{layer.name}' ({k + 1}/{len(layers)}): {job.unit} "
                                    f"{msg.done}/{msg.total}")
        elif msg.kind == "result":
            self._apply(k, msg.result, job)
            job.done += 1
        elif msg.kind == "error":
            text = plain_error(msg.error, f"Denoising '{layer.name}'")
            if isinstance(msg.error, RangeMismatch):  # in the panel's words, with the offer
                text = range_message(layer.name, msg.error)
                self.own_button.show()
            elif isinstance(msg.error, InputError):  # the core's words do not name the layer
                text = f"'{layer.name}': {text}"
            if job.done:
                text += f" ({job.done} layer(s) before it were denoised.)"
            job.message = (text, "error")
            notify(text, "error")
        elif msg.kind == "cancelled" and job.message is None:  # keep a more specific reason
            job.message = (f"Cancelled: {job.done} of {len(layers)} layer(s) denoised; the "
                           "others are unchanged.", "info")

    def _apply(self, k: int, result, job: DenoiseJob) -> None:
        layer = job.layers[k]
        if not in_viewer(self.viewer, layer) or id(layer) in job.restored:
            return
        note = dict(job.note)
        raw = self.session.plain_name(layer)  # outputs are named after the raw data
        if job.unit == "block":  # an OME-Zarr output: a new lazy multiscale layer
            note["path"] = str(result.path)
            job.blocks += result.blocks
            job.skipped += result.skipped
            name = f"{raw}_denoised"
            if open_result(self.viewer, layer, result, output_kwargs(
                    layer, name, {"denoised_from": raw, **note}, job.axes[k])):
                job.refreshed.append(name)
            return
        if job.in_place[k]:
            self.session.replace_data(layer, result, note)
            return
        name = f"{raw}_denoised"
        for other in self.viewer.layers:
            made = other.metadata.get(META_KEY, {}).get("denoised_from")
            if other.name == name and made == raw and other.ndim == result.ndim:
                other.data = result
                other.metadata = {**other.metadata, META_KEY: {"denoised_from": raw, **note}}
                return
        from napari.layers import Layer

        state = output_kwargs(layer, name, {"denoised_from": raw, **note}, job.axes[k])
        self.viewer.add_layer(Layer.create(result, state, "image"))

    def _on_layer_removed(self, event) -> None:
        job, layer = self._job, unwrap(event.value)
        if job is not None and any(layer is ly for ly in job.layers):
            job.cancel.set()
            job.message = (f"'{layer.name}' was removed: denoising cancelled.", "info")

    def _on_finished(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        try:
            self._set_busy(False)
            msg, kind = job.message or (None, None)
            if msg is None:
                n = len(job.layers)
                if job.unit == "block":
                    where = f"to OME-Zarr in {self.zarr_target.folder()}" + reuse_note(
                        job.blocks, job.skipped, job.refreshed)
                elif all(job.in_place):
                    where = "in place"
                elif not any(job.in_place):
                    where = "into a new layer" if n == 1 else "into new layers"
                else:
                    where = "in place, RGB layers into new layers"
                names = ", ".join(f"'{self.session.plain_name(ly)}'" for ly in job.layers)
                msg, kind = f"Denoised {names} {where}.", "ok"
                if self.in_place.isChecked() and not all(job.in_place):
                    msg += (" An RGB layer shows colours, not one channel: its result is a new "
                            "layer.")
                self.progress.setValue(1000)
                self.progress.setFormat("done")
            else:
                self.progress.setFormat("idle")
            self.status.show_message(msg, kind)
        except RuntimeError:  # the widget was deleted with its viewer
            pass

    def _set_busy(self, busy: bool) -> None:
        super()._set_busy(busy)
        self._update_restore()


def restore_original(viewer: napari.viewer.Viewer) -> None:
    """Menu command (Layers ▸ Filter): restore the raw data of the selected layers that were
    denoised in place — available even when the Denoise panel is closed."""
    session = session_for(viewer)
    restored = [ly.name for ly in list(unwrap(viewer).layers.selection) if session.restore(ly)]
    if restored:
        notify("Restored the original data of " + ", ".join(f"'{n}'" for n in restored))
    else:
        notify("Nothing to restore: select a layer that was denoised in place "
               "(Blind2Unblind ▸ Denoise, in place).", "warning")
