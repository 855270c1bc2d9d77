"""The scrolled content of a panel: docked together on a laptop screen, the panels get less
height than their forms need; they then scroll instead of squeezing their rows over each other,
and the window still fits the screen."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QFrame, QScrollArea, QWidget

#: the least height a panel asks for (it scrolls its content below its own minimum): two
#: panels and napari's bars fit a 768-pixel screen
MIN_HEIGHT = 200
#: inputs that the mouse wheel would change: only once clicked (focused), else the wheel
#: scrolls the panel, so that scrolling never edits a setting on the way
WHEEL_INPUTS = (QAbstractSpinBox, QComboBox)


class Body(QWidget):
    """A panel's content. Its height for a width is the least its layout needs (word-wrapped
    lines included), so that the scroll area gives the rows what they need and the parts that
    grow (the loss plot) the room that is left, instead of scrolling through their preferred
    size."""

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt name
        lay = self.layout()
        if lay is not None and lay.hasHeightForWidth():
            return lay.minimumHeightForWidth(width)
        return super().heightForWidth(width)


class ScrollBody(QScrollArea):
    """Scrolls ``body`` vertically when the dock is lower than the body needs; the body is never
    squeezed below its minimum, so its rows keep the height they need. As wide as the body at
    the least (no horizontal scrolling) and at least :data:`MIN_HEIGHT` high."""

    def __init__(self, body: QWidget, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(body)
        body.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt name
        kind = ev.type()
        if kind == QEvent.Type.LayoutRequest and obj is self.widget():
            # rows come and go (a method's parameters): the minimum width may have changed,
            # and new inputs must not take the wheel
            self.updateGeometry()
            self._guard_inputs()
        elif (kind == QEvent.Type.Wheel and isinstance(obj, WHEEL_INPUTS)
              and not obj.hasFocus()):
            self.wheelEvent(ev)  # scroll the panel, leave the value alone
            return True
        return super().eventFilter(obj, ev)

    def _guard_inputs(self) -> None:
        for w in self.widget().findChildren(WHEEL_INPUTS):
            if w.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel gives no focus
            w.installEventFilter(self)  # once: Qt does not install a filter twice

    def _bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(self.widget().minimumSizeHint().width() + self._bar(), MIN_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        # as narrow as the body allows (room for the image), and no higher than Qt's own
        # scroll areas ask (24 lines): a panel docked below another does not claim it all
        height = min(self.widget().sizeHint().height(), 24 * self.fontMetrics().height())
        return QSize(self.minimumSizeHint().width(), max(height, MIN_HEIGHT))
