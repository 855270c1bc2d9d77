"""The napari plugin: manifest, sample data, what both widgets share (layer pickers through napari's
plugin proxy, axes, the loss plot), and the helpers of the other widget tests
(test_widget_train.py, test_widget_denoise.py, test_widget_methods.py,
test_widget_screenshots.py).

Runs headless under Xvfb (pytest-xvfb starts it); napari needs OpenGL, so not with
QT_QPA_PLATFORM=offscreen. Every widget is docked as a user gets it, through
``viewer.window.add_plugin_dock_widget`` — which hands it a proxy of the viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._session import session_for  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN = "napari-b2u"
TRAIN = "Train denoiser"
DENOISE = "Denoise"
#: the classical floor (where the core has one) off: a few steps test the network itself, as
#: conftest.TINY does
NO_FLOOR = {"floor": "none"}
#: a network small enough for CPU tests (as in conftest.TINY)
TINY_GUI = dict(width=16, depth=2, patch_size=32, batch_size=4, preview_every=3, **NO_FLOOR)
WAIT = 60_000  # ms; generous: CPU cores are shared
ROOT = Path(__file__).resolve().parents[1]


# ---- helpers shared by the widget tests ---------------------------------------------------------
def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def train_widget(viewer, layer, **settings):
    widget = dock(viewer, TRAIN)
    widget.configure(layer=layer, device="cpu", **{**TINY_GUI, **settings})
    return widget


def train(qtbot, viewer, layer, **settings):
    """Dock the Train widget, train on ``layer`` and wait for the end."""
    w = train_widget(viewer, layer, **settings)
    assert w.start(), w.status.text()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    return w


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


@pytest.fixture(params=["permissions", "immutable"])
def read_only_folder(request, tmp_path):
    """A real folder nothing can be written into: without write permission (not as root: root
    writes there anyway), or, as root, with the immutable attribute (chattr +i)."""
    import os
    import shutil
    import subprocess

    where = tmp_path / "read-only"
    where.mkdir()
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if request.param == "permissions":
        if root:
            pytest.skip("as root a folder without write permission is still writable (the "
                        "'immutable' case covers root)")
        where.chmod(0o555)
        undo = ["chmod", "755", str(where)]
    else:
        if not root or not shutil.which("chattr"):
            pytest.skip("the immutable attribute needs root and chattr (the 'permissions' case "
                        "covers other users)")
        if subprocess.run(["chattr", "+i", str(where)], capture_output=True).returncode:
            pytest.skip("this file system or container has no immutable attribute")
        undo = ["chattr", "-i", str(where)]
    try:
        try:
            (where / "probe").touch()
        except OSError:
            pass
        else:
            (where / "probe").unlink()
            pytest.skip(f"{where} is writable after all ({request.param})")
        yield where
    finally:
        subprocess.run(undo, capture_output=True)


@pytest.fixture
def noisy(small_stack):
    return small_stack[0].copy()  # (8, 64, 64) uint8


# ---- manifest and samples ---------------------------------------------------------------------
def test_manifest_validates_and_declares_everything():
    from npe2 import PluginManifest

    from napari_b2u._widgets._names import PLUGIN_TITLE

    mf = PluginManifest.from_distribution(PLUGIN)
    mf.validate_imports()
    assert mf.display_name == PLUGIN_TITLE  # the panels' dock titles match the menu's
    c = mf.contributions
    assert {w.display_name for w in c.widgets} == {TRAIN, DENOISE}
    assert {s.key for s in c.sample_data} == {"fmdd_like", "dsb2018_nuclei"}
    assert c.readers[0].filename_patterns == ["*.b2u"]
    menu = {item.command for item in c.menus["napari/layers/filter"]}
    assert {"napari-b2u.denoise_widget", "napari-b2u.restore_original"} <= menu


@pytest.fixture
def plugin_prefs(monkeypatch, tmp_path):
    """napari's settings of this plugin (napari >= 0.9), kept in ``tmp_path``, not in the
    user's configuration folder."""
    settings = pytest.importorskip("napari.settings")
    if not hasattr(settings, "get_plugin_settings"):
        pytest.skip("napari < 0.9 has no plugin settings")
    monkeypatch.setattr(settings, "_CFG_PATH", str(tmp_path / "settings.yaml"))
    settings._clear_plugin_settings_cache()
    yield settings.get_plugin_settings(PLUGIN).defaults
    settings._clear_plugin_settings_cache()


