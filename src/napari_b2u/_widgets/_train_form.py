"""The settings of the Train widget: the layer, its axes, the method and the parameters it offers,
the training settings, and a live line saying what the run will do.

Every training setting is an input made from its :data:`napari_b2u.config.FIELDS` spec, every
method parameter from the method's ``user_params()`` (type, range, choices, help), so the form
knows nothing of what a setting means. :meth:`TrainForm.options` gives the flat options of
:func:`~napari_b2u.config.build_config` (None: the device preset or the method's default decides)
and :meth:`TrainForm.plan` the core's :func:`~napari_b2u.train.plan.plan_training` for them — the
steps of N epochs, the patch that fits, the hold-out — never a rule of the widget's own.
"""

from __future__ import annotations

from functools import partial

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QWidget

from ..config import FIELDS, PRESETS, build_config
from ..errors import InputError
from ..methods import get_method, method_titles
from ._forms import AxesRow, ParamField, button, form_section, hbox, label_of
from ._layers import (
    axes_warnings,
    describe_layout,
    layer_note,
    layer_problem,
    layout_of,
    propose_axes,
)
from ._pickers import DeviceCombo, LayerCombo
from ._text import MODEL_FILTER, MODEL_SUFFIX, fmt_time, sentence

#: the length field holds steps or epochs (the unit box says which)
LENGTH = "length"
#: epochs probed to turn a number of steps into epochs with the core's rule (precision 1/100)
_EPOCH_PROBE = 100.0



def method_class(name: str):
    return type(get_method(name))


