"""The widgets know nothing only methods should: every registered method trains from the Train
widget, and a method registered by a test — with its own outputs, previews, help texts,
parameters and schedule — is trained and used for denoising by the widgets, untouched. Helpers
and fixtures in test_widget_common.py."""
# ruff: noqa: F811 - pytest fixtures imported from test_widget_common are redefined as arguments

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import torch  # noqa: E402

from napari_b2u._widgets._session import session_for  # noqa: E402
from napari_b2u.methods import Method, get_method, method_titles, register  # noqa: E402
from napari_b2u.params import Param  # noqa: E402

from .test_widget_common import (  # noqa: E402, F401 - fixtures are used by name
    DENOISE,
    TINY_GUI,
    TRAIN,
    WAIT,
    _one_torch_thread,
    dock,
    noisy,
    train_widget,
    viewer,
)

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("method", [m for m in method_titles() if m != "b2u"])
def test_every_registered_method_trains_from_the_widget(viewer, qtbot, noisy, method):
    cls = type(get_method(method))
    w = train_widget(viewer, viewer.add_image(noisy, name="noisy"), method=method, steps=3)
    # the form offers exactly the method's user parameters
    assert set(w.form.method_fields) == {p.name for p in cls.user_params()}
    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "ok", w.status.text()
    assert set(w.preview_layers) == set(cls.preview_names)
    axis = w.plot.widget.getPlotItem().getAxis("right")
    assert axis.isVisible() == (cls.schedule_name is not None)
    if cls.schedule_name is not None:
        assert axis.labelText == cls.schedule_label
    model = session_for(viewer).model
    assert model.method_name == method
    # methods that fit a noise model say so to the user (B2S: a photon-transfer estimate)
    assert ("Fitted noise" in w.status.text()) == ("noise_gain" in model.readout())


class Smoother(Method):
    """A method only this test knows: a network trained to reproduce its input, scaled by a
    'strength' parameter; a ramp schedule; two outputs; a spread preview."""

    name = "test_smoother"
    title = "Test smoother (registered by a test)"
    outputs = ("smooth", "identity")
    preview_names = ("identity", "smooth", "spread")
    default_preview = "smooth"
    texts = {
        "smooth": "smooth: the network's estimate, scaled by the strength",
        "identity": "identity: the input as it is",
        "spread": "spread: |smooth − input| (a spread map)",
        "loss": "total loss: grows with the ramp",
        "steady": "steady error: does not move with the ramp",
    }
    spread_previews = ("spread",)
    loss_terms = ("loss", "steady")
    plot_term = "steady"
    schedule_name = "ramp"
    schedule_label = "ramp weight (test)"
    parameters = (
        Param("strength", float, 0.5, 0.0, 1.0, label="strength",
              help="how much of the network's estimate to use"),
        Param("flavour", str, "plain", choices=("plain", "fancy"),
              help="a choice that changes nothing"),
        Param("centre", bool, False, help="a switch that changes nothing"),
        Param("hidden_knob", int, 3, 1, 9, user=False, help="not offered to users"),
    )

    def schedule(self, p):
        return 1.0 + p

    def _smooth(self, model, y):
        s = float(self.params["strength"])
        return s * self.run(model, y) + (1.0 - s) * y

    def training_loss(self, model, y, sched):
        steady = torch.mean((self.run(model, y) - y) ** 2)
        loss = steady * (1.0 if sched is None else sched)
        return loss, {"loss": loss, "steady": steady}

    def validation_error(self, model, y):
        return torch.mean((self.run(model, y) - y) ** 2)

    def predict(self, model, y, output=None):
        output = self.check_output(output)
        return y if output == "identity" else self._smooth(model, y)

    def previews(self, model, y, sched):
        smooth = self._smooth(model, y)
        return {"identity": y, "smooth": smooth, "spread": (smooth - y).abs()}


@pytest.fixture
def smoother():
    from napari_b2u import methods

    register(Smoother)
    yield Smoother
    methods._REGISTRY.pop(Smoother.name, None)  # leave the registry as it was
    assert Smoother.name not in method_titles()


