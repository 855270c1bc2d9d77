"""The Denoise widget "to OME-Zarr" (issue 15): a lazy layer larger than the memory budget, or a
pyramid as napari-ome-zarr opens it, is written block by block and opened as a new lazy layer;
in place stays for layers in memory; cancel keeps the finished blocks."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

from napari_b2u._widgets._session import session_for  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    WAIT,
    _one_torch_thread,
    dock,
    noisy,
    read_only_folder,
    viewer,
)

pytestmark = pytest.mark.gui


def test_a_lazy_layer_larger_than_the_budget_goes_to_ome_zarr(viewer, qtbot, noisy, tiny_model,
                                                              tmp_path, monkeypatch):
    import zarr

    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "10kB")
    lazy = da.from_array(noisy, chunks=(1, 32, 32))
    layer = viewer.add_image(lazy, name="lazy", scale=(1, 0.5, 0.5))
    small = viewer.add_image(noisy[:2].copy(), name="small")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer])
    assert d.to_zarr.isChecked() and d.zarr_target.isEnabled()  # proposed at once
    d.in_place.setChecked(True)
    assert not d.denoise()  # in place: refused, with the way out
    assert "to OME-Zarr" in d.status.text()
    d.to_zarr.setChecked(True)
    d.zarr_target.edit.setText(str(tmp_path))
    assert "lazy_denoised.ome.zarr" in d.zarr_target.note.text()
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert "to OME-Zarr" in d.status.text(), d.status.text()
    out = viewer.layers["lazy_denoised"]
    assert out.multiscale and tuple(out.scale) == (1, 0.5, 0.5)
    assert tuple(out.axis_labels) == ("t", "y", "x")  # issue 30.12
    np.testing.assert_array_equal(np.asarray(out.data[0]), tiny_model.denoise(noisy, axes="TYX"))
    group = zarr.open_group(str(tmp_path / "lazy_denoised.ome.zarr"), mode="r")
    assert group.attrs["napari_b2u"]["complete"]
    assert layer.data is lazy  # the input is untouched
    # a layer in memory still denoises in place
    d.set_layers([small])
    d.in_place.setChecked(True)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    np.testing.assert_array_equal(small.data, tiny_model.denoise(noisy[:2], axes="TYX"))


def test_a_pyramid_layer_is_denoised_from_its_full_resolution(viewer, qtbot, noisy, tiny_model,
                                                              tmp_path):
    levels = [da.from_array(noisy), da.from_array(noisy[:, ::2, ::2])]
    layer = viewer.add_image(levels, multiscale=True, name="pyr")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer])  # usable here (not in the Train panel): to OME-Zarr only
    assert d.layer_list.checked_layers() == [layer] and d.to_zarr.isChecked()
    d.zarr_target.edit.setText(str(tmp_path))
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    out = viewer.layers["pyr_denoised"]
    np.testing.assert_array_equal(np.asarray(out.data[0]), tiny_model.denoise(noisy, axes="TYX"))


def test_cancel_to_ome_zarr_keeps_finished_blocks_and_resumes(viewer, qtbot, tiny_model,
                                                             tmp_path, monkeypatch):
    import zarr

    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "10kB")
    big = np.random.default_rng(1).integers(0, 255, (12, 128, 128), dtype=np.uint8)
    layer = viewer.add_image(da.from_array(big, chunks=(1, 128, 128)), name="big")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer])
    d.zarr_target.edit.setText(str(tmp_path))
    d.batch_spin.setValue(1)
    d.output_combo.setCurrentIndex(d.output_combo.findData("weighted"))
    assert d.denoise()
    qtbot.waitUntil(lambda: "block 2/12" in d.progress.format() or not d.is_busy, timeout=WAIT)
    d.cancel()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert "Cancelled" in d.status.text()
    assert "big_denoised" not in [ly.name for ly in viewer.layers]
    group = zarr.open_group(str(tmp_path / "big_denoised.ome.zarr"), mode="r")
    assert not group.attrs["napari_b2u"]["complete"]
    assert d.denoise()  # the same run again resumes
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    # and says what it found done (issue 30.9)
    assert re.search(r"\(\d+ of 12 blocks already done by an earlier run into the same folder "
                     r"were skipped\)", d.status.text()), d.status.text()
    np.testing.assert_array_equal(np.asarray(viewer.layers["big_denoised"].data[0]),
                                  tiny_model.denoise(big, axes="TYX", output="weighted",
                                                     batch_size=1))


# ---- issue 30.9: a read-only folder, a second run into the same folder --------------------------
def _lazy_layer_to(folder, viewer, noisy, tiny_model, monkeypatch):
    """A lazy layer larger than the (tiny) memory budget, ticked in the Denoise panel with the
    session's model, to be written as OME-Zarr into ``folder``."""
    monkeypatch.setenv("NAPARI_B2U_MEMORY_BUDGET", "10kB")
    layer = viewer.add_image(da.from_array(noisy, chunks=(1, 32, 32)), name="lazy")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer])
    d.zarr_target.edit.setText(str(folder))
    return d, layer