class TrainForm(QWidget):
    """The Train widget's settings. ``changed``: anything that changes what a run would do;
    ``method_changed``: another method; ``layer_removed(name)``: the chosen layer was
    removed from the viewer (the form then offers none rather than another one)."""

    changed = Signal()
    method_changed = Signal()
    layer_changed = Signal()
    layer_removed = Signal(str)

    def __init__(self, viewer, session, on_resume=None, on_reset=None, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.fields: dict[str, ParamField] = {}  # training settings (FIELDS names, "length")
        self.method_fields: dict[str, ParamField] = {}  # the method's user parameters
        self._edited: set[str] = set()
        self._guessed = False
        self._build(on_resume, on_reset or self.reset_defaults)
        self._on_method_changed()
        self._on_layer_changed()

    # ---- building ------------------------------------------------------------------------------
    def _field(self, name: str, **kw) -> QWidget:
        f = ParamField(FIELDS[name], parent=self, **kw)
        f.edited.connect(partial(self._mark_edited, name))
        self.fields[name] = f
        return f.widget

    def _build(self, on_resume, on_reset) -> None:
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self._build_data(form)
        self._build_method(form)
        self._build_run(form)
        self._build_advanced(on_resume, on_reset)

    def _build_data(self, form) -> None:
        """The image, the validation stack and the axes."""
        self.layer_combo = LayerCombo(self.viewer)
        self.layer_combo.setToolTip("The image to train on: every frame of a time series or "
                                    "z-stack is a training sample")
        self.layer_combo.layer_changed.connect(self._on_layer_changed)
        self.layer_combo.layer_removed.connect(self.layer_removed)
        form.addRow("Image", self.layer_combo)
        self.val_combo = LayerCombo(self.viewer, none_text="(hold out part of the image)")
        self.val_combo.setToolTip(
            "Optional separate stack for the self-supervised validation that picks the best "
            "model; by default part of the image is held out (the line 'Plan' says which)")
        self.val_combo.layer_changed.connect(self.update_plan)
        form.addRow("Validation", self.val_combo)
        self.axes_row = AxesRow(
            form, "One letter per dimension: T time, Z depth, S/I/Q other samples, C channel "
            "(denoised jointly), Y and X the image. Taken from the layer's axis labels or "
            "metadata, else guessed; edit if wrong.", self._on_axes_edited)
        self.axes_edit, self.shape_hint = self.axes_row.edit, self.axes_row.hint
        self.axes_note = self.axes_row.note

    def _build_method(self, form) -> None:
        """The method and the box its parameters are shown in."""
        self.method_combo = QComboBox()
        for name, title in method_titles().items():
            self.method_combo.addItem(title, name)
        self.method_combo.setToolTip(FIELDS["method"].help)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        form.addRow("Method", self.method_combo)
        # the method's parameters: rows of this form (their labels in line with the others),
        # from this row on
        self._form, self._method_row, self._method_rows = form, form.rowCount(), 0

    def _build_run(self, form) -> None:
        """How long and how: length, patch and batch, learning rate, device, seed, the plan."""
        self.length_unit = QComboBox()
        self.length_unit.addItem("steps", "steps")
        self.length_unit.addItem("epochs", "epochs")
        self.length_unit.setToolTip(
            "Count the training length in steps (one batch of random patches each) or in "
            "epochs (passes over the training pixels). Switching converts the number for the "
            "selected layer; the line 'Plan' shows both.")
        self.length_unit.currentIndexChanged.connect(self._on_length_unit_changed)
        length = ParamField(FIELDS["steps"], double=True, decimals=0, step=50, parent=self)
        length.edited.connect(partial(self._mark_edited, LENGTH))
        self.fields[LENGTH] = length
        form.addRow("Length", hbox(
            length.widget, self.length_unit, QLabel("time limit"),
            self._field("max_time", scale=60.0, decimals=1, off_text="off", off_none=True,
                        unit="min")))
        form.addRow("Patch, batch", hbox(self._field("patch_size", step=16),
                                         self._field("batch_size")))
        form.addRow(label_of(FIELDS["lr"]), self._field("lr", decimals=6, step=1e-4))
        self.device_combo = DeviceCombo()
        self.device_combo.currentIndexChanged.connect(self._apply_presets)
        form.addRow("Device", self.device_combo)
        form.addRow(label_of(FIELDS["seed"]), self._field("seed"))
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        self.plan_label.setToolTip("What training will do with these settings on this layer "
                                   "(napari_b2u.train.plan.plan_training)")
        form.addRow("Plan", self.plan_label)

    def _build_advanced(self, on_resume, on_reset) -> None:
        """The collapsed section: network size, validation, previews, precision, every other
        user setting of the core, autosave, resume and reset."""
        self.advanced, adv = form_section("Advanced settings")
        for name, kw in (("width", {"step": 4}), ("depth", {}),
                         ("val_fraction", {"decimals": 2, "step": 0.05}),
                         ("preview_every", {"off_text": "off", "step": 5}),
                         ("compile", {}), ("amp", {})):
            adv.addRow(label_of(FIELDS[name]), self._field(name, **kw))
        # settings for users that the core has and this form does not place: shown as well
        placed = set(self.fields) | {"method", "steps", "epochs", "autosave"}
        for name, p in FIELDS.items():
            if p.user and name not in placed:
                adv.addRow(label_of(p), self._field(name, off_text="off" if p.optional
                                                    and p.kind is str else None))
        autosave = self._field("autosave", off_text="off")
        autosave.setToolTip(
            f"A checkpoint file ({MODEL_SUFFIX}) rewritten every few minutes and at the end: if "
            "napari or the computer stops, little is lost. Continue with 'Resume…'; it also "
            "opens as a model for denoising. An existing file is refused, not overwritten.")
        self.autosave_edit = autosave
        adv.addRow("Autosave", hbox(autosave, button("…", self._choose_autosave,
                                                     "Choose the autosave file")))
        row = [button("Reset to defaults", on_reset,
                      "Show the device preset and method defaults again")]
        if on_resume is not None:
            row.insert(0, button(
                "Resume…", on_resume, "Continue training from an autosaved checkpoint of this "
                "layer's data (its settings come from the file; a larger 'Length' in steps or "
                "a time limit extends the run)"))
        adv.addRow(hbox(*row))

    def _choose_autosave(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Autosave checkpoint", "", MODEL_FILTER)
        if path:
            suffix = MODEL_SUFFIX
            self.fields["autosave"].set_value(path if path.endswith(suffix) else path + suffix)
            self._mark_edited("autosave")

    def _rebuild_method_fields(self, method) -> None:
        for _ in range(self._method_rows):
            self._form.removeRow(self._method_row)
        self.method_fields = {}
        for i, param in enumerate(method.user_params()):
            f = ParamField(param, parent=self)
            f.edited.connect(partial(self._mark_edited, param.name))
            f.set_value(param.default)
            self.method_fields[param.name] = f
            self._form.insertRow(self._method_row + i, label_of(param), f.widget)
        self._method_rows = len(self.method_fields)

    # ---- edits, presets ----------------------------------------------------------------------
    def _mark_edited(self, key: str) -> None:
        self._edited.add(key)
        self.update_plan()

    def _apply_presets(self, *_) -> None:
        """Show the device preset (and the defaults) in every field the user left alone."""
        preset = PRESETS.get(self.device_combo.device_type(), PRESETS["cpu"])
        for name, f in self.fields.items():
            key = "steps" if name == LENGTH else name
            if name in self._edited:
                continue
            f.set_value(self._shown_default(key, preset))
        for name, f in self.method_fields.items():
            if name not in self._edited:
                f.set_value(f.param.default)
        self.update_plan()

    @staticmethod
    def _shown_default(name: str, preset: dict):
        """What an untouched input shows: the device preset where the setting's default is
        "the preset" (None), else its default."""
        p = FIELDS[name]
        if p.default is None and not (p.kind is bool and p.optional):
            return preset.get(name)
        return p.default  # an optional boolean: "auto (device preset)"

    def reset_defaults(self) -> None:
        self._edited.clear()
        self._set_unit("steps")
        self._apply_presets()

    def _set_unit(self, unit: str) -> None:
        self.length_unit.blockSignals(True)
        self.length_unit.setCurrentIndex(self.length_unit.findData(unit))
        self.length_unit.blockSignals(False)
        length = self.fields[LENGTH]
        if unit == "epochs":
            length.set_param(FIELDS["epochs"], decimals=2)
        else:
            length.set_param(FIELDS["steps"], decimals=0)

    def _on_length_unit_changed(self, *_) -> None:
        # keep the same training length in the new unit, by the core's rule for this layer
        unit = self.length_unit.currentData()
        value = self.fields[LENGTH].value()
        new = None
        if unit == "epochs":
            per_epoch = self.steps_per_epoch()
            new = value / per_epoch if per_epoch and value else None
        else:
            plan = self._plan_or_none(steps=None, epochs=value)
            new = plan.steps if plan is not None else None
        self._set_unit(unit)
        if new is not None:
            self.fields[LENGTH].set_value(max(new, self.fields[LENGTH].widget.minimum()))
        self._mark_edited(LENGTH)  # a length in epochs is always the user's choice

    def _on_method_changed(self, *_) -> None:
        for name in self.method_fields:
            self._edited.discard(name)
        self._rebuild_method_fields(self.method_class())
        self._apply_presets()
        self.method_changed.emit()

    # ---- layer and axes -----------------------------------------------------------------------
    def _on_layer_changed(self) -> None:
        layer = self.layer()
        if layer_problem(layer) is None:
            chosen = self.session.chosen_axes(layer)
            axes, guessed = (chosen, False) if chosen else propose_axes(layer)
            self.axes_edit.setText(axes)
            self._guessed = guessed
        else:
            self.axes_edit.setText("")
        self._update_shape_hint()
        self.layer_changed.emit()
        self.update_plan()

    def _on_axes_edited(self, *_) -> None:
        self._guessed = False
        layer = self.layer()
        if layer_problem(layer) is None:
            self.session.choose_axes(layer, self.axes_edit.text().strip().upper())
        self._update_shape_hint()
        self.update_plan()

    def _update_shape_hint(self) -> None:
        layer = self.layer()
        notes = []
        if layer_problem(layer) is not None:
            self.shape_hint.setText("")
        else:
            try:
                self.shape_hint.setText(describe_layout(self.layout()))
            except InputError:
                self.shape_hint.setText(f"shape {tuple(layer.data.shape)}")
            note = layer_note(layer)
            notes = ([note] if note else []) + axes_warnings(layer, self.axes_edit.text(),
                                                             self._guessed)
        self.axes_row.show_notes(notes)

    # ---- what the form says --------------------------------------------------------------------
    def layer(self):
        return self.layer_combo.current_layer()

    def val_layer(self):
        return self.val_combo.current_layer()

    def layout(self):
        """The core's layout of the chosen layer with the axes shown (InputError if wrong)."""
        return layout_of(self.layer(), self.axes_edit.text())

    def method_name(self) -> str:
        return self.method_combo.currentData()

    def method_class(self):
        return method_class(self.method_name())

    def device(self) -> str:
        return self.device_combo.device()

    def length_in_epochs(self) -> bool:
        return self.length_unit.currentData() == "epochs"

    def options(self) -> dict:
        """Flat options for ``build_config``/``api.make_trainer``: the training settings and
        the method's parameters. What the user left alone is the setting's default: None for
        the device preset or the method's default."""
        out = {}
        for name, f in self.fields.items():
            if name == LENGTH:
                continue
            p = FIELDS[name]
            out[name] = f.value() if (name in self._edited or not p.optional) else p.default
        length = self.fields[LENGTH].value()
        if self.length_in_epochs():
            out["epochs"], out["steps"] = float(length), None
        else:
            out["steps"] = int(length) if LENGTH in self._edited else None
        for name, f in self.method_fields.items():
            out[name] = f.value() if name in self._edited else None
        return out

    def params(self) -> dict:
        """Keyword arguments of ``api.make_trainer`` besides the data: method, device and
        :meth:`options`."""
        return {"method": self.method_name(), "device": self.device(), **self.options()}

    def config(self, **changes):
        """The validated TrainConfig of the form (InputError naming the setting if wrong)."""
        return build_config(self.method_name(), **{**self.options(), **changes})

    def plan(self, **changes):
        """What the Trainer will do on the chosen layer with these settings (``changes``:
        other options), by the core's rule. InputError when a setting or the layer is wrong."""
        from ..train.plan import plan_training

        return plan_training(self.layout(), self.config(**changes), self.device(),
                             separate_val=self.val_layer() is not None)

    def _plan_or_none(self, **changes):
        if layer_problem(self.layer()) is not None:
            return None
        try:
            return self.plan(**changes)
        except (InputError, ValueError):
            return None

    def steps_per_epoch(self) -> float | None:
        """Steps of one pass over the training pixels of the chosen layer (None without a
        usable layer)."""
        for probe in (_EPOCH_PROBE, 1.0):
            plan = self._plan_or_none(steps=None, epochs=probe)
            if plan is not None and plan.steps:
                return plan.steps / probe
        return None

    def update_plan(self, *_) -> None:
        """Say again what the run would do (the core's plan takes well under a millisecond)."""
        if not hasattr(self, "plan_label"):
            return  # still building
        try:
            text, ok = self.describe_plan(), True
        except (InputError, ValueError) as exc:
            text, ok = sentence(str(exc)), False
        except RuntimeError:  # the Qt side was deleted (viewer closing)
            return
        self.plan_label.setText(text)
        self.plan_label.setStyleSheet("" if ok else "color: #ff7070;")
        self.changed.emit()

    def describe_plan(self) -> str:
        """The plan in words (raises InputError like :meth:`plan`)."""
        if layer_problem(self.layer()) is not None:
            return ""
        plan = self.plan()
        opts = self.options()
        parts = []
        if plan.steps:
            length = f"{plan.steps:,} steps"
            if self.length_in_epochs():
                length = f"{opts['epochs']:g} epochs = {length}"
            else:
                per_epoch = self.steps_per_epoch()
                if per_epoch:
                    length += f" (≈ {plan.steps / per_epoch:.3g} epochs)"
            parts.append(length)
        if opts.get("max_time"):
            parts.append(f"at most {fmt_time(opts['max_time'])}")
        text = (" or ".join(parts) + f" of patch {plan.patch_size} × batch "
                f"{plan.batch_size}; {plan.split}.")
        return " ".join([sentence(text), *(sentence(n) for n in plan.notes)])

    # ---- setting from code (tests, scripts) ----------------------------------------------------
    def configure(self, **values) -> None:
        """Set inputs by name: ``layer``, ``method``, ``device``, ``axes``, a TrainConfig field
        shown in the form (``steps`` or ``epochs``, ``max_time`` in seconds, ``patch_size``,
        ``lr``, ``autosave``, ...) or a parameter of the method; set values count as chosen by
        the user."""
        values = dict(values)
        if "layer" in values:
            self.layer_combo.set_layer(values.pop("layer"))
        if "method" in values:
            i = self.method_combo.findData(values.pop("method"))
            if i < 0:
                raise ValueError("unknown method; known: " + ", ".join(method_titles()))
            self.method_combo.setCurrentIndex(i)
        if "device" in values:
            self.device_combo.set_device(values.pop("device"))
        if "axes" in values:
            self.axes_edit.setText(values.pop("axes"))
            self._on_axes_edited()
        if "epochs" in values or "steps" in values:
            epochs = "epochs" in values
            self._set_unit("epochs" if epochs else "steps")
            self.fields[LENGTH].set_value(values.pop("epochs" if epochs else "steps"))
            self._edited.add(LENGTH)
        for key, value in values.items():
            f = self.fields.get(key) if key != LENGTH else None
            f = f or self.method_fields.get(key)
            if f is None:
                known = sorted([k for k in self.fields if k != LENGTH] + list(self.method_fields)
                               + ["steps", "epochs", "layer", "method", "device", "axes"])
                raise KeyError(f"unknown setting {key!r}; known: {', '.join(known)}")
            f.set_value(value)
            self._edited.add(key)
        self.update_plan()