def test_napari_preferences_give_the_panels_device_and_cpu_threads(plugin_prefs, viewer, qtbot,
                                                                   tiny_model):
    # issue 30.12: napari 0.9's plugin settings (the manifest's configurations)
    import torch

    from napari_b2u._widgets._prefs import DEFAULTS

    assert plugin_prefs.device == DEFAULTS["device"] == "auto"
    assert plugin_prefs.cpu_threads == DEFAULTS["cpu_threads"] == 0
    plugin_prefs.device, plugin_prefs.cpu_threads = "cpu", 2
    w, d = dock(viewer, TRAIN), dock(viewer, DENOISE)
    assert w.device_combo.device() == "cpu" and d.device_combo.device() == "cpu"
    assert torch.get_num_threads() == 1  # (this module's tests run on one thread)
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d.set_layers([viewer.add_image(np.zeros((2, 32, 32), np.uint8), name="cells")])
    try:
        assert d.denoise()
        assert torch.get_num_threads() == 2
        qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    finally:
        torch.set_num_threads(1)


def test_menus_read_well(viewer):
    """napari adds the plugin's display name to each entry: no entry repeats it, none has two
    parentheses (what the napari hub and napari's menus show)."""
    def entries(menu, path=()):
        for action in menu.actions():
            text = action.text().replace("&", "")
            if action.menu() is not None:
                yield from entries(action.menu(), (*path, text))
            elif text:
                yield (*path, text)

    bar = viewer.window._qt_window.menuBar()
    menus = {a.text().replace("&", ""): a.menu() for a in bar.actions()}
    ours = [e for name in ("File", "Layers", "Plugins") for e in entries(menus[name], (name,))
            if "Blind2Unblind" in " ".join(e)]
    assert ("Plugins", "Blind2Unblind", "Train denoiser (Blind2Unblind)") in ours
    assert ("Plugins", "Blind2Unblind", "Denoise (Blind2Unblind)") in ours
    assert ("File", "Open Sample", "Blind2Unblind", "DSB2018 nuclei (real, 512×512)") in ours
    for entry in ours:
        assert entry[-1].count("Blind2Unblind") <= 1 and entry[-1].count("(") <= 2, entry
        assert entry[-1].count(")(") == 0 and ") (" not in entry[-1], entry


def test_widgets_load_from_manifest(viewer):
    from napari_b2u._widgets import DenoiseWidget, TrainWidget

    assert isinstance(dock(viewer, TRAIN), TrainWidget)
    assert isinstance(dock(viewer, DENOISE), DenoiseWidget)


def test_the_denoise_panel_has_one_title_however_it_is_opened(viewer, qtbot, tiny_model,
                                                              tmp_path):
    # issue 30.7: the Train panel's "Denoise ▸" docked it as "Denoise (napari-b2u)", the
    # Plugins menu as "Denoise (Blind2Unblind)" -- two titles, and the menu then opened a
    # second panel. Every way now gives the menu's dock.
    from napari._app_model import get_app_model

    from napari_b2u._widgets import DenoiseWidget

    def denoise_docks():
        return {k: w for k, w in viewer.window.dock_widgets.items() if k.startswith(DENOISE)}

    w = dock(viewer, TRAIN)
    d = w.open_denoise()
    assert isinstance(d, DenoiseWidget)
    assert denoise_docks() == {"Denoise (Blind2Unblind)": d}
    get_app_model().commands.execute_command("napari-b2u.denoise_widget").result()
    assert denoise_docks() == {"Denoise (Blind2Unblind)": d}  # the menu found the same one
    assert w.open_denoise() is d and d.parent().isVisibleTo(viewer.window._qt_window)
    # opened by the menu first: the button shows that one; so does opening a model file
    viewer.window.remove_dock_widget(d.parent())
    assert denoise_docks() == {}
    get_app_model().commands.execute_command("napari-b2u.denoise_widget").result()
    (menu_panel,) = denoise_docks().values()
    assert w.open_denoise() is menu_panel
    viewer.open(str(tiny_model.save(tmp_path / "m.b2u")), plugin=PLUGIN)
    assert denoise_docks() == {"Denoise (Blind2Unblind)": menu_panel}


def test_sample_data(viewer):
    import tifffile

    viewer.open_sample(PLUGIN, "fmdd_like")
    clean, noisy = viewer.layers
    assert noisy.data.shape == (20, 256, 256) and noisy.data.dtype == np.uint8
    assert clean.data.shape == (256, 256)
    # the noisy stack is on top and selected: the layer the Train panel offers
    assert viewer.layers.selection.active is noisy
    viewer.open_sample(PLUGIN, "dsb2018_nuclei")
    nuclei = viewer.layers[-1]
    src = ROOT / "src/napari_b2u/sample_files/dsb2018_nuclei.tif"
    assert nuclei.data.shape == (512, 512) and nuclei.data.dtype == np.uint16
    assert np.array_equal(nuclei.data, tifffile.imread(src))
    # issue 30.12: every layer the plugin adds names its axes
    assert [tuple(ly.axis_labels) for ly in viewer.layers] == [("y", "x"), ("t", "y", "x"),
                                                              ("y", "x")]


