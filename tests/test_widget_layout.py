"""Both panels docked together on a laptop screen (issue 30, item 6): the napari window of
1366×768 holds the Train and the Denoise panels, with the Train panel's advanced settings
collapsed or expanded, and no row of a form is drawn over another or cut off. Helpers in
test_widget_common.py."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    TRAIN,
    _one_torch_thread,
    dock,
    noisy,
    viewer,
)

pytestmark = pytest.mark.gui

#: a common laptop screen
SCREEN = (1366, 768)


def _settle(qtbot, rounds: int = 4) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
        qtbot.wait(20)


def _rows(layout):
    """The visible widgets a layout places itself (its rows: labels and fields), each once,
    with their layout items."""
    seen = {}
    for i in range(layout.count()):
        item = layout.itemAt(i)
        w = item.widget()
        if w is not None and w.isVisible() and w not in seen:
            seen[w] = item
    return list(seen.items())


def _rect(w, root):
    """``w``'s rectangle in ``root``'s coordinates."""
    from qtpy.QtCore import QRect

    return QRect(w.mapTo(root, w.rect().topLeft()), w.size())


def _needed_height(w, item) -> int:
    """The least height the layout gives ``w`` unsqueezed, at its width (a word-wrapped label:
    all its lines)."""
    if item.hasHeightForWidth():
        return item.heightForWidth(w.width())
    return item.minimumSize().height()


def _assert_rows_apart(layout, root, what: str) -> None:
    """No two rows of ``layout`` are drawn over each other; each has the height it needs and
    lies inside the widget of the layout (nothing cut off); the same inside each row that is a
    plain container (a row of inputs, a box of rows)."""
    from qtpy.QtWidgets import QWidget

    owner = layout.parentWidget()
    box = _rect(owner, root)
    rows = _rows(layout)
    assert rows, what
    for (a, _), (b, _) in itertools.combinations(rows, 2):
        ra, rb = _rect(a, root), _rect(b, root)
        assert not ra.intersects(rb), f"{what}: {_name(a)} {ra} overlaps {_name(b)} {rb}"
    for w, item in rows:
        need = _needed_height(w, item)
        assert w.height() >= need, f"{what}: {_name(w)} is {w.height()} px high, needs {need}"
        assert box.contains(_rect(w, root)), f"{what}: {_name(w)} is cut off"
        inner = QWidget.layout(w)  # not a subclass's own layout() (TrainForm has one)
        if type(w) is QWidget and inner is not None:
            _assert_rows_apart(inner, root, f"{what} > {_name(w)}")


def _name(w) -> str:
    text = getattr(w, "text", None)
    return f"{type(w).__name__}({text()!r})" if callable(text) else type(w).__name__


@pytest.mark.parametrize("advanced", [False, True], ids=["collapsed", "expanded"])
def test_both_panels_fit_a_laptop_screen(viewer, qtbot, noisy, advanced):
    from qtpy.QtWidgets import QFormLayout

    layer = viewer.add_image(noisy, name="noisy")
    window = viewer.window._qt_window
    window.show()
    train, denoise = dock(viewer, TRAIN), dock(viewer, DENOISE)
    train.configure(layer=layer, device="cpu")  # the Plan line says what a run would do
    assert train.form.plan_label.text()
    if advanced:
        train.form.advanced.expand(animate=False)
    _settle(qtbot)
    window.resize(*SCREEN)
    _settle(qtbot)

    # (a) the docks let the window be as small as the screen, and it is
    hint = window.minimumSizeHint()
    assert hint.height() <= SCREEN[1] and hint.width() <= SCREEN[0], hint
    assert window.minimumHeight() <= SCREEN[1]
    assert window.height() <= SCREEN[1] and window.width() <= SCREEN[0], window.size()
    for panel in (train, denoise):
        assert panel.isVisible() and panel.height() > 0

    # (b) a window manager holds the window to the screen: nothing overlaps even then
    window.setMinimumSize(200, 200)
    window.setMaximumSize(*SCREEN)
    window.resize(*SCREEN)
    _settle(qtbot)
    assert window.height() <= SCREEN[1]
    f = train.form
    forms = [(f, [c for c in f.children() if isinstance(c, QFormLayout)][0], "Train form"),
             (denoise, denoise.settings.layout(), "Denoise form"),
             # the panels' parts: form, advanced settings, buttons, status, plot
             (train, f.parentWidget().layout(), "Train panel"),
             (denoise, denoise.settings.parentWidget().layout(), "Denoise panel")]
    if advanced:
        content = f.advanced.content()
        forms.append((f, content.findChild(QFormLayout), "Train advanced settings"))
    for root, layout, what in forms:
        _assert_rows_apart(layout, root, what)
    for form in (f, denoise.settings):  # no empty line takes room in a form
        from qtpy.QtWidgets import QLabel

        empty = [w for w in form.findChildren(QLabel) if w.isVisible() and not w.text()]
        assert not empty, [w.objectName() or w.parentWidget() for w in empty]
    plan = f.plan_label
    assert plan.isVisible()
    assert plan.height() >= plan.heightForWidth(plan.width()), "the Plan line is clipped"


def _wheel(widget, qtbot, down: bool = True) -> None:
    """One notch of the mouse wheel over ``widget``, as the user turns it."""
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    at = QPointF(widget.rect().center())
    ev = QWheelEvent(at, QPointF(widget.mapToGlobal(at.toPoint())), QPoint(0, 0),
                     QPoint(0, -120 if down else 120), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)
    _settle(qtbot, 1)


def _scroll_bar(widget):
    from qtpy.QtWidgets import QScrollArea

    w = widget.parentWidget()
    while w is not None and not isinstance(w, QScrollArea):
        w = w.parentWidget()
    assert w is not None, "the panel does not scroll"
    return w.verticalScrollBar()


def test_the_wheel_scrolls_the_panel_and_edits_no_setting(viewer, qtbot, noisy):
    """Scrolling a docked panel with the wheel passes over its inputs without changing them
    (their values change by the wheel only once clicked)."""
    layer = viewer.add_image(noisy, name="noisy")
    window = viewer.window._qt_window
    window.show()
    train, denoise = dock(viewer, TRAIN), dock(viewer, DENOISE)
    train.configure(layer=layer, device="cpu")
    window.resize(*SCREEN)
    _settle(qtbot)
    form = train.form
    length = form.fields["length"].widget
    bar = _scroll_bar(length)
    assert bar.maximum() > 0  # the Train panel does not fit: it scrolls
    method_index = form.method_combo.currentIndex()
    cells = form.method_fields["cells"].widget  # a row the method adds
    for w in (form.method_combo, cells, length, form.fields["patch_size"].widget,
              denoise.tta_combo):
        bar = _scroll_bar(w)
        bar.setValue(0)
        value = w.currentIndex() if hasattr(w, "currentIndex") else w.value()
        _wheel(w, qtbot)
        assert (w.currentIndex() if hasattr(w, "currentIndex") else w.value()) == value, w
        if w is not denoise.tta_combo or bar.maximum() > 0:
            assert bar.value() > 0, "the panel did not scroll"
    assert form.method_combo.currentIndex() == method_index
    assert form.options()["steps"] is None  # still the default: nothing counts as edited
    # a clicked input takes the wheel, as everywhere
    window.activateWindow()
    length.setFocus()
    qtbot.waitUntil(length.hasFocus, timeout=5000)
    before = length.value()
    _wheel(length, qtbot, down=False)
    assert length.value() > before
