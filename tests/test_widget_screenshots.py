"""The user guide's screenshots, taken headlessly from a real napari session: a laptop's
1366×768 window with both panels docked, as a user has them. Set B2U_DOC_SCREENSHOTS=1 to write
them into docs/images/ (the real sample, a longer, nicer training run); otherwise they go to a
temporary folder. Helpers in test_widget_common.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_b2u._widgets._layers import camera_of  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    NO_FLOOR,
    PLUGIN,
    ROOT,
    TINY_GUI,
    TRAIN,
    WAIT,
    _one_torch_thread,
)

pytestmark = pytest.mark.gui

DOCS = ROOT / "docs" / "images"
#: the window: a common laptop screen
SCREEN = (1366, 768)
#: the heights of the Train and Denoise docks: the panel in use gets the room
USING_TRAIN, USING_DENOISE = (470, 200), (200, 470)


def _save(viewer, path: Path) -> np.ndarray:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(img).save(path, optimize=True)
    return img


def _scroll_to(panel, widget) -> None:
    """Scroll ``panel`` so that ``widget`` is at the top of what it shows."""
    bar = panel.scroll.verticalScrollBar()
    bar.setValue(widget.mapTo(panel.body, widget.rect().topLeft()).y())


def test_screenshots(make_napari_viewer, qtbot, tmp_path):
    from napari.settings import get_settings
    from qtpy.QtCore import Qt

    docs = os.environ.get("B2U_DOC_SCREENSHOTS") == "1"
    out = DOCS if docs else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    get_settings().application.gui_notification_level = "error"  # no toasts over the images
    viewer = make_napari_viewer(show=True)
    qt_window = viewer.window._qt_window
    qt_window.resize(*SCREEN)
    if docs:  # the real sample; in plain test runs a smaller stack of the same kind
        viewer.open_sample(PLUGIN, "fmdd_like")
        noisy, clean = viewer.layers["FMDD-like noisy stack"], viewer.layers["FMDD-like clean"]
    else:
        from napari_b2u.sample_data import fmdd_like_stack

        stack, ground = fmdd_like_stack(8, (128, 128), seed=5)
        clean = viewer.add_image(ground, name="FMDD-like clean", contrast_limits=(0, 255))
        noisy = viewer.add_image(stack, name="FMDD-like noisy stack",
                                 axis_labels=("t", "y", "x"))
    clean.visible = False
    viewer.layers.selection.active = noisy
    train_dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, TRAIN)
    denoise_dock, d = viewer.window.add_plugin_dock_widget(PLUGIN, DENOISE)
    docks = [train_dock, denoise_dock]

    def use(heights):
        qt_window.resizeDocks(docks, list(heights), Qt.Orientation.Vertical)
        qtbot.wait(100)

    # docs: the CPU defaults for a while (good previews); tests: the tiny network
    settings = dict(steps=160, preview_every=10, **NO_FLOOR) if docs else dict(TINY_GUI,
                                                                                steps=12)
    w.configure(layer=noisy, device="cpu", **settings)
    viewer.dims.set_current_step(0, 3)
    use(USING_TRAIN)
    w.start()
    half = settings["steps"] // 2
    qtbot.waitUntil(lambda: w._run is None or (
        w._run.last_event is not None and w._run.last_event.step >= half
        and w._run.previewed), timeout=10 * WAIT)
    _scroll_to(w, w.start_button)  # training: the progress, the plot and the previews
    qtbot.wait(200)
    assert qt_window.height() <= SCREEN[1]
    shots = {"train_widget.png": _save(viewer, out / "train_widget.png")}
    qtbot.waitUntil(lambda: not w.is_training, timeout=10 * WAIT)

    for ply in list(w.preview_layers.values()):
        viewer.layers.remove(ply)
    _scroll_to(w, w.form)
    use(USING_DENOISE)
    assert d.layer_list.checked_layers() == [noisy]
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
    for dock_widget in docks:  # room for the three images
        viewer.window.remove_dock_widget(dock_widget)
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.enabled = True
    grid.shape = (1, 3)
    qtbot.wait(300)  # the canvas takes the docks' room first: then fit the images to it
    viewer.reset_view()
    qtbot.wait(200)
    shots["denoise_grid.png"] = _save(viewer, out / "denoise_grid.png")
    for name, img in shots.items():
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600, name
        assert img.shape[0] <= SCREEN[1] and img.shape[1] <= SCREEN[0], name
        assert img[..., :3].std() > 10, name
        assert 10_000 < (out / name).stat().st_size < 400_000, name