def test_axis_labels_of_added_layers_follow_the_source_or_the_axes(viewer):
    from napari_b2u._widgets._layers import axis_labels

    plain = viewer.add_image(np.zeros((2, 3, 8, 8), np.float32))
    assert axis_labels(plain, "TCYX") == ("t", "c", "y", "x")  # napari's '-4'…: not labels
    named = viewer.add_image(np.zeros((2, 8, 8), np.float32),
                             axis_labels=("time", "row", "col"))
    assert axis_labels(named, "TYX") == ("time", "row", "col")


# ---- layers through napari's plugin proxy (issue 17.2) ------------------------------------------
def test_widgets_get_a_proxy_viewer_and_compare_layers_through_it(viewer):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_b2u._widgets._session import same_layer, unwrap

    layer = viewer.add_image(np.zeros((8, 8)), name="a")
    proxy = PublicOnlyProxy(viewer)
    active = proxy.layers.selection.active
    assert active == layer and active is not layer  # what napari hands plugins
    assert same_layer(active, layer) and unwrap(active) is layer
    assert not same_layer(active, viewer.add_image(np.zeros((8, 8)), name="b"))
    assert session_for(proxy) is session_for(viewer)
    w = dock(viewer, TRAIN)
    assert w.viewer is viewer  # the panels keep the viewer itself, not napari's proxy


def test_train_offers_the_selected_layer(viewer):
    # x_gt first, x_noisy selected: the Train panel opened from the Plugins menu must offer
    # x_noisy (it offered x_gt: the proxy's selected layer is never `is` a listed layer)
    rng = np.random.default_rng(0)
    gt = viewer.add_image(rng.random((64, 64), np.float32), name="x_gt")
    x_noisy = viewer.add_image(rng.random((64, 64), np.float32), name="x_noisy")
    viewer.add_image(rng.random((64, 64), np.float32), name="other")
    viewer.layers.selection.active = x_noisy
    w = dock(viewer, TRAIN)
    assert w.layer_combo.current_layer() is x_noisy
    assert w.layer_combo.currentText() == "x_noisy"
    # setting a layer through a proxy works as well
    from napari.utils._proxies import PublicOnlyProxy

    w.configure(layer=PublicOnlyProxy(viewer).layers["x_gt"])
    assert w.layer_combo.current_layer() is gt


def test_the_chosen_layer_removed_is_said_not_replaced(viewer, noisy):
    a = viewer.add_image(noisy, name="a")
    b = viewer.add_image(noisy.copy(), name="b")
    viewer.layers.selection.active = a
    w = dock(viewer, TRAIN)
    assert w.layer_combo.current_layer() is a
    viewer.layers.remove(a)
    # no silent switch to 'b': the box says what happened and the status line too
    assert w.layer_combo.current_layer() is None
    assert "'a' was removed" in w.layer_combo.currentText()
    assert "'a' was removed" in w.status.text()
    assert not w.start() and "removed" in w.status.text()
    w.configure(layer=b)
    assert w.layer_combo.current_layer() is b and w.layer_combo.removed_text is None


# ---- axes (issue 17.14) -------------------------------------------------------------------------
def test_axes_inference(viewer):
    from napari_b2u._widgets._layers import infer_axes

    assert infer_axes(viewer.add_image(np.zeros((8, 8)))) == "YX"
    assert infer_axes(viewer.add_image(np.zeros((2, 8, 8)))) == "TYX"
    assert infer_axes(viewer.add_image(np.zeros((2, 3, 8, 8)))) == "TZYX"
    assert infer_axes(viewer.add_image(np.zeros((2, 2, 3, 8, 8)))) == "TZSYX"  # the core's guess
    labelled = viewer.add_image(np.zeros((2, 3, 8, 8)), axis_labels=("z", "c", "y", "x"))
    assert infer_axes(labelled) == "ZCYX"
    meta = viewer.add_image(np.zeros((3, 8, 8)), metadata={"axes": "cyx"})
    assert infer_axes(meta) == "CYX"


def test_axes_warnings_are_shown(viewer):
    # a guessed (2, 256, 256) is read as 2 frames that may be channels; "YXC" on it makes 256
    # channels: the core's notes, shown under the axes
    two = viewer.add_image(np.zeros((2, 256, 256), np.float32), name="two")
    w = dock(viewer, TRAIN)
    w.configure(layer=two)
    assert w.axes_edit.text() == "TYX"
    note = w.form.axes_note
    assert not note.isHidden() and "read as 2 frames" in note.text()
    w.configure(axes="YXC")
    assert "256 channels" in note.text()
    w.configure(axes="CYX")
    assert note.isHidden()
    # labelled axes are not a guess: no note
    labelled = viewer.add_image(np.zeros((2, 64, 64), np.float32), name="labelled",
                                axis_labels=("t", "y", "x"))
    w.configure(layer=labelled)
    assert w.axes_edit.text() == "TYX" and note.isHidden()


