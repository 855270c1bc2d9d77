"""The Denoise widget: in place with a bit-exact restore, new layers, cancel, removed layers,
closing the viewer, the model reader, which layers and axes it proposes. Helpers and fixtures in
test_widget_common.py."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._session import META_KEY, session_for  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    PLUGIN,
    WAIT,
    _one_torch_thread,
    dock,
    noisy,
    read_only_folder,
    train,
    viewer,
)

pytestmark = pytest.mark.gui


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
    # issue 30.7: the layer list shows it was denoised, and so does the panel's list
    assert layer.name == "noisy (denoised)" and d.layer_list.item(0).text() == layer.name
    assert "Denoised 'noisy' in place" in d.status.text()
    assert d.restore_button.isEnabled()
    # denoising again in place starts from the raw data, and restore still gives it back
    first = layer.data
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    np.testing.assert_array_equal(layer.data, first)
    assert layer.name == "noisy (denoised)"  # marked once
    # outputs made from its raw data are named after the raw data
    d.new_layer.setChecked(True)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert viewer.layers[-1].name == "noisy_denoised"
    viewer.layers.remove(viewer.layers[-1])
    assert d.restore() == [layer]
    assert layer.data is raw and layer.name == "noisy"
    assert np.array_equal(layer.data, noisy) and layer.data.dtype == noisy.dtype
    assert META_KEY not in layer.metadata and not d.restore_button.isEnabled()
    # a name the user gave meanwhile is theirs: restore keeps it
    d.in_place.setChecked(True)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    layer.name = "nuclei, day 2"
    assert "(denoised in place)" in d.layer_list.item(0).text()
    assert d.restore() == [layer] and layer.name == "nuclei, day 2" and layer.data is raw


def test_restore_from_the_layers_menu_command(viewer, qtbot, noisy, tiny_model):
    from napari._app_model import get_app_model

    layer = viewer.add_image(noisy, name="noisy")
    d = denoise(qtbot, viewer, tiny_model, [layer])
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    viewer.window.remove_dock_widget(d)  # the panel is closed: the raw data is still kept
    viewer.layers.selection.active = layer
    assert layer.name == "noisy (denoised)"
    get_app_model().commands.execute_command("napari-b2u.restore_original").result()
    assert np.array_equal(layer.data, noisy) and layer.data.dtype == np.uint8
    assert layer.name == "noisy"  # the name comes back with the raw data


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
    # issue 30.12: a layer without axis labels gets its output's labels from its axes
    plain = viewer.add_image(noisy[:, :32, :32].copy(), name="plain")
    d.set_layers([plain], axes="ZYX")
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert tuple(viewer.layers["plain_denoised"].axis_labels) == ("z", "y", "x")


def test_the_ensembling_choice_reaches_the_core(viewer, qtbot, noisy, tiny_model):
    """The Ensembling combo offers the core's choices; each gives the API's output for it."""
    from napari_b2u.denoise.predict import TTA_CHOICES

    layer = viewer.add_image(noisy, name="cells")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    assert [d.tta_combo.itemText(i) for i in range(d.tta_combo.count())] == [
        text for _, text in TTA_CHOICES]
    d.set_layers([layer])
    d.new_layer.setChecked(True)
    for i, (value, _) in enumerate(TTA_CHOICES):
        if value not in (False, 4):
            continue
        d.tta_combo.setCurrentIndex(i)
        chosen = d.options()["tta"]
        assert chosen == value and type(chosen) is type(value)
        assert d.denoise()
        qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
        np.testing.assert_array_equal(viewer.layers["cells_denoised"].data,
                                      tiny_model.denoise(noisy, axes="TYX", tta=value))


def test_outputs_are_described_by_the_method(viewer, tiny_model):
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    method = tiny_model.method
    assert [d.output_combo.itemData(i) for i in range(d.output_combo.count())] == list(
        tiny_model.outputs)
    assert [d.output_combo.itemText(i) for i in range(d.output_combo.count())] == [
        method.describe(name) for name in tiny_model.outputs]


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
    cancel = d._job.cancel
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


def test_a_model_for_other_channels_is_refused_in_the_cores_words(viewer, qtbot, tiny_model):
    two = np.random.default_rng(5).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    layer = viewer.add_image(two, name="two", axis_labels=("c", "y", "x"))
    d = denoise(qtbot, viewer, tiny_model, [layer])
    assert d.axes_edit.text() == "CYX"
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert d.status.kind == "error"
    assert "'two': this model was trained on 1 channel(s) but the stack has 2" in d.status.text()
    assert layer.data is two and not session_for(viewer).has_original(layer)


def test_a_single_channel_rgb_layer_is_denoised_into_a_new_layer(viewer, qtbot, noisy,
                                                                 tiny_model):
    # a single green channel exported as RGB: denoised as that channel, with a note; a
    # colour layer cannot show one channel in place, so the result is a new layer
    green = np.zeros((64, 64, 3), np.uint8)
    green[..., 1] = noisy[0]
    layer = viewer.add_image(green, rgb=True, name="green")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer])
    assert "one colour channel (green" in d.axes_note.text()
    assert d.in_place.isChecked() and d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert layer.data is green  # untouched
    out = viewer.layers["green_denoised"]
    np.testing.assert_array_equal(out.data, tiny_model.denoise(noisy[0], axes="YX"))
    assert not out.rgb and d.status.kind == "ok" and "new layer" in d.status.text()


def test_axes_the_model_was_trained_with_are_proposed(viewer, qtbot, noisy):
    # a (2, 64, 64) layer trained as two z planes (ZYX): another such layer without labels is
    # proposed ZYX (the model's axes), not the guess TYX with its "frames or channels?" note
    two = np.stack([noisy[0], noisy[1]])
    trained = viewer.add_image(two, name="trained")
    w = train(qtbot, viewer, trained, axes="ZYX", steps=2, patch_size=16)
    assert session_for(viewer).model.info["axes"] == "ZYX"
    other = viewer.add_image(two.copy(), name="other")
    d = dock(viewer, DENOISE)
    assert d.layer_list.checked_layers() == [trained]
    assert d.axes_edit.text() == "ZYX"
    d.set_layers([other])
    assert d.axes_edit.text() == "ZYX" and "2 frames of 64×64" in d.axes_hint.text()
    assert d.axes_note.isHidden()  # not a guess: no "2 frames or channels?" note
    # a layer of another dimensionality gets its own (guessed) axes
    d.set_layers([viewer.add_image(noisy[0], name="frame")])
    assert d.axes_edit.text() == "YX"
    assert w.axes_edit.text() == "ZYX"


def test_model_file_opens_with_the_reader(viewer, tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "cells.b2u")
    viewer.open(str(path), plugin=PLUGIN)
    session = session_for(viewer)
    assert session.model is not None and "cells.b2u" in session.model_source
    assert len(viewer.layers) == 0
    assert any(DENOISE in name for name in viewer.window.dock_widgets)


def test_export_writes_a_bioimageio_package_of_the_raw_layer(viewer, qtbot, noisy, tiny_model,
                                                            tmp_path):
    pytest.importorskip("bioimageio.core")
    import zipfile

    from bioimageio.spec.utils import read_yaml

    from napari_b2u import api

    d = dock(viewer, DENOISE)
    assert not d.model_bar.export_button.isEnabled()  # no model yet
    assert d.export_model(str(tmp_path / "none.zip")) is None
    assert "No model to export" in d.status.text()
    layer = viewer.add_image(noisy, name="noisy", scale=(1.0, 0.25, 0.25),
                             units=("second", "micrometer", "micrometer"))
    d = denoise(qtbot, viewer, tiny_model, [layer])  # in place: the export uses the raw data
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert d.model_bar.export_button.isEnabled()
    path = tmp_path / "cells.zip"
    worker = d.export_model(str(path))
    assert worker is not None and not d.model_bar.export_button.isEnabled()
    qtbot.waitUntil(lambda: d._export_worker is None, timeout=WAIT)
    assert "Exported the model's 'visible' output to" in d.status.text(), d.status.text()
    assert d.model_bar.export_button.isEnabled()
    with zipfile.ZipFile(path) as zf:
        y = read_yaml(zf.read("rdf.yaml").decode())
        test_in = np.load(zf.open("test_input.npy"))
    np.testing.assert_array_equal(test_in[0, 0], noisy[4].astype(np.float32))  # raw, frame 4
    assert (y["inputs"][0]["axes"][2]["scale"], y["inputs"][0]["axes"][2]["unit"]) == (
        250.0, "nanometer")
    assert api.load(path).method_name == tiny_model.method_name
    # the chosen output when a package can hold it, else the default; failures are reported
    d.output_combo.setCurrentIndex(d.output_combo.findData("weighted"))
    small = viewer.add_image(noisy[:, :32, :32], name="small")
    d.set_layers([small])
    before = path.read_bytes()
    assert d.export_model(str(path)) is not None
    qtbot.waitUntil(lambda: d._export_worker is None, timeout=WAIT)
    assert "at least 36×36" in d.status.text() and path.read_bytes() == before


# ---- Load… and Save… say in the panel what they did (issue 30.9) --------------------------------
def train_widget_of(viewer, layer):
    from .test_widget_common import TRAIN

    w = dock(viewer, TRAIN)
    w.configure(layer=layer)
    return w


def test_save_into_a_read_only_folder_is_said_in_the_panel(read_only_folder, viewer,
                                                            tiny_model):
    # (read_only_folder first: it may skip, and napari's viewer fixture must not be made then)
    session_for(viewer).set_model(tiny_model, "tiny test model")
    layer = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="cells")
    for panel in (dock(viewer, DENOISE), train_widget_of(viewer, layer)):
        assert panel.model_bar.save_model(str(read_only_folder / "cells.b2u")) is None
        text = panel.status.text()
        assert panel.status.kind == "error", text
        assert text.startswith("Could not write the model to ") and "cells.b2u" in text, text
        assert "Nothing was saved" in text and "unexpectedly" not in text, text
        assert list(read_only_folder.iterdir()) == []


def test_a_successful_save_and_load_replace_the_red_no_model_line(viewer, tiny_model, tmp_path):
    d = dock(viewer, DENOISE)
    assert not d.denoise() and d.status.kind == "error" and "No model yet" in d.status.text()
    path = tiny_model.save(tmp_path / "cells.b2u")
    assert d.model_bar.load_model(str(path)) is not None
    assert d.status.kind == "ok" and d.status.text().startswith("Loaded model cells.b2u"), \
        d.status.text()
    assert d.model_bar.save_model(str(tmp_path / "again.b2u")) is not None
    assert d.status.kind == "ok" and "Model saved to" in d.status.text()
    bad = tmp_path / "bad.b2u"
    bad.write_bytes(b"not a model")
    assert d.model_bar.load_model(str(bad)) is None
    assert d.status.kind == "error" and "bad.b2u" in d.status.text()
    # a model that comes from training (or a script) also ends the red "No model yet"
    session_for(viewer).set_model(None, "")
    assert not d.denoise() and "No model yet" in d.status.text()
    session_for(viewer).set_model(tiny_model, "trained on 'cells'")
    assert d.status.kind == "ok" and "Model ready (trained on 'cells')" in d.status.text()


def test_an_image_far_outside_the_training_range_is_refused_with_an_offer(viewer, qtbot, noisy):
    """Issue 30 item 3: a model trained on float data near 1e12 gave an 8-bit layer one constant
    value. The panel says why in its own words and offers the image's own scaling."""
    from napari_b2u import api

    from .conftest import TINY

    far = api.train_stack(noisy.astype(np.float64) * 1e9 + 1e12, steps=2, seed=0, context=0,
                          **TINY)
    layer = viewer.add_image(noisy, name="cells")
    d = denoise(qtbot, viewer, far, [layer])
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    text = d.status.text()
    assert d.status.kind == "error" and layer.data is noisy  # nothing changed, no constant
    assert text.startswith("'cells': its values (0 to ") and "near-constant" in text, text
    assert "Scale on its own and denoise" in text and "Scaling: each layer on its own" in text
    assert "normalize" not in text and "=" not in text and "--" not in text
    assert d.own_button.isVisibleTo(d) and d.own_button.text() == "Scale on its own and denoise"
    # the offer: the choice is set in the form and the layer denoised on its own scale
    assert d.own_button.isEnabled()
    d.own_button.click()
    assert d.scaling_combo.currentData() == "image" and d.options()["normalize"] == "image"
    assert not d.own_button.isVisibleTo(d)
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert d.status.kind == "ok", d.status.text()
    assert layer.data.dtype == np.uint8 and len(np.unique(layer.data)) > 20
    np.testing.assert_array_equal(layer.data, far.denoise(noisy, axes="TYX", normalize="image"))
