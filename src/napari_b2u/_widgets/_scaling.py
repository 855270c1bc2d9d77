"""The Denoise panel's "Scaling" choice — a layer scaled as the model's training data was (the
default), or on its own values — and, when the core refuses a layer whose values do not fit the
model's training range (:class:`~napari_b2u.errors.RangeMismatch`), the message in the panel's
words and the button that offers the other scaling."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from ._forms import button

#: (the core's ``normalize``, the panel's words)
SCALINGS = (("model", "as the model's training data"), ("image", "each layer on its own"))
LABEL = "Scaling"
OWN = "Scale on its own and denoise"


class ScalingCombo(QComboBox):
    """``normalize`` for ``Denoiser.denoise_iter``: ``currentData()``."""

    def __init__(self, parent=None):
        super().__init__(parent)
        for value, text in SCALINGS:
            self.addItem(text, value)
        self.setToolTip(
            "How a layer's values are scaled for the network: as the model's training data "
            "was (right for images like the training data, from the same microscope and "
            "settings), or each layer on its own values (for images on another scale, e.g. an "
            "8-bit image with a model trained on 16-bit or float data)")

    def set_own(self) -> None:
        self.setCurrentIndex(self.findData("image"))


def own_button(slot):
    """The button offered after a refusal: scale on its own and denoise (hidden until then)."""
    b = button(OWN, slot, f"Set {LABEL} to '{SCALINGS[1][1]}' and denoise the ticked layers")
    b.hide()
    return b


def range_message(name: str, err) -> str:
    """The panel's words for a :class:`~napari_b2u.errors.RangeMismatch` of layer ``name``."""
    (lo, hi), (t0, t1) = err.image, err.training
    where = f" (channel {err.channel})" if err.channel else ""
    why = (f"{err.outside:.0%} of its pixels would lie far beyond anything the model saw"
           if err.outside > 0.5 else
           f"its variation would shrink to {err.spread:.2g} of what the model saw")
    return (f"'{name}'{where}: its values ({lo:.4g} to {hi:.4g}) do not fit those of the "
            f"model's training data ({t0:.4g} to {t1:.4g}): scaled like them, {why}, and the "
            f"model would return a near-constant image. Click '{OWN}' to scale this layer on "
            f"its own values ({LABEL}: {SCALINGS[1][1]}), or use a model trained on images "
            "like it.")