# ---- the loss plot (issue 17.13) ----------------------------------------------------------------
def test_loss_plot_shows_negative_likelihood_losses(qtbot):
    # a negative log-likelihood cannot be shown on a log axis: the plot goes linear and keeps
    # the true values (no clamping to a tiny positive number)
    from napari_b2u._widgets._plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.reset("loss", "the total loss", "a weight")
    plot.add([(1, {"loss": 0.5, "mse": 0.02}, 2.0, None)])
    assert plot.log_scale
    plot.add([(2, {"loss": -4.0, "mse": 0.01}, 2.1, 0.03), (3, {"loss": -4.5, "mse": 0.01},
                                                             2.2, None)])
    assert not plot.log_scale
    x, y = plot.curves["loss"].getData()
    np.testing.assert_allclose(x, [1, 2, 3])
    # exponential smoothing with weight 0.1 on the raw values
    np.testing.assert_allclose(y, [0.5, 0.5 + 0.1 * (-4.0 - 0.5), 0.05 + 0.1 * (-4.5 - 0.05)])
    assert not plot.widget.getPlotItem().getAxis("right").logMode  # the schedule stays linear
    plot.reset("loss", "loss", None)  # a new run starts on a log axis again
    assert plot.log_scale
    assert not plot.widget.getPlotItem().getAxis("right").isVisible()


def test_loss_plot_shows_the_methods_plot_term_and_schedule_label(qtbot):
    from napari_b2u._widgets._plot import LossPlot
    from napari_b2u._widgets._train import plot_legend
    from napari_b2u.methods import get_method

    b2u = type(get_method("b2u"))
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.reset(b2u.plot_term, plot_legend(b2u), b2u.schedule_label)
    plot.add([(1, {"loss": 0.9, "revisible": 0.8, "regularizer": 0.1}, 2.0, None),
              (2, {"loss": 3.0, "revisible": 2.9, "regularizer": 0.09}, 5.0, 0.2)])
    # the λ-independent term on the main axis, not the total loss that climbs with λ
    assert set(plot.curves) == {"regularizer"}
    np.testing.assert_allclose(plot.curves["regularizer"].getOriginalDataset()[1],
                               [0.1, 0.1 + 0.1 * (0.09 - 0.1)])
    assert b2u.describe("regularizer") in plot.legend_texts()
    assert "validation error" in plot.legend_texts()
    right = plot.widget.getPlotItem().getAxis("right")
    assert right.isVisible() and right.labelText == b2u.schedule_label
    np.testing.assert_allclose(plot.sched_curve.getData()[1], [2.0, 5.0])
    np.testing.assert_allclose(plot.val_curve.getOriginalDataset()[1], [0.2])


def _left_axis_labels(qtbot, values) -> tuple[list[str], tuple]:
    """The texts the loss plot's left axis draws for a run whose loss goes through
    ``values``, and the range of the values the axis shows."""
    from qtpy.QtGui import QImage, QPainter

    from napari_b2u._widgets._plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(400, 300)
    plot.show()
    plot.reset("loss", "loss", None)
    plot.add([(i, {"loss": float(v)}, None, None) for i, v in enumerate(values)])
    qtbot.wait(20)
    item = plot.widget.getPlotItem()
    assert plot.log_scale
    canvas = QImage(400, 300, QImage.Format.Format_ARGB32)
    painter = QPainter(canvas)
    try:
        texts = [spec[2] for spec in item.getAxis("left").generateDrawSpecs(painter)[2]]
    finally:
        painter.end()
    lo, hi = item.vb.viewRange()[1]
    return texts, (10**lo, 10**hi)


@pytest.mark.parametrize("first, last", [(0.019, 0.012), (0.0104, 0.0101), (0.5, 0.002),
                                         (100.0, 1e-6)])
def test_loss_plot_log_axis_labels_its_ticks(qtbot, first, last):
    # issue 30.7: on a log axis pyqtgraph labels only decades (none at all on a loss that
    # stays within one, as most do) or every 1…9 at one digit; at least 3 distinct numbers
    # in the range shown, round ones, not crowded
    texts, (lo, hi) = _left_axis_labels(qtbot, np.geomspace(first, last, 60))
    assert 3 <= len(texts) <= 300 // 28, texts
    values = [float(t) for t in texts]
    assert len(set(texts)) == len(texts) and values == sorted(values), texts
    assert all(lo <= v <= hi for v in values), (texts, lo, hi)
    assert all(len(t.replace("0.", "").lstrip("0")) <= 4 for t in texts), texts
