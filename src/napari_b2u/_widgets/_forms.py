"""Form building blocks: buttons, rows, collapsible sections, and an input widget for any typed
:class:`~napari_b2u.params.Param` (its range, choices and help come from the spec, so the
widgets hold no knowledge of what a setting means)."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ._text import sentence

_INT_MAX = 2**31 - 1  # QSpinBox holds C ints


def button(text: str, slot, tip: str = "") -> QPushButton:
    b = QPushButton(text)

    def clicked(*_):  # without Qt's "checked" argument
        slot()

    b.clicked.connect(clicked)
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


def form_section(title: str, parent=None) -> tuple[QCollapsible, QFormLayout]:
    """A collapsed section (superqt QCollapsible) holding a form."""
    box = QCollapsible(title, parent)
    inner = QWidget()
    form = QFormLayout(inner)
    form.setContentsMargins(0, 0, 0, 0)
    box.addWidget(inner)
    return box, form


def label_of(param) -> str:
    title = param.title
    return title[:1].upper() + title[1:]


def tooltip_of(param, extra: str = "") -> str:
    text = param.help[:1].upper() + param.help[1:] if param.help else label_of(param)
    return f"{text}{extra} ({param.allowed()})"


class ParamField(QObject):
    """The input for one :class:`Param`: a spin box (int, float) with the spec's range, a combo
    box for choices and for optional booleans (auto / on / off), a check box for booleans, a
    line edit for free text. ``edited`` is emitted when the user changes the value (not when
    :meth:`set_value` does). ``scale`` shows the value in other units (seconds as minutes);
    ``off_text`` names the lowest value of a number (``off_none``: it then means None)."""

    edited = Signal()

    def __init__(self, param, *, decimals: int | None = None, step: float | None = None,
                 scale: float = 1.0, off_text: str | None = None, off_none: bool = False,
                 unit: str = "", double: bool = False, parent=None):
        super().__init__(parent)
        self.param = param
        self.scale = scale
        self.off_text = off_text
        self.off_none = off_none
        self._quiet = False
        kind = param.kind
        if param.choices is not None or (kind is bool and param.optional):
            w = QComboBox()
            if kind is bool:
                for text, value in (("auto (device preset)", None), ("on", True),
                                    ("off", False)):
                    w.addItem(text, value)
            else:
                if param.optional:  # None: the default chosen elsewhere, or none at all
                    w.addItem(off_text or "none", None)
                for value in param.choices:
                    w.addItem(str(value), value)
            w.currentIndexChanged.connect(self._changed)
        elif kind is bool:
            w = QCheckBox()
            w.toggled.connect(self._changed)
        elif kind in (int, float):
            w = QSpinBox() if kind is int and scale == 1.0 and not double else QDoubleSpinBox()
            if isinstance(w, QDoubleSpinBox):
                w.setDecimals((0 if kind is int else 3) if decimals is None else decimals)
            self._set_range(w, param)
            if step is not None:
                w.setSingleStep(step)
            if off_text:
                w.setSpecialValueText(off_text)
            if unit:
                w.setSuffix(f" {unit}")
            w.valueChanged.connect(self._changed)
        else:
            w = QLineEdit()
            w.setPlaceholderText(off_text or "")
            w.textEdited.connect(self._changed)
        w.setToolTip(tooltip_of(param))
        self.widget = w

    def _set_range(self, w, param) -> None:
        lo = -_INT_MAX if param.low is None else param.low / self.scale
        hi = _INT_MAX if param.high is None else param.high / self.scale
        if isinstance(w, QSpinBox):
            lo, hi = max(int(lo), -_INT_MAX), min(int(hi), _INT_MAX)
            if param.low_open:
                lo += 1
        else:
            tick = 10.0 ** -w.decimals()
            if param.low_open and not self.off_none:
                lo += tick
        w.setRange(lo, hi)

    def set_param(self, param, decimals: int | None = None) -> None:
        """Use another spec for the same input (e.g. the length in epochs instead of steps)."""
        self.param = param
        w = self.widget
        if decimals is not None and isinstance(w, QDoubleSpinBox):
            w.setDecimals(decimals)
        self._quiet = True
        try:
            self._set_range(w, param)
        finally:
            self._quiet = False
        w.setToolTip(tooltip_of(param))

    def _changed(self, *_) -> None:
        if not self._quiet:
            self.edited.emit()

    def value(self):
        """The value in the Param's type and units (None: 'off'/'auto')."""
        w, kind = self.widget, self.param.kind
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QLineEdit):
            text = w.text().strip()
            return text or None
        v = w.value()
        if self.off_none and v == w.minimum():
            return None
        v = v * self.scale
        return int(round(v)) if kind is int else float(v)

    def set_value(self, value) -> None:
        """Show ``value`` (in the Param's units; None: 'off'/'auto') without counting it as the
        user's edit."""
        w = self.widget
        self._quiet = True
        try:
            if isinstance(w, QComboBox):
                i = w.findData(value)
                if i < 0:
                    raise ValueError(f"{self.param.name}: {value!r} is not one of the choices")
                w.setCurrentIndex(i)
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QLineEdit):
                w.setText("" if value is None else str(value))
            else:
                v = w.minimum() if value is None else value / self.scale
                w.setValue(int(round(v)) if isinstance(w, QSpinBox) else float(v))
        finally:
            self._quiet = False

    def setEnabled(self, on: bool) -> None:  # noqa: N802 - Qt name
        self.widget.setEnabled(on)


#: the colour of warnings under a form row
WARNING_STYLE = "color: #e0b050;"


class AxesRow:
    """The axes row both panels show: the axes string (editable), a hint beside it (the layout
    in words) and a warning line below it (implausible or guessed axes), hidden when empty."""

    def __init__(self, form, tooltip: str, on_edited):
        self.edit = QLineEdit()
        self.edit.setToolTip(tooltip)
        self.edit.textEdited.connect(on_edited)
        self.hint = QLabel()
        form.addRow("Axes", hbox(self.edit, self.hint))
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet(WARNING_STYLE)
        self.note.setVisible(False)
        form.addRow(self.note)

    def show_notes(self, notes) -> None:
        self.note.setText("\n".join(sentence(n) for n in notes))
        self.note.setVisible(bool(notes))
