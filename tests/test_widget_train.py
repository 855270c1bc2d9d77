"""The Train widget: progress, plot, previews, the core's checks and plan, autosave/resume,
stopping, removed layers, closing the viewer. Helpers and fixtures in test_widget_common.py."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._session import META_KEY, session_for  # noqa: E402
from napari_b2u._widgets._words import kept_words  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    PLUGIN,
    TINY_GUI,
    TRAIN,
    WAIT,
    _one_torch_thread,
    dock,
    noisy,
    spy_packets,
    train,
    train_widget,
    viewer,
)

pytestmark = pytest.mark.gui


def test_train_and_denoise_the_sample_layer(viewer, qtbot):
    # the path a new user takes: File > Open Sample, Train (it offers the noisy stack), Denoise
    viewer.open_sample(PLUGIN, "fmdd_like")
    noisy = viewer.layers["FMDD-like noisy stack"]
    clean = viewer.layers["FMDD-like clean"]
    w = dock(viewer, TRAIN)
    assert w.layer_combo.current_layer() is noisy
    w.configure(device="cpu", steps=4, **TINY_GUI)
    assert w.axes_edit.text() == "TYX" and "20 frames of 256×256" in w.shape_hint.text()
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    model = session_for(viewer).model
    assert model is not None and model.info["steps"] == 4
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}
    # the user looks at the reference (selects it) and opens Denoise: the layer ticked is the
    # one just trained on, never the selected reference (one click would denoise it in place)
    viewer.layers.selection.active = clean
    raw = noisy.data
    d = dock(viewer, DENOISE)
    assert d.layer_list.checked_layers() == [noisy]
    assert d.in_place.isChecked()
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert noisy.data.shape == raw.shape and not np.array_equal(noisy.data, raw)
    assert clean.data.dtype != np.uint8 or META_KEY not in clean.metadata
    assert d.restore() == [noisy] and noisy.data is raw


def test_training_reports_progress_previews_plot_and_model(viewer, qtbot, noisy, tmp_path):
    from napari_b2u.methods import get_method

    b2u = type(get_method("b2u"))
    layer = viewer.add_image(noisy, name="noisy")
    viewer.dims.set_current_step(0, 5)  # previews follow the slider: frame 5
    w = train_widget(viewer, layer, steps=9)
    packets = spy_packets(w)
    assert w.start()
    assert not w.start_button.isEnabled() and w.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)

    kinds = [p.kind for p in packets]
    assert kinds[0] == "ready" and "progress" in kinds and "error" not in kinds
    assert packets[0].info.split == "1 of 8 frames held out for validation"
    assert packets[-1].event.done and packets[-1].event.step == 9
    assert w.progress.value() == 1000 and "step 9/9" in w.progress.format()
    # the plot has every step (rows travel in batches): the method's λ-independent term,
    # the schedule on its own axis under the method's label
    assert w.plot.n_points() == 9
    x, y = w.plot.curves[b2u.plot_term].getData()
    assert len(x) == 9 and np.all(np.isfinite(y))
    assert len(w.plot.sched_curve.getData()[0]) == 9
    assert w.plot.widget.getPlotItem().getAxis("right").labelText == b2u.schedule_label
    assert b2u.describe(b2u.plot_term) in w.plot.legend_texts()
    assert b2u.schedule_label in w.metrics.text()
    # previews: blind / visible / weighted layers over a central crop (half the frame) of
    # frame 5, the one under the slider
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}
    for name, ply in w.preview_layers.items():
        assert ply in viewer.layers
        assert ply.data.shape == (1, 32, 32) and np.isfinite(ply.data).all()
        assert tuple(ply.translate) == (5.0, 16.0, 16.0)
        assert ply.visible == (name == b2u.first_preview())
        assert ply.metadata[META_KEY]["preview"] == name
    # they show the network's output, not the input crop they start with
    assert not np.array_equal(w.preview_layers["weighted"].data[0],
                              noisy[5, 16:48, 16:48].astype(np.float32))
    assert viewer.layers.selection.active is not w.preview_layers["blind"]
    # the model is shared with the Denoise widget, and can be saved and loaded back
    model = session_for(viewer).model
    assert model is not None and model.info["steps"] == 9
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled()
    assert "Done" in w.status.text() and kept_words(model)[0] in w.status.text()
    path = w.model_bar.save_model(str(tmp_path / "noisy.b2u"))
    assert Path(path).is_file()
    d = dock(viewer, DENOISE)
    assert d.output_combo.count() == len(model.outputs)
    assert [d.output_combo.itemText(i) for i in range(d.output_combo.count())] == [
        b2u.describe(name) for name in model.outputs]
    assert d.layer_list.checked_layers() == [layer]  # the trained layer is ticked
    assert d.model_bar.load_model(str(path)) is not None
    assert session_for(viewer).model.info["steps"] == 9


def test_previews_also_come_by_time(viewer, qtbot, noisy, monkeypatch):
    # the core also previews every preview_seconds (so that slow steps show progress): the
    # GUI shows those previews too, not only the ones every preview_every steps
    from napari_b2u import api

    real = api.make_trainer
    monkeypatch.setattr(api, "make_trainer",
                        lambda *a, **k: real(*a, **{**k, "preview_seconds": 1e-6}))
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=4, preview_every=1000)
    packets = spy_packets(w)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    shown = [p.event.step for p in packets
             if p.kind == "progress" and p.event.previews is not None and not p.event.done]
    assert shown and min(shown) < 4  # during training, not only at the end
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}


def test_the_core_checks_the_settings_before_training_starts(viewer, qtbot):
    # one mapping: the form's options go through build_config/plan_training on the GUI thread;
    # their messages are the core's
    big = viewer.add_image(np.zeros((8, 512, 512), np.uint8), name="big")
    w = dock(viewer, TRAIN)
    w.configure(layer=big, device="cpu", epochs=1_000_000)
    assert not w.start()
    assert w.status.kind == "error" and "epochs are 112,000,000 steps" in w.status.text()
    assert not w.is_training and w.start_button.isEnabled()
    assert "more than the 100,000,000 allowed" in w.form.plan_label.text()


def test_training_length_in_epochs(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=14)
    # 8 frames of 64² (1 held out for validation), patch 32, batch 4: the core counts 7 steps
    # per epoch over the training pixels
    assert "14 steps (≈ 2 epochs)" in w.form.plan_label.text()
    w.length_unit.setCurrentIndex(w.length_unit.findData("epochs"))
    assert w.fields["length"].value() == 2.0
    assert "2 epochs = 14 steps" in w.form.plan_label.text()
    w.length_unit.setCurrentIndex(w.length_unit.findData("steps"))
    assert w.fields["length"].value() == 14
    w.configure(epochs=1)
    assert w.params()["epochs"] == 1.0 and w.params()["steps"] is None
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert session_for(viewer).model.info["steps"] == 7
    w.reset_defaults()
    assert w.length_unit.currentData() == "steps" and w.params()["steps"] is None


def test_a_patch_larger_than_the_frames_is_shrunk_as_the_plan_says(viewer, qtbot):
    # the engine shrinks an oversized patch: the form shows the core's note, nothing is refused
    small = viewer.add_image(np.random.default_rng(0).random((4, 24, 24), np.float32),
                             name="small")
    w = train_widget(viewer, small, patch_size=32, steps=2)
    plan = w.form.plan_label.text()
    assert "Patch 32 does not fit" in plan and "using 8" in plan  # the form's label
    packets = spy_packets(w)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert packets[0].info.patch_size == 8
    assert "patch_size 32 does not fit" in packets[0].info.notes[0]
    assert session_for(viewer).model.info["patch_size"] == 8


def test_autosave_and_resume_from_the_widget(viewer, qtbot, noisy, tmp_path):
    from napari_b2u import api

    layer = viewer.add_image(noisy, name="noisy")
    ck = tmp_path / "auto.b2u"
    w = train_widget(viewer, layer, steps=6, autosave=str(ck))
    assert w.params()["autosave"] == str(ck)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert ck.exists() and api.load(ck).info["steps"] == 6  # a usable model as well
    # the same file again for a fresh run is refused: an autosave rewrites its file
    assert not w.start() and "exists" in w.status.text()
    # resume from it with a longer run: training continues at step 6 up to 10; only the
    # length, time limit and autosave are passed (the checkpoint holds the rest)
    w.configure(steps=10, lr=0.5)  # a setting the resumed run ignores: no refusal
    packets = spy_packets(w)
    assert w.start(resume=str(ck))
    assert "Resuming 'noisy' from auto.b2u" in w.status.text()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    steps = [row[0] for p in packets if p.kind == "progress" for row in p.rows]
    assert steps == [7, 8, 9, 10]  # continued from the checkpoint, not restarted
    assert session_for(viewer).model.info["steps"] == 10
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}
    # a finished model file cannot be resumed: the core's message, no crash, no new model
    final = api.load(ck).save(tmp_path / "final.b2u")
    before = session_for(viewer).model
    w.configure(autosave="")
    assert w.start(resume=str(final))
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "error" and "holds no training state" in w.status.text()
    assert session_for(viewer).model is before and w.start_button.isEnabled()


def test_stop_ends_training_and_keeps_the_model(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=100_000)
    w.start()
    qtbot.waitUntil(lambda: w._run is not None and w._run.last_event is not None
                    and w._run.last_event.step >= 2, timeout=WAIT)
    w.stop()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    model = session_for(viewer).model
    assert model is not None and 2 <= model.info["steps"] < 100_000
    assert "Stopped" in w.status.text() and kept_words(model)[0] in w.status.text()
    assert w.start_button.isEnabled()


def test_removing_the_layer_stops_training_and_removes_its_previews(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    other = viewer.add_image(noisy.copy(), name="other")
    w = train_widget(viewer, layer, steps=100_000)
    w.start()
    qtbot.waitUntil(lambda: w._run is not None and w._run.last_event is not None, timeout=WAIT)
    assert w.preview_layers
    previews = list(w.preview_layers.values())
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.start_button.isEnabled()
    assert session_for(viewer).model.info["steps"] < 100_000
    # nothing of the removed layer stays behind, and the form does not switch to 'other'
    assert not any(p in viewer.layers for p in previews) and not w.preview_layers
    assert [ly.name for ly in viewer.layers] == ["other"]
    assert w.layer_combo.current_layer() is None and "'noisy' was removed" in \
        w.layer_combo.currentText()
    assert "'noisy' was removed" in w.status.text()
    assert other.data is not None


def test_removing_the_trained_layer_later_removes_its_previews(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train(qtbot, viewer, layer, steps=3)
    previews = list(w.preview_layers.values())
    assert previews and all(p in viewer.layers for p in previews)
    viewer.layers.remove(layer)
    assert len(viewer.layers) == 0 and not w.preview_layers


def test_previews_sit_just_above_their_layer_and_are_reused_between_runs(viewer, qtbot, noisy):
    # issue 30.4: another image above the training layer; the previews go just above the
    # layer they preview (on top of everything they showed one image's cells inside another)
    layer = viewer.add_image(noisy, name="noisy")
    viewer.add_image(noisy[:, ::-1].copy(), name="other")
    w = train(qtbot, viewer, layer, steps=3)
    names = [ly.name for ly in viewer.layers]
    assert names == ["noisy", "preview: blind", "preview: visible", "preview: weighted", "other"]
    # issue 30.12: they name their axes after the stack's ('TYX' here: a guess, no labels)
    assert all(tuple(p.axis_labels) == ("t", "y", "x") for p in w.preview_layers.values())
    previews = list(w.preview_layers.values())
    # a second run reuses them: no new layers
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert [ly.name for ly in viewer.layers] == names
    assert list(w.preview_layers.values()) == previews
    # the panel closed ('x') and opened again: its first run takes over the layers left
    viewer.window.remove_dock_widget(viewer.window.dock_widgets[f"{TRAIN} ({PLUGIN})"])
    viewer.layers.move(0, 5)  # and the user moved the layer to the top meanwhile
    w2 = train(qtbot, viewer, layer, steps=3)
    assert w2 is not w
    assert [ly.name for ly in viewer.layers] == ["other", "noisy", "preview: blind",
                                                "preview: visible", "preview: weighted"]
    assert all(any(p is ly for ly in viewer.layers) for p in previews)


def test_closing_the_viewer_during_training_stops_the_thread(make_napari_viewer, qtbot, noisy):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=100_000)
    w.start()
    qtbot.waitUntil(lambda: w._run is not None and w._run.last_event is not None, timeout=WAIT)
    ctl = w._run.ctl
    trainer = ctl.trainer
    viewer.close()
    # napari quits the worker; the trainer is stopped, keeps its model and the thread ends
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=WAIT)
    qtbot.waitUntil(lambda: trainer.state.result is not None, timeout=WAIT)  # the model is kept
    assert ctl.stop_requested.is_set() and trainer.stopping


def test_a_single_channel_rgb_layer_is_trained_on_its_channel(viewer, qtbot, noisy):
    # a grey image exported as a colour-mapped RGB: its one channel is used, with a note
    grey = np.repeat(noisy[0][..., None], 3, axis=-1)
    rgb = viewer.add_image(grey, rgb=True, name="exported")
    w = train_widget(viewer, rgb, steps=2, patch_size=16)
    assert w.axes_edit.text() == "YX" and "1 frame of 64×64" in w.shape_hint.text()
    assert "R = G = B" in w.form.axes_note.text()
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "ok", w.status.text()
    model = session_for(viewer).model
    assert model.n_channels == 1 and model.info["axes"] == "YX"
    for ply in w.preview_layers.values():
        assert ply.data.shape == (32, 32)


def test_an_unusable_selected_layer_is_passed_over_with_a_reason(viewer, qtbot, noisy):
    # issue 30.5: the selected layer is a true-colour RGB image; the Train panel picks the
    # first usable one and says which and why, the Denoise panel says why it is not ticked
    viewer.add_image(noisy, name="noisy")
    photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rgb = viewer.add_image(photo, rgb=True, name="photo")
    assert viewer.layers.selection.active is rgb
    w = dock(viewer, TRAIN)
    assert w.layer_combo.current_layer() is viewer.layers["noisy"]
    text = w.status.text()
    assert "'noisy' is chosen" in text and "'photo' is a true-colour RGB" in text, text
    assert w.status.kind == "warning"
    w.configure(layer=rgb)
    assert w.status.kind == "error" and "true-colour RGB" in w.status.text()
    d = dock(viewer, DENOISE)
    assert d.layer_list.checked_layers() == []
    assert "Not ticked: 'photo' is a true-colour RGB" in d.status.text()


def test_bad_choices_give_a_message_and_no_crash(viewer, qtbot, tiny_model):
    w = dock(viewer, TRAIN)
    d = dock(viewer, DENOISE)
    # no layer at all
    assert not w.start() and "No image layer" in w.status.text()
    assert not d.denoise() and "No model yet" in d.status.text()
    # a Labels layer
    labels = viewer.add_labels(np.zeros((64, 64), np.int32), name="cells")
    w.configure(layer=labels)
    assert "Labels layer" in w.status.text()
    assert not w.start() and "Labels layer" in w.status.text()
    # a true-colour RGB layer
    photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rgb = viewer.add_image(photo, rgb=True, name="photo")
    w.configure(layer=rgb)
    assert not w.start() and "true-colour RGB" in w.status.text()
    # nonsense axes
    small = viewer.add_image(np.random.default_rng(0).random((4, 24, 24), np.float32),
                             name="small")
    w.configure(layer=small, axes="QQ")
    assert not w.start() and "Axes" in w.status.text()
    # validation on the training layer itself
    w.configure(axes="TYX", device="cpu")
    w.val_combo.set_layer(small)
    assert not w.start() and "Validation" in w.status.text()
    w.val_combo.set_layer(None)
    assert not w.is_training and w.start_button.isEnabled()
    # frames too small for the network: the core's plan refuses them before anything starts
    tiny = viewer.add_image(np.random.default_rng(0).random((3, 12, 12), np.float32),
                            name="tiny")
    w.configure(layer=tiny, axes="TYX", steps=3)
    assert not w.start() and w.status.kind == "error" and "12x12" in w.status.text()
    # data the core refuses once it reads it (every frame constant): said, and recovered
    flat = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="flat")
    w.reset_defaults()
    w.configure(layer=flat, axes="TYX", device="cpu", steps=3, width=16, depth=2)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "error" and "constant" in w.status.text()
    assert w.start_button.isEnabled() and session_for(viewer).model is None
    assert not any(ly.name.startswith("preview") for ly in viewer.layers)
    # denoising: a model but nothing ticked, then unusable layers ticked
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d.set_layers([])
    assert not d.denoise() and "No layer ticked" in d.status.text()
    d.set_layers([labels])
    assert not d.denoise() and "Labels layer" in d.status.text()
    d.set_layers([rgb])
    assert not d.denoise() and "RGB" in d.status.text()
    assert not d.is_busy and d.denoise_button.isEnabled()


def test_correlated_noise_is_detected_and_said_when_training_starts(viewer, qtbot):
    """Issue 18: the Train panel says what it measured and which blind spot it uses."""
    from napari_b2u.sample_data import fmdd_like_stack

    noisy, _ = fmdd_like_stack(6, (96, 96), corr_x=0.35, seed=2, dtype=np.float32)
    layer = viewer.add_image(noisy, name="confocal")
    w = train_widget(viewer, layer, steps=2)
    packets = spy_packets(w)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    said = " ".join(packets[0].info.notes)
    assert "noise correlated along X" in said and "horizontal blind line (x-line:3)" in said
    assert session_for(viewer).model.method_params["mask"] == "x-line:3"


def test_stack_context_from_both_panels(viewer, qtbot, noisy):
    """*stack context* (a FIELDS setting in the advanced section) trains a model that sees one
    neighbouring frame on each side along T; the status says so; the Denoise panel then
    denoises every frame with its neighbours — the same pixels as the core on the stack."""
    layer = viewer.add_image(noisy, name="noisy")
    raw = layer.data
    w = train_widget(viewer, layer, steps=3, context="1")
    assert w.params()["context"] == "1"
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    model = session_for(viewer).model
    assert model is not None and model.context == {"frames": 1, "axis": "T"}
    d = dock(viewer, DENOISE)
    assert d.layer_list.checked_layers() == [layer]
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data.shape == raw.shape and not np.array_equal(layer.data, raw)
    np.testing.assert_array_equal(layer.data, model.denoise(raw, axes="TYX"))


#: what the panels must not show: a setting's code name or assignment, a raw array
CODE = (re.compile(r"="), re.compile(r"\b[a-z]+_[a-z_]+\b"), re.compile(r"\[[\d.,\s-]*\]"))


def _said(w, viewer) -> list:
    """Everything the Train panel says while it trains: status lines, the Plan line, the model's
    name in the model bar (wrapped around show_message before the start)."""
    said = [w.form.plan_label.text()]
    real = w.status.show_message

    def spy(text, kind="info"):
        said.append(text)
        real(text, kind)

    w.status.show_message = spy
    return said


def test_the_train_panel_speaks_in_its_own_words(viewer, qtbot, noisy):
    """Issue 30 item 8: no code names (floor='none', val_fraction=0, k=1, gauss_sigma [0.411],
    the core's 'kept the last, also best by validation (step 27), blended … (weight 0.97)')
    in the panel; the kept weights said in a sentence, the clipping note with what to do."""
    layer = viewer.add_image(noisy, name="noisy")  # 15 % of its pixels are clipped at 0
    w = train_widget(viewer, layer, steps=6, floor="gauss")
    said = _said(w, viewer)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    model = session_for(viewer).model
    assert model.blend is not None  # the Gaussian floor was blended in: its words are tested
    final = w.status.text()
    assert final.startswith("Done: kept the network's"), final
    assert "blended with a Gaussian filter (σ" in final and "% network" in final
    assert "(weight" not in final and "also best by validation (step" not in final
    clipping = next(t for t in said if "clipped at the lower bound" in t)
    assert "acquire without clipping: a camera offset above 0" in clipping
    assert "Stack context along T" in " ".join(said)  # the context gains, without k=1
    # a calibrated filter: its σ in words, not gauss_sigma [0.564]
    w2 = train_widget(viewer, layer, method="gauss")
    said += _said(w2, viewer)
    assert w2.start()
    qtbot.waitUntil(lambda: not w2.is_training, timeout=WAIT)
    assert "Gaussian filter σ" in w2.status.text() and " px." in w2.status.text()
    said.append(session_for(viewer).model_source)
    # frames too small: the plan's refusal names the setting by its label
    tiny = viewer.add_image(np.random.default_rng(0).random((3, 12, 12), np.float32),
                            name="tiny")
    w.configure(layer=tiny, axes="TYX", method="b2u", depth=4, steps=3)
    assert not w.start() and "Validation fraction: 0" in w.status.text(), w.status.text()
    said += [w.form.plan_label.text(), w.status.text()]
    for text in said:
        for code in CODE:
            assert not code.search(text), (code.pattern, text)