def test_a_method_registered_elsewhere_is_trained_and_used_untouched(viewer, qtbot, noisy,
                                                                    smoother):
    from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox

    layer = viewer.add_image(noisy, name="noisy")
    w = dock(viewer, TRAIN)
    assert w.method_combo.findData(smoother.name) >= 0
    assert w.method_combo.itemText(w.method_combo.findData(smoother.name)) == smoother.title
    w.configure(layer=layer, device="cpu", method=smoother.name, steps=4,
                **{**TINY_GUI, "preview_every": 2})
    # its user parameters, rendered from their specs (type, range, choices, help)
    fields = w.form.method_fields
    assert set(fields) == {"strength", "flavour", "centre"}
    strength = fields["strength"].widget
    assert isinstance(strength, QDoubleSpinBox)
    assert (strength.minimum(), strength.maximum(), strength.value()) == (0.0, 1.0, 0.5)
    assert "How much of the network's estimate to use (a number >= 0" in strength.toolTip()
    assert isinstance(fields["flavour"].widget, QComboBox)
    assert [fields["flavour"].widget.itemText(i) for i in range(2)] == ["plain", "fancy"]
    assert isinstance(fields["centre"].widget, QCheckBox)
    assert w.params()["strength"] is None  # untouched: the method's default decides
    w.configure(strength=0.25, flavour="fancy")
    assert w.params()["strength"] == 0.25 and w.params()["flavour"] == "fancy"
    # its previews, with its help texts and first preview
    radios = {b.text(): b for b in w.preview_buttons.buttons()}
    assert set(radios) == {"identity", "smooth", "spread", "hidden"}
    assert radios["spread"].toolTip() == smoother.texts["spread"]
    assert radios["smooth"].isChecked()

    assert w.start()
    qtbot.waitUntil(lambda: not w.is_training, timeout=WAIT)
    assert w.status.kind == "ok", w.status.text()
    model = session_for(viewer).model
    assert model.method_name == smoother.name and model.method_params["strength"] == 0.25
    assert model.method_params["flavour"] == "fancy" and model.method_params["hidden_knob"] == 3
    # the plot: its steady term, its schedule under its label
    assert set(w.plot.curves) == {"steady"}
    assert smoother.texts["steady"] in w.plot.legend_texts()
    right = w.plot.widget.getPlotItem().getAxis("right")
    assert right.isVisible() and right.labelText == "ramp weight (test)"
    assert np.all(w.plot.sched_curve.getData()[1] >= 1.0)
    assert "ramp weight (test)" in w.metrics.text()
    # its previews as layers: the spread with its own colormap and contrast
    layers = w.preview_layers
    assert set(layers) == {"identity", "smooth", "spread"}
    assert layers["smooth"].visible and not layers["spread"].visible
    assert layers["spread"].colormap.name == "magma"
    assert layers["identity"].colormap.name == layer.colormap.name
    t, y0, x0 = (int(v) for v in layers["identity"].translate)  # the frame under the slider
    np.testing.assert_allclose(layers["identity"].data[0], noisy[t, y0:y0 + 32, x0:x0 + 32],
                               atol=1e-3)
    w.preview_buttons.buttons()[2].click()  # "spread"
    assert layers["spread"].visible and not layers["smooth"].visible

    # denoising with it: its outputs, with its help texts
    d = dock(viewer, DENOISE)
    outputs = [d.output_combo.itemData(i) for i in range(d.output_combo.count())]
    assert outputs == ["smooth", "identity"]
    assert d.output_combo.itemText(1) == smoother.texts["identity"]
    d.output_combo.setCurrentIndex(1)
    d.new_layer.setChecked(True)
    assert d.layer_list.checked_layers() == [layer] and d.denoise()
    qtbot.waitUntil(lambda: not d.is_busy, timeout=WAIT)
    np.testing.assert_array_equal(viewer.layers["noisy_denoised"].data, noisy)  # identity
