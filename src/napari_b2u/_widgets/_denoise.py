"""The "Blind2Unblind: Denoise" dock widget: denoise checked layers with the session's model,
in place (the raw array is kept; "Restore original" brings it back bit-exact) or into a new
``<name>_denoised`` layer. Denoising runs in a worker through ``Denoiser.denoise_iter`` (batched
over frames, tiled for large frames by the core), reports progress and can be cancelled."""

from __future__ import annotations

import threading
import weakref

import napari.viewer
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from ..data import InputError
from ._common import (
    DeviceCombo,
    LayerChecklist,
    ModelBar,
    Panel,
    StatusLabel,
    button,
    form_section,
    hbox,
    log,
    notify,
    plain_error,
    start_worker,
)
from ._layers import META_KEY, describe_layout, infer_axes, layer_problem, layout_of, output_kwargs
from ._session import session_for

_OUTPUT_TEXT = {
    "visible": "visible f(y) — fast (one pass)",
    "weighted": "weighted (h+λf)/(λ+1) — best quality, s²+1 passes",
    "blind": "blind h(f(Ωy)) — blind-spot only",
    "bayes": "Bayes — μ combined with the noisy pixel by the estimated noise",
    "mu": "μ — the blind-spot estimate (D-BSN's best measured output)",
}


def denoise_job(cancel: threading.Event, model, items, options: dict):
    """Generator run by the worker thread. ``items``: (data, axes) per layer. Yields
    ("progress", k, done, n), ("result", k, array), ("error", k, exc) or ("cancelled", k)."""
    for k, (data, axes) in enumerate(items):
        frames = model.denoise_iter(data, axes=axes, **options)
        try:
            while True:
                if cancel.is_set():
                    yield ("cancelled", k)
                    return
                try:
                    done, n = next(frames)
                except StopIteration as stop:
                    result = stop.value
                    break
                yield ("progress", k, done, n)
        except Exception as exc:  # noqa: BLE001 - reported to the user by the GUI
            log.debug("denoising failed", exc_info=True)
            yield ("error", k, exc)
            return
        finally:
            frames.close()  # a cancelled run frees its memory now
        yield ("result", k, result)


