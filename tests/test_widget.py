"""The napari plugin: manifest, sample data, Train and Denoise widgets, shutdown, screenshots.

Runs headless under Xvfb (pytest-xvfb starts it); napari needs OpenGL, so not with
QT_QPA_PLATFORM=offscreen. Set B2U_DOC_SCREENSHOTS=1 to write the user guide's screenshots into
docs/images/ (a longer, nicer training run); otherwise they go to a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._layers import camera_of  # noqa: E402
from napari_b2u._widgets._session import META_KEY, session_for  # noqa: E402
from napari_b2u.methods import method_titles  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN = "napari-b2u"
TRAIN = "Blind2Unblind: Train"
DENOISE = "Blind2Unblind: Denoise"
#: a network small enough for CPU tests (as in conftest.TINY)
TINY_GUI = dict(width=16, depth=2, patch_size=32, batch_size=4, preview_every=3)
WAIT = 60_000  # ms; generous: CPU cores are shared
DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def train_widget(viewer, layer, **settings):
    widget = dock(viewer, TRAIN)
    widget.configure(layer=layer, device="cpu", **{**TINY_GUI, **settings})
    return widget


def spy_packets(widget):
    """Record what the training worker sends to the GUI (connected at start)."""
    seen = []
    handler = widget._on_packet

    def spy(packet):
        seen.append(packet)
        handler(packet)

    widget._on_packet = spy
    return seen


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, 2 spinning OpenMP threads per
    process make a tiny training step ~20x slower (measured: 1.9 s vs 0.1 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def noisy(small_stack):
    return small_stack[0].copy()  # (8, 64, 64) uint8


# ---- manifest and samples ---------------------------------------------------------------------
def test_manifest_validates_and_declares_everything():
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution(PLUGIN)
    mf.validate_imports()
    c = mf.contributions
    assert {w.display_name for w in c.widgets} == {TRAIN, DENOISE}
    assert {s.key for s in c.sample_data} == {"fmdd_like", "dsb2018_nuclei"}
    assert c.readers[0].filename_patterns == ["*.b2u"]
    menu = {item.command for item in c.menus["napari/layers/filter"]}
    assert {"napari-b2u.denoise_widget", "napari-b2u.restore_original"} <= menu


def test_widgets_load_from_manifest(viewer):
    from napari_b2u._widgets import DenoiseWidget, TrainWidget

    assert isinstance(dock(viewer, TRAIN), TrainWidget)
    assert isinstance(dock(viewer, DENOISE), DenoiseWidget)


def test_sample_data(viewer):
    import tifffile

    viewer.open_sample(PLUGIN, "fmdd_like")
    noisy, clean = viewer.layers
    assert noisy.data.shape == (20, 256, 256) and noisy.data.dtype == np.uint8
    assert clean.data.shape == (256, 256)
    viewer.open_sample(PLUGIN, "dsb2018_nuclei")
    nuclei = viewer.layers[-1]
    src = Path(__file__).resolve().parents[1] / "src/napari_b2u/sample_files/dsb2018_nuclei.tif"
    assert nuclei.data.shape == (512, 512) and nuclei.data.dtype == np.uint16
    assert np.array_equal(nuclei.data, tifffile.imread(src))


def test_train_and_denoise_the_sample_layer(viewer, qtbot):
    # the path a new user takes: File > Open Sample, Train, Denoise
    viewer.open_sample(PLUGIN, "fmdd_like")
    noisy, clean = viewer.layers
    w = train_widget(viewer, noisy, steps=4)
    assert w.axes_edit.text() == "TYX" and "20 frames of 256×256" in w.shape_hint.text()
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    model = session_for(viewer).model
    assert model is not None and model.info["steps"] == 4
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}
    raw = noisy.data
    d = dock(viewer, DENOISE)
    d.set_layers([noisy])
    d.in_place.setChecked(True)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert noisy.data.shape == raw.shape and not np.array_equal(noisy.data, raw)
    assert d.restore() == [noisy] and noisy.data is raw


def test_axes_inference(viewer):
    from napari_b2u._widgets._layers import infer_axes

    assert infer_axes(viewer.add_image(np.zeros((8, 8)))) == "YX"
    assert infer_axes(viewer.add_image(np.zeros((2, 8, 8)))) == "TYX"
    assert infer_axes(viewer.add_image(np.zeros((2, 3, 8, 8)))) == "TZYX"
    labelled = viewer.add_image(np.zeros((2, 3, 8, 8)), axis_labels=("z", "c", "y", "x"))
    assert infer_axes(labelled) == "ZCYX"
    meta = viewer.add_image(np.zeros((3, 8, 8)), metadata={"axes": "cyx"})
    assert infer_axes(meta) == "CYX"


# ---- training ---------------------------------------------------------------------------------
def test_loss_plot_shows_negative_likelihood_losses(qtbot):
    # B2S and D-BSN minimize negative log-likelihoods: a log axis cannot show them, so the
    # plot goes linear and keeps the true values (no clamping to a tiny positive number)
    from napari_b2u._widgets._plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.reset(("loss", "mse"), "lambda")
    plot.add([(1, {"loss": 0.5, "mse": 0.02}, 2.0, None)])
    assert plot.log_scale
    plot.add([(2, {"loss": -4.0, "mse": 0.01}, 2.1, 0.03), (3, {"loss": -4.5, "mse": 0.01},
                                                             2.2, None)])
    assert not plot.log_scale
    x, y = plot.curves["loss"].getData()
    np.testing.assert_allclose(x, [1, 2, 3])
    # exponential smoothing with weight 0.1 on the raw values
    np.testing.assert_allclose(y, [0.5, 0.5 + 0.1 * (-4.0 - 0.5), 0.05 + 0.1 * (-4.5 - 0.05)])
    assert not plot.widget.getPlotItem().getAxis("right").logMode  # λ stays linear
    plot.reset(("loss",), None)  # a new run starts on a log axis again
    assert plot.log_scale


def test_training_reports_progress_previews_plot_and_model(viewer, qtbot, noisy, tmp_path):
    layer = viewer.add_image(noisy, name="noisy")
    viewer.dims.set_current_step(0, 5)  # previews follow the slider: frame 5
    w = train_widget(viewer, layer, steps=9)
    packets = spy_packets(w)
    assert w.start()
    assert not w.start_button.isEnabled() and w.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)

    kinds = [p.kind for p in packets]
    assert kinds[0] == "ready" and "progress" in kinds and "error" not in kinds
    assert packets[-1].event.done and packets[-1].event.step == 9
    assert w.progress.value() == 1000 and "step 9/9" in w.progress.format()
    # the loss plot has every step (rows travel in batches), λ and the loss terms
    assert w.plot.n_points() == 9
    x, y = w.plot.curves["loss"].getData()
    assert len(x) == 9 and np.all(np.isfinite(y))
    assert len(w.plot.sched_curve.getData()[0]) == 9
    # previews: blind / visible / weighted layers over a central crop (half the frame) of
    # frame 5, the one under the slider
    assert set(w.preview_layers) == {"blind", "visible", "weighted"}
    for name, ply in w.preview_layers.items():
        assert ply in viewer.layers
        assert ply.data.shape == (1, 32, 32) and np.isfinite(ply.data).all()
        assert tuple(ply.translate) == (5.0, 16.0, 16.0)
        assert ply.visible == (name == "weighted")
        assert ply.metadata[META_KEY]["preview"] == name
    assert viewer.layers.selection.active is not w.preview_layers["blind"]
    # the model is shared with the Denoise widget, and can be saved and loaded back
    model = session_for(viewer).model
    assert model is not None and model.info["steps"] == 9
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled()
    assert "Done" in w.status.text()
    path = w.model_bar.save_model(str(tmp_path / "noisy.b2u"))
    assert Path(path).is_file()
    d = dock(viewer, DENOISE)
    assert d.output_combo.count() == len(model.outputs)
    assert d.layer_list.checked_layers() == [layer]  # the trained layer is ticked
    assert d.model_bar.load_model(str(path)) is not None
    assert session_for(viewer).model.info["steps"] == 9


@pytest.mark.parametrize("method", [m for m in method_titles() if m != "b2u"])
def test_every_registered_method_trains_from_the_widget(viewer, qtbot, noisy, method):
    from napari_b2u.methods import get_method

    w = train_widget(viewer, viewer.add_image(noisy, name="noisy"), method=method, steps=3)
    assert w.fields["cells"].isEnabled() == ("cells" in get_method(method).defaults)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "ok", w.status.text()
    assert set(w.preview_layers) == set(get_method(method).preview_names)
    model = session_for(viewer).model
    assert model.method_name == method
    # methods that fit a noise model say so to the user (B2S: a photon-transfer estimate)
    assert ("Fitted noise" in w.status.text()) == ("noise_gain" in model.readout())


def test_training_length_in_epochs(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=14)
    # 8 frames of 64², patch 32, batch 4: 8 steps per epoch over the layer's pixels
    w.length_unit.setCurrentIndex(w.length_unit.findData("epochs"))
    assert w.fields["steps"].value() == 2  # 14 steps shown as 2 epochs (rounded)
    w.length_unit.setCurrentIndex(w.length_unit.findData("steps"))
    assert w.fields["steps"].value() == 16
    w.configure(epochs=1)
    assert w.params()["epochs"] == 1.0 and w.params()["steps"] is None
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    # the core counts the training pixels only (one of the 8 frames is held out): 7 steps
    assert session_for(viewer).model.info["steps"] == 7
    w.reset_defaults()
    assert w.length_unit.currentData() == "steps" and w.params()["steps"] is None


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
    # resume from it with a longer run: training continues at step 6 up to 10
    w.configure(steps=10)
    packets = spy_packets(w)
    assert w.start(resume=str(ck))
    assert "Resuming 'noisy' from auto.b2u" in w.status.text()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    steps = [row[0] for p in packets if p.kind == "progress" for row in p.rows]
    assert steps == [7, 8, 9, 10]  # continued from the checkpoint, not restarted
    assert session_for(viewer).model.info["steps"] == 10
    # a finished model file cannot be resumed: a plain message, no crash
    final = api.load(ck).save(tmp_path / "final.b2u")
    w.configure(autosave="")
    assert not w.start(resume=str(final)) and "holds no training state" in w.status.text()


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
    assert "Stopped" in w.status.text()
    assert w.start_button.isEnabled()


def test_removing_the_layer_stops_training(viewer, qtbot, noisy):
    layer = viewer.add_image(noisy, name="noisy")
    w = train_widget(viewer, layer, steps=100_000)
    w.start()
    qtbot.waitUntil(lambda: w._run is not None and w._run.last_event is not None, timeout=WAIT)
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.start_button.isEnabled()
    assert session_for(viewer).model.info["steps"] < 100_000


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
    qtbot.waitUntil(lambda: trainer._result is not None, timeout=WAIT)  # the model is kept
    assert ctl.stop_requested.is_set() and trainer.stopping


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
    # an RGB layer
    rgb = viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="photo")
    w.configure(layer=rgb)
    assert not w.start() and "RGB" in w.status.text()
    # frames smaller than the patch
    small = viewer.add_image(np.random.default_rng(0).random((4, 24, 24), np.float32),
                             name="small")
    w.configure(layer=small, patch_size=32)
    assert not w.start() and "smaller than the patch size 32" in w.status.text()
    # nonsense axes
    w.configure(axes="QQ")
    assert not w.start() and "Axes" in w.status.text()
    # validation on the training layer itself
    w.configure(axes="TYX", patch_size=16)
    w.val_combo.set_layer(small)
    assert not w.start() and "Validation" in w.status.text()
    w.val_combo.setCurrentIndex(0)
    assert not w.is_training and w.start_button.isEnabled()
    # a frame too small for the network: refused by the core, in the worker, and recovered
    tiny = viewer.add_image(np.random.default_rng(0).random((3, 12, 12), np.float32),
                            name="tiny")
    w.reset_defaults()
    w.configure(layer=tiny, axes="TYX", device="cpu", steps=3)
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "error" and "12x12" in w.status.text()
    assert w.start_button.isEnabled() and session_for(viewer).model is None
    assert not any(k.startswith("preview") for k in [ly.name for ly in viewer.layers])
    # denoising: a model but nothing ticked, then unusable layers ticked
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d.set_layers([])
    assert not d.denoise() and "No layer ticked" in d.status.text()
    d.set_layers([labels])
    assert not d.denoise() and "Labels layer" in d.status.text()
    d.set_layers([rgb])
    assert not d.denoise() and "RGB" in d.status.text()
    assert not d.is_busy and d.denoise_button.isEnabled()


# ---- denoising --------------------------------------------------------------------------------
def denoise(qtbot, viewer, model, layers, in_place=True, **options):
    session_for(viewer).set_model(model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers(layers)
    (d.in_place if in_place else d.new_layer).setChecked(True)
    if "output" in options:
        d.output_combo.setCurrentIndex(d.output_combo.findData(options.pop("output")))
    for key, value in options.items():
        {"batch": d.batch_spin, "tile": d.tile_spin}[key].setValue(value)
    assert d.denoise()
    return d


def test_denoise_in_place_and_restore_bit_exact(viewer, qtbot, noisy, tiny_model):
    layer = viewer.add_image(noisy, name="noisy")
    raw = layer.data
    d = denoise(qtbot, viewer, tiny_model, [layer])
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data.dtype == np.uint8 and layer.data.shape == noisy.shape
    assert not np.array_equal(layer.data, noisy)
    # the (T, Y, X) stack is denoised frame by frame, exactly as the core does it
    np.testing.assert_array_equal(layer.data, tiny_model.denoise(noisy, axes="TYX"))
    for t in (0, 7):
        frame = tiny_model.denoise(noisy[t], axes="YX").astype(int)
        assert np.abs(layer.data[t].astype(int) - frame).max() <= 1
    assert layer.metadata[META_KEY]["denoised_in_place"]
    assert "(denoised in place)" in d.layer_list.item(0).text()
    assert d.restore_button.isEnabled()
    # denoising again in place starts from the raw data, and restore still gives it back
    first = layer.data
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    np.testing.assert_array_equal(layer.data, first)
    assert d.restore() == [layer]
    assert layer.data is raw
    assert np.array_equal(layer.data, noisy) and layer.data.dtype == noisy.dtype
    assert META_KEY not in layer.metadata and not d.restore_button.isEnabled()


def test_restore_from_the_layers_menu_command(viewer, qtbot, noisy, tiny_model):
    from napari._app_model import get_app_model

    layer = viewer.add_image(noisy, name="noisy")
    d = denoise(qtbot, viewer, tiny_model, [layer])
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    viewer.window.remove_dock_widget(d)  # the panel is closed: the raw data is still kept
    viewer.layers.selection.active = layer
    get_app_model().commands.execute_command("napari-b2u.restore_original").result()
    assert np.array_equal(layer.data, noisy) and layer.data.dtype == np.uint8


def test_denoise_into_new_layer_keeps_input_and_placement(viewer, qtbot, noisy, tiny_model):
    layer = viewer.add_image(noisy, name="cells", scale=(2.0, 0.5, 0.5),
                             translate=(0.0, 10.0, 20.0), axis_labels=("t", "y", "x"),
                             metadata={"axes": "TYX", "note": "kept"})
    before = noisy.copy()
    d = denoise(qtbot, viewer, tiny_model, [layer], in_place=False, output="visible")
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data is noisy and np.array_equal(noisy, before)
    out = viewer.layers["cells_denoised"]
    np.testing.assert_array_equal(out.data, tiny_model.denoise(noisy, axes="TYX"))
    assert tuple(out.scale) == (2.0, 0.5, 0.5) and tuple(out.translate) == (0.0, 10.0, 20.0)
    assert tuple(out.axis_labels) == ("t", "y", "x")
    assert out.metadata["note"] == "kept" and out.metadata[META_KEY]["denoised_from"] == "cells"
    # again: the same output layer is updated, not a second one added
    d.output_combo.setCurrentIndex(d.output_combo.findData("weighted"))
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert [ly.name for ly in viewer.layers].count("cells_denoised") == 1
    np.testing.assert_array_equal(
        out.data, tiny_model.denoise(noisy, axes="TYX", output="weighted"))


def test_cancel_denoising(viewer, qtbot, tiny_model):
    big = np.random.default_rng(1).integers(0, 255, (64, 256, 256), dtype=np.uint8)
    layer = viewer.add_image(big, name="big")
    d = denoise(qtbot, viewer, tiny_model, [layer], batch=1, output="weighted")
    qtbot.waitUntil(lambda: "frame 1/64" in d.progress.format() or not d.is_busy, timeout=WAIT)
    d.cancel()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert "Cancelled" in d.status.text()
    assert layer.data is big and not session_for(viewer).has_original(layer)


def test_removing_the_layer_cancels_denoising(viewer, qtbot, tiny_model):
    big = np.random.default_rng(2).integers(0, 255, (64, 256, 256), dtype=np.uint8)
    layer = viewer.add_image(big, name="big")
    d = denoise(qtbot, viewer, tiny_model, [layer], batch=1, output="weighted")
    qtbot.waitUntil(lambda: "frame 1/64" in d.progress.format() or not d.is_busy, timeout=WAIT)
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert "'big' was removed: denoising cancelled" in d.status.text()
    # nothing was written anywhere: not into the removed layer, not into a new one
    assert layer.data is big and len(viewer.layers) == 0
    assert d.denoise_button.isEnabled()


def test_closing_the_viewer_during_denoising_stops_the_thread(make_napari_viewer, qtbot,
                                                             tiny_model):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    big = np.random.default_rng(3).integers(0, 255, (64, 256, 256), dtype=np.uint8)
    layer = viewer.add_image(big, name="big")
    d = denoise(qtbot, viewer, tiny_model, [layer], batch=1, output="weighted")
    qtbot.waitUntil(lambda: "frame 1/64" in d.progress.format(), timeout=WAIT)
    cancel = d._job["cancel"]
    viewer.close()
    # the job is cancelled at the next batch and its thread ends; the raw array is untouched
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=WAIT)
    assert cancel.is_set() and layer.data is big


def test_restore_while_denoising_cancels_and_restores(viewer, qtbot, tiny_model):
    big = np.random.default_rng(4).integers(0, 255, (48, 256, 256), dtype=np.uint8)
    layer = viewer.add_image(big, name="big")
    d = denoise(qtbot, viewer, tiny_model, [layer], batch=8, output="visible")
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data is not big
    # denoise it again, slowly, and restore in the middle: always available
    d.batch_spin.setValue(1)
    d.output_combo.setCurrentIndex(d.output_combo.findData("weighted"))
    assert d.denoise()
    qtbot.waitUntil(lambda: "frame 1/48" in d.progress.format(), timeout=WAIT)
    assert d.restore_button.isEnabled()
    assert d.restore() == [layer]
    assert layer.data is big  # the raw array back, at once
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data is big  # and the cancelled job wrote nothing into it afterwards
    assert "denoising cancelled" in d.status.text()
    assert not session_for(viewer).has_original(layer)


def test_model_file_opens_with_the_reader(viewer, tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "cells.b2u")
    viewer.open(str(path), plugin=PLUGIN)
    session = session_for(viewer)
    assert session.model is not None and "cells.b2u" in session.model_source
    assert len(viewer.layers) == 0
    assert any(DENOISE in name for name in viewer.window.dock_widgets)


# ---- screenshots for the user guide -----------------------------------------------------------
def _save(viewer, path: Path) -> np.ndarray:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(img).save(path)
    return img


def test_screenshots(make_napari_viewer, qtbot, tmp_path):
    from napari.settings import get_settings
    from qtpy.QtCore import Qt

    docs = os.environ.get("B2U_DOC_SCREENSHOTS") == "1"
    out = DOCS if docs else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    get_settings().application.gui_notification_level = "error"  # no toasts over the images
    viewer = make_napari_viewer(show=True)
    qt_window = viewer.window._qt_window
    qt_window.resize(1600, 1000)
    if docs:  # the real sample; in plain test runs a smaller stack of the same kind
        viewer.open_sample(PLUGIN, "fmdd_like")
    else:
        from napari_b2u.sample_data import fmdd_like_stack

        stack, ground = fmdd_like_stack(8, (128, 128), seed=5)
        viewer.add_image(stack, name="FMDD-like noisy stack", axis_labels=("t", "y", "x"))
        viewer.add_image(ground, name="FMDD-like clean", contrast_limits=(0, 255))
    noisy, clean = viewer.layers
    clean.visible = False
    viewer.layers.selection.active = noisy
    dock_widget, w = viewer.window.add_plugin_dock_widget(PLUGIN, TRAIN)
    qt_window.resizeDocks([dock_widget], [520], Qt.Orientation.Horizontal)
    # docs: the CPU defaults for a while (good previews); tests: the tiny network
    settings = dict(steps=160, preview_every=10) if docs else dict(TINY_GUI, steps=12)
    w.configure(layer=noisy, device="cpu", **settings)
    viewer.dims.set_current_step(0, 3)
    w.start()
    half = settings["steps"] // 2
    qtbot.waitUntil(lambda: w._run is None or (
        w._run.last_event is not None and w._run.last_event.step >= half
        and bool(w.preview_layers)), timeout=10 * WAIT)
    qtbot.wait(200)
    shots = {"train_widget.png": _save(viewer, out / "train_widget.png")}
    qtbot.waitUntil(lambda: not w.is_training, timeout=10 * WAIT)

    for ply in list(w.preview_layers.values()):
        viewer.layers.remove(ply)
    viewer.window.remove_dock_widget(dock_widget)
    dock_widget, d = viewer.window.add_plugin_dock_widget(PLUGIN, DENOISE)
    qt_window.resizeDocks([dock_widget], [520], Qt.Orientation.Horizontal)
    d.set_layers([noisy])
    camera_of(viewer).zoom *= 2.0
    qtbot.wait(200)
    shots["denoise_before.png"] = _save(viewer, out / "denoise_before.png")
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    qtbot.wait(200)
    shots["denoise_after.png"] = _save(viewer, out / "denoise_after.png")
    # noisy | denoised | clean side by side (new-layer mode, grid view)
    d.restore()
    d.new_layer.setChecked(True)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    clean.visible = True
    denoised = viewer.layers[f"{noisy.name}_denoised"]
    for i, layer in enumerate((noisy, denoised, clean)):  # the grid starts at the bottom layer
        viewer.layers.move(viewer.layers.index(layer), i)
    viewer.window.remove_dock_widget(dock_widget)  # room for the three images
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.enabled = True
    grid.shape = (1, 3)
    viewer.reset_view()
    qtbot.wait(200)
    shots["denoise_grid.png"] = _save(viewer, out / "denoise_grid.png")
    for name, img in shots.items():
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600, name
        assert img[..., :3].std() > 10, name
        assert (out / name).stat().st_size > 10_000, name
