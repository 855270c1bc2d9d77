"""What napari's plugin manager installs: `pip install napari-b2u` (no extras) into an
environment that has napari. Both panels must open (CI runs this from a fresh virtual
environment holding napari and the wheel, nothing else of ours; elsewhere without napari it
is skipped). Self-contained: no conftest."""

from __future__ import annotations

import pytest

napari = pytest.importorskip("napari")


def test_both_panels_open_after_a_plain_install(qtbot):
    import numpy as np

    viewer = napari.Viewer(show=False)
    try:
        viewer.add_image(np.zeros((4, 64, 64), np.uint8), name="cells")
        _, train = viewer.window.add_plugin_dock_widget("napari-b2u", "Train denoiser")
        _, denoise = viewer.window.add_plugin_dock_widget("napari-b2u", "Denoise")
        assert type(train).__name__ == "TrainWidget"
        assert type(denoise).__name__ == "DenoiseWidget"
    finally:
        viewer.close()