class DenoiseWidget(Panel):
    """Denoise image layers with the trained or loaded model."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._job = None  # dict while a worker runs
        self._axes = weakref.WeakKeyDictionary()  # layer -> axes chosen by the user
        self._build()
        self.session.model_changed.connect(self._on_model_changed)
        self.session.originals_changed.connect(self._on_originals_changed)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._on_model_changed()

    # ---- form ----------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        self.model_bar = ModelBar(self.viewer)
        lay.addWidget(self.model_bar)
        form = self._settings_form(lay)
        self.layer_list = LayerChecklist(self.viewer, decorate=self._decorate)
        self.layer_list.setToolTip("Tick the layers to denoise; all frames of each are denoised")
        self.layer_list.changed.connect(self._on_checked_changed)
        self.layer_list.currentRowChanged.connect(lambda *_: self._show_axes())
        form.addRow("Layers", self.layer_list)
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip("Axes of the highlighted layer (T time, Z depth, C channel, "
                                  "Y X the image); inferred, edit if wrong")
        self.axes_edit.textEdited.connect(self._on_axes_edited)
        self.axes_hint = QLabel()
        form.addRow("Axes", hbox(self.axes_edit, self.axes_hint))
        self.output_combo = QComboBox()
        self.output_combo.setToolTip("Which network output to use")
        form.addRow("Output", self.output_combo)
        self.in_place = QRadioButton("in place")
        self.in_place.setToolTip("Replace the layer's data; 'Restore original' brings the raw "
                                 "data back bit-exact at any time")
        self.new_layer = QRadioButton("new layer <name>_denoised")
        self.new_layer.setToolTip("Add a new layer with the same scale, position, axis labels, "
                                  "metadata and contrast; the input is untouched")
        self.in_place.setChecked(True)
        self._mode = QButtonGroup(self)
        self._mode.addButton(self.in_place)
        self._mode.addButton(self.new_layer)
        form.addRow("Result", hbox(self.in_place, self.new_layer))
        self.device_combo = DeviceCombo()
        form.addRow("Device", self.device_combo)
        self.advanced, adv = form_section("Advanced settings")
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
        lay.addWidget(self.advanced)
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
        lay.addStretch(1)
        self._update_restore()
        self._show_axes()

    def _decorate(self, layer) -> str:
        return "  (denoised in place)" if self.session.has_original(layer) else ""

    def _on_model_changed(self) -> None:
        model = self.session.model
        current = self.output_combo.currentData()
        self.output_combo.clear()
        if model is not None:
            for name in model.outputs:
                self.output_combo.addItem(_OUTPUT_TEXT.get(name, name), name)
            self.output_combo.setCurrentIndex(max(0, self.output_combo.findData(current)))
            trained = self.session.trained_layer()
            if not self.layer_list.checked_layers() and trained is not None:
                if trained in self.viewer.layers and layer_problem(trained) is None:
                    self.layer_list.set_checked([trained])

    def _on_originals_changed(self) -> None:
        self.layer_list.refresh()
        self._update_restore()

    def _on_checked_changed(self) -> None:
        self._update_restore()
        self._show_axes()

    def _update_restore(self) -> None:
        ok = any(self.session.has_original(ly) for ly in self.layer_list.checked_layers())
        self.restore_button.setEnabled(ok)

    def _highlighted(self):
        layer = self.layer_list.layer_at(self.layer_list.currentRow())
        if layer is None or layer_problem(layer) is not None:
            checked = self.layer_list.checked_layers()
            layer = checked[0] if checked else None
        return layer

    def axes_for(self, layer) -> str:
        return self._axes.get(layer) or infer_axes(layer)

    def _show_axes(self) -> None:
        layer = self._highlighted()
        self.axes_edit.setEnabled(layer is not None)
        if layer is None:
            self.axes_edit.setText("")
            self.axes_hint.setText("")
            return
        self.axes_edit.setText(self.axes_for(layer))
        self._update_axes_hint(layer)

    def _on_axes_edited(self, text: str) -> None:
        layer = self._highlighted()
        if layer is not None:
            self._axes[layer] = text.strip().upper()
            self._update_axes_hint(layer)

    def _update_axes_hint(self, layer) -> None:
        try:
            desc = describe_layout(layout_of(layer, self.axes_for(layer)))
            self.axes_hint.setText(f"'{layer.name}': {desc}")
        except InputError:
            self.axes_hint.setText(f"'{layer.name}': shape {tuple(layer.data.shape)}")

    # ---- public API ----------------------------------------------------------------------------
    @property
    def is_busy(self) -> bool:
        return self._job is not None

    def set_layers(self, layers, axes: str | None = None) -> None:
        """Tick ``layers`` (and set the axes of all of them, if given)."""
        self.layer_list.set_checked(layers)
        if axes is not None:
            for ly in layers:
                self._axes[ly] = axes
        self._show_axes()

    def options(self) -> dict:
        """Keyword arguments for Denoiser.denoise_iter from the form (0 = auto = None)."""
        return {"output": self.output_combo.currentData(), "device": self.device_combo.device(),
                "tile_size": self.tile_spin.value() or None,
                "batch_size": self.batch_spin.value() or None}

    def denoise(self) -> bool:
        """Denoise the ticked layers in a worker; False (with a message) if something is wrong."""
        if self._job is not None:
            return False
        model = self.session.model
        if model is None:
            self._refuse("No model yet: train one in the Blind2Unblind: Train panel, or Load… "
                         "a saved .b2u model file.")
            return False
        layers = self.layer_list.checked_layers()
        if not layers:
            self._refuse("No layer ticked: tick the image layer(s) to denoise in the list.")
            return False
        items = []
        for layer in layers:
            problem = layer_problem(layer)
            if problem is not None:
                self._refuse(problem)
                return False
            try:
                layout = layout_of(layer, self.axes_for(layer))
            except InputError as exc:
                self._refuse(f"Axes of '{layer.name}': {exc}")
                return False
            if layout.n_channels != model.n_channels:
                self._refuse(
                    f"The model was trained on {model.n_channels} channel(s) but '{layer.name}' "
                    f"has {layout.n_channels} with axes {layout.axes!r}: check the axes (C is "
                    "the channel axis) or use a model trained on matching data.")
                return False
            items.append((self.session.raw_data(layer), layout.axes))
        return self._launch(model, layers, items)

    def _launch(self, model, layers, items) -> bool:
        cancel = threading.Event()
        options = self.options()
        gen = denoise_job(cancel, model, items, options)
        worker = start_worker(f"denoising {len(layers)} layer(s)", gen, self._on_packet,
                              self._on_finished, cancel.set)
        self._job = {"layers": layers, "cancel": cancel, "gen": gen, "worker": worker,
                     "in_place": self.in_place.isChecked(), "done": 0,
                     "note": {"model": self.session.model_source,
                              "output": options["output"] or model.outputs[0]}}
        self._set_busy(True)
        self.progress.setValue(0)
        self.status.show_message(f"Denoising {len(layers)} layer(s)…")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop after the current batch; finished layers keep their result."""
        if self._job is not None:
            self._job["cancel"].set()
            self.cancel_button.setEnabled(False)

    def restore(self) -> list:
        """Put the raw data back into the ticked layers denoised in place; returns them.
        Available while denoising too: a running job is cancelled first, so that it cannot
        write into a restored layer afterwards."""
        job = self._job
        if job is not None and any(ly in job["layers"] for ly in
                                   self.layer_list.checked_layers()):
            job["cancel"].set()
            job["restored"] = set(map(id, self.layer_list.checked_layers()))
            job["message"] = ("Restored the original data: denoising cancelled.", "info")
        restored = [ly for ly in self.layer_list.checked_layers() if self.session.restore(ly)]
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
            self._job["cancel"].set()

    # ---- worker signals (main thread) ----------------------------------------------------------
    def _on_packet(self, packet) -> None:
        job = self._job
        if job is None:
            return
        kind, k = packet[0], packet[1]
        layers = job["layers"]
        layer = layers[k]
        if kind == "progress":
            done, n = packet[2], packet[3]
            self.progress.setValue(int(1000 * (k + done / max(n, 1)) / len(layers)))
            self.progress.setFormat(f"'{layer.name}' ({k + 1}/{len(layers)}): frame {done}/{n}")
        elif kind == "result":
            self._apply(layer, packet[2], job)
            job["done"] += 1
        elif kind == "error":
            msg = plain_error(packet[2], f"Denoising '{layer.name}'")
            job["message"] = (msg, "error")
            notify(msg, "error")
        elif kind == "cancelled":  # keep a more specific reason (a layer was removed)
            job.setdefault("message", (f"Cancelled: {job['done']} of {len(layers)} layer(s) "
                                       "denoised; the others are unchanged.", "info"))

    def _apply(self, layer, result, job) -> None:
        if layer not in self.viewer.layers or id(layer) in job.get("restored", ()):
            return
        note = dict(job["note"])
        if job["in_place"]:
            self.session.replace_data(layer, result, note)
            return
        name = f"{layer.name}_denoised"
        for other in self.viewer.layers:
            made = other.metadata.get(META_KEY, {}).get("denoised_from")
            if other.name == name and made == layer.name and other.ndim == layer.ndim:
                other.data = result
                other.metadata = {**other.metadata, META_KEY: {"denoised_from": layer.name,
                                                               **note}}
                return
        from napari.layers import Layer

        state = output_kwargs(layer, name, {"denoised_from": layer.name, **note})
        self.viewer.add_layer(Layer.create(result, state, "image"))

    def _on_layer_removed(self, event) -> None:
        job = self._job
        if job is not None and any(event.value is ly for ly in job["layers"]):
            job["cancel"].set()
            job["message"] = (f"'{event.value.name}' was removed: denoising cancelled.", "info")

    def _on_finished(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        try:
            self._set_busy(False)
            msg, kind = job.get("message", (None, None))
            if msg is None:
                n = len(job["layers"])
                where = ("in place" if job["in_place"] else
                         "into a new layer" if n == 1 else "into new layers")
                names = ", ".join(f"'{ly.name}'" for ly in job["layers"])
                msg, kind = f"Denoised {names} {where}.", "ok"
                self.progress.setValue(1000)
                self.progress.setFormat("done")
            else:
                self.progress.setFormat("idle")
            self.status.show_message(msg, kind)
        except RuntimeError:  # the widget was deleted with its viewer
            pass

    def _set_busy(self, busy: bool) -> None:
        super()._set_busy(busy)
        self.model_bar.setEnabled(not busy)
        self._update_restore()


def restore_original(viewer: napari.viewer.Viewer) -> None:
    """Menu command (Layers ▸ Filter): restore the raw data of the selected layers that were
    denoised in place — available even when the Denoise panel is closed."""
    session = session_for(viewer)
    restored = [ly.name for ly in list(viewer.layers.selection) if session.restore(ly)]
    if restored:
        notify("Restored the original data of " + ", ".join(f"'{n}'" for n in restored))
    else:
        notify("Nothing to restore: select a layer that was denoised in place "
               "(Blind2Unblind: Denoise, in place).", "warning")
