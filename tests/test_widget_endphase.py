"""The Train panel during the end phase of a run: it says what is being done after the last step
(the weights' choice, the comparison with a Gaussian filter) and Stop there keeps the model at
once (issue 30, item 1)."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import threading

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._session import session_for  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    WAIT,
    _one_torch_thread,
    noisy,
    spy_packets,
    train_widget,
    viewer,
)

pytestmark = pytest.mark.gui


def _formats(widget):
    """Every text the progress bar showed."""
    seen, set_format = [], widget.progress.setFormat

    def spy(text):
        seen.append(text)
        set_format(text)
    widget.progress.setFormat = spy
    return seen


def test_the_panel_says_what_the_end_phase_does(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=8, floor="gauss")
    packets, formats = spy_packets(w), _formats(w)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    phases = [p.event.phase for p in packets if p.kind == "progress" and p.event.phase]
    assert any(p.startswith("comparing with a Gaussian filter") for p in phases), phases
    assert any("comparing with a Gaussian filter" in f and "step 8/8" in f for f in formats)
    # the final message counts the whole run, the end phase included
    model = session_for(viewer).model
    assert model.info["seconds"] >= packets[-1].event.elapsed - 0.01
    assert "Done" in w.status.text()


def test_stop_in_the_end_phase_keeps_the_model_at_once(viewer, qtbot, noisy, monkeypatch):
    """Stop pressed while the panel says the model is being chosen: the run ends without the
    comparisons and keeps the weights chosen so far."""
    from napari_b2u.train import endphase

    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=8, floor="gauss")
    packets = spy_packets(w)
    # the worker waits in the end phase's first stage until the test has pressed Stop, so the
    # stop lands there whatever the machine's speed
    pressed, prepare = threading.Event(), endphase.EndPlan.prepare

    def waiting_prepare(plan):
        pressed.wait(WAIT / 1000)
        return prepare(plan)
    monkeypatch.setattr(endphase.EndPlan, "prepare", waiting_prepare)
    handler = w._on_packet

    def stop_in_the_end_phase(packet):
        handler(packet)
        if packet.kind == "progress" and packet.event.phase and not pressed.is_set():
            w.stop()
            pressed.set()
    w._on_packet = stop_in_the_end_phase
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert pressed.is_set()
    last = packets[-1].event
    assert last.done and last.stopped and "stopped while choosing the model" in last.message
    model = session_for(viewer).model
    assert model is not None and model.info["steps"] == 8
    assert "floor" not in model.info  # no comparison with the filter after the stop
    assert w.status.text().startswith("Stopped while choosing the model: kept the network's")