def test_ome_zarr_into_a_read_only_folder_is_refused_in_the_panel(read_only_folder, viewer,
                                                                  qtbot, noisy, tiny_model,
                                                                  monkeypatch):
    # (read_only_folder first: it may skip, and napari's viewer fixture must not be made then)
    d, layer = _lazy_layer_to(read_only_folder, viewer, noisy, tiny_model, monkeypatch)
    assert not d.denoise()  # before any work
    text = d.status.text()
    assert d.status.kind == "error", text
    assert text.startswith("Save to: Cannot write the OME-Zarr output ") and \
        "lazy_denoised.ome.zarr" in text and "choose a folder you can write to" in text, text
    assert "unexpectedly" not in text and "report" not in text
    assert list(read_only_folder.iterdir()) == [] and [ly.name for ly in viewer.layers] == ["lazy"]


def test_a_second_run_into_the_same_folder_refreshes_its_layer(viewer, qtbot, noisy, tiny_model,
                                                               tmp_path, monkeypatch):
    d, layer = _lazy_layer_to(tmp_path, viewer, noisy, tiny_model, monkeypatch)
    assert d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    out = viewer.layers["lazy_denoised"]
    assert "already done" not in d.status.text() and "refreshed" not in d.status.text()
    assert d.denoise()  # again: every block is on disk
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    assert [ly.name for ly in viewer.layers] == ["lazy", "lazy_denoised"]  # no '… [1]'
    assert viewer.layers["lazy_denoised"] is out
    text = d.status.text()
    assert d.status.kind == "ok", text
    assert re.search(r"all \d+ blocks were already done by an earlier run into the same "
                     r"folder: nothing was denoised again", text), text
    assert "the layer 'lazy_denoised' was refreshed, not added again" in text, text
    np.testing.assert_array_equal(np.asarray(out.data[0]), tiny_model.denoise(noisy, axes="TYX"))


def test_an_ome_zarr_output_in_reordered_axes_is_labelled_by_them(viewer, qtbot, noisy,
                                                                  tiny_model, tmp_path):
    # issue 30.12: OME-Zarr wants time first; a Y X T layer comes back as T Y X, labelled so
    lazy = da.from_array(np.ascontiguousarray(np.moveaxis(noisy[:5], 0, -1)))
    layer = viewer.add_image(lazy, name="yxt")
    session_for(viewer).set_model(tiny_model, "tiny test model")
    d = dock(viewer, DENOISE)
    d.set_layers([layer], axes="YXT")
    d.to_zarr.setChecked(True)
    d.zarr_target.edit.setText(str(tmp_path))
    assert d.denoise(), d.status.text()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    out = viewer.layers["yxt_denoised"]
    assert out.data[0].shape == (5, 64, 64) and tuple(out.axis_labels) == ("t", "y", "x")
