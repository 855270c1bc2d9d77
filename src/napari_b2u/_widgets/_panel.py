"""The base of the dock widgets and their background workers: a status line, refusals, the
action row (Start/Stop, Denoise/Cancel) with a progress bar, and shutting the worker down when
napari takes the panel away or quits."""

from __future__ import annotations

from functools import partial

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QFormLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ._forms import button, hbox
from ._names import PLUGIN, PLUGIN_TITLE
from ._scroll import Body, ScrollBody
from ._session import session_for, unwrap
from ._text import StatusLabel, notify


class Panel(QWidget):
    """Base of the dock widgets. napari gives plugins a proxy of the viewer; the panel keeps the
    viewer itself (:func:`~._session.unwrap`), so that layers compare by identity. Subclasses
    lay their content out in ``self.body``, which scrolls (:class:`ScrollBody`)."""

    status: StatusLabel
    settings: QWidget  # the form, disabled while busy
    progress: QProgressBar
    _go: QPushButton  # Start / Denoise
    _halt: QPushButton  # Stop / Cancel

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self._locked: list[QWidget] = []  # disabled while busy
        self.body = Body()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = ScrollBody(self.body)
        outer.addWidget(self.scroll)

    def _settings_form(self, layout) -> QFormLayout:
        self.settings = QWidget()
        form = QFormLayout(self.settings)
        form.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.settings)
        self._locked.append(self.settings)
        return form

    def _action_row(self, layout, go: tuple, halt: tuple) -> tuple[QPushButton, QPushButton]:
        """The Start/Stop (Denoise/Cancel) buttons, then a progress bar. ``go`` and ``halt``
        are (text, slot) and (text, slot, tooltip)."""
        self._go = button(*go)
        self._halt = button(*halt)
        self._halt.setEnabled(False)
        layout.addWidget(hbox(self._go, self._halt))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        return self._go, self._halt

    def _set_busy(self, busy: bool) -> None:
        self._go.setEnabled(not busy)
        self._halt.setEnabled(busy)
        for w in self._locked:
            w.setEnabled(not busy)

    def shutdown(self) -> None:
        """Stop the running worker, if any (subclasses)."""

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.shutdown()
        return super().event(ev)

    def _refuse(self, message: str) -> None:
        self.status.show_message(message, "error")
        notify(message, "warning")


def dock_title(widget_name: str) -> str:
    """The title napari's Plugins menu gives the dock of ``widget_name``."""
    return f"{widget_name} ({PLUGIN_TITLE})"


def open_panel(viewer, widget_name: str, factory):
    """Show the dock of ``widget_name`` (made by ``factory(viewer)`` if it is not open) under
    the title the Plugins menu gives it, so that the menu finds and toggles the same dock.
    (``add_plugin_dock_widget`` titles it with the package name instead, and the menu then
    opened a second panel.) Returns the panel."""
    window = unwrap(viewer).window
    docks = getattr(window, "dock_widgets", {})
    for title in (dock_title(widget_name), f"{widget_name} ({PLUGIN})"):
        widget = docks.get(title)
        if widget is not None:
            dock = widget.parent()
            if dock is not None:
                dock.show()
                dock.raise_()
            return widget
    widget = factory(viewer)
    window.add_dock_widget(widget, name=dock_title(widget_name), area="right")
    return widget


def start_worker(title: str, gen, on_yielded, on_finished, stop):
    """Run the generator ``gen`` in a napari thread worker (not started yet: connect more
    signals, then ``.start()``). ``title`` names the task in napari's close dialog; ``stop``
    asks the job to end and is called, with closing ``gen``, when napari aborts the worker
    (the GUI keeps ``gen`` for that: the worker only stops at a yield and drops it)."""
    from napari.qt.threading import create_worker

    from ._prefs import use_cpu_threads

    use_cpu_threads()  # napari's Preferences ▸ Blind2Unblind ▸ CPU threads

    def job():
        return (yield from gen)

    job.__qualname__ = f"{PLUGIN} {title}"
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
    except ValueError:  # still executing: the stop request ends it within the current step
        pass
