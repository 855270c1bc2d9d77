"""The live preview layers of the Train widget: one napari layer per preview of the method,
placed exactly over the crop of the frame they show.

They are made when training starts, holding the input's crop (so they are invisible against the
layer they cover until the first preview arrives): adding layers is what costs the GUI thread
time (hundreds of milliseconds), so it happens at the click on Start rather than as a freeze in
the middle of training; a preview then only replaces their data. Spreads (noise-level maps, as
the method names them) get their own colormap and contrast.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..data import SAMPLE_AXES
from ._layers import axis_labels, is_preview, preview_placement
from ._session import META_KEY, in_viewer, unwrap

SPREAD_COLORMAP = "magma"


def input_crop(data, layout, frame: int, region) -> np.ndarray:
    """(C, h, w) float32 of ``region`` (y0, x0, h, w) of ``frame`` of ``data`` laid out as
    ``layout`` (the frame index over all frames in the core's order)."""
    axes = layout.axes
    batch = [i for i, a in enumerate(axes) if a in SAMPLE_AXES]
    where = dict(zip(batch, np.unravel_index(frame, [layout.shape[i] for i in batch])))
    y0, x0, h, w = region
    index = tuple(int(where[i]) if i in where else slice(y0, y0 + h) if a == "Y" else
                  slice(x0, x0 + w) if a == "X" else slice(None) for i, a in enumerate(axes))
    crop = np.asarray(data[index], dtype=np.float32)
    kept = [a for a in axes if a in "CYX"]
    if "C" not in kept:
        crop, kept = crop[None], ["C", *kept]
    return np.transpose(crop, [kept.index(a) for a in "CYX"])


class PreviewLayers:
    """The preview layers of one Train widget (``layers``: preview name -> napari layer)."""

    def __init__(self, viewer):
        self.viewer = unwrap(viewer)
        self.layers: dict = {}
        self.choice: str | None = None  # the preview shown (None: all hidden)
        self._source = None  # weakref to the layer previewed

    @property
    def source(self):
        return self._source() if self._source is not None else None

    def _alive(self, layer) -> bool:
        return in_viewer(self.viewer, layer)

    def prepare(self, source, data, layout, names, spreads, frame: int, region) -> None:
        """Make (or keep, when they fit) one layer per preview name for ``source``, holding the
        input's crop of ``frame``/``region`` until the first preview."""
        source = unwrap(source)
        if self.source is not source:
            self.remove_all()
        if not self._alive(source):  # removed before a resumed run said what it previews
            return
        for name, layer in list(self.layers.items()):
            if not self._alive(layer) or layer.ndim != source.ndim or name not in names:
                self._remove(name)
        self._source = weakref.ref(source)
        self._adopt(source, names)
        crop = input_crop(data, layout, frame, region)
        labels = axis_labels(source, layout.axes)
        selected = list(self.viewer.layers.selection)
        added = False
        for name in names:
            spread = name in spreads
            image = np.zeros_like(crop) if spread else crop
            arr, translate = preview_placement(image, frame, region, layout, source)
            layer = self.layers.get(name)
            if layer is not None:
                layer.data, layer.translate = arr, translate
                layer.visible, layer.axis_labels = name == self.choice, labels
                if not spread:
                    self._match(layer, source)
                continue
            from napari.layers import Image

            layer = self.layers[name] = Image(
                arr, name=f"preview: {name}", translate=translate, scale=source.scale,
                axis_labels=labels, units=source.units,
                visible=name == self.choice, metadata={META_KEY: {"preview": name}},
                **({"colormap": SPREAD_COLORMAP} if spread else self._look(source)))
            self.viewer.layers.insert(self.viewer.layers.index(source) + 1, layer)
            added = True
        self._place([self.layers[n] for n in names], source)
        if added:  # adding a layer selects it; give the user their selection back
            self.viewer.layers.selection.clear()
            self.viewer.layers.selection.update(selected)

    def _adopt(self, source, names) -> None:
        """Take over the preview layers another Train panel of this viewer left (one closed
        and reopened): those of a preview this run shows are reused, the others removed."""
        ours = {id(ly) for ly in self.layers.values()}
        for layer in [unwrap(ly) for ly in self.viewer.layers]:
            if not is_preview(layer) or id(layer) in ours:
                continue
            name = layer.metadata[META_KEY]["preview"]
            if name in names and name not in self.layers and layer.ndim == source.ndim:
                self.layers[name] = layer
            else:
                self.viewer.layers.remove(layer)

    def _place(self, layers, source) -> None:
        """Move ``layers`` just above ``source`` in the layer list, in their order."""
        stack = self.viewer.layers
        for layer in reversed(layers):
            i, s = stack.index(layer), stack.index(source)
            if i != s + 1:
                stack.move(i, s + 1)

    @staticmethod
    def _look(source) -> dict:
        return {"colormap": source.colormap, "contrast_limits": source.contrast_limits}

    @staticmethod
    def _match(layer, source) -> None:
        layer.scale = source.scale
        layer.colormap = source.colormap
        layer.contrast_limits = source.contrast_limits

    def show(self, preview, layout) -> None:
        """Put a :class:`~napari_b2u.train.events.Preview` into the layers (a layer the user removed
        stays removed)."""
        source = self.source
        if source is None:
            return
        for name, layer in self.layers.items():
            image = preview.images.get(name)
            if image is None or not self._alive(layer):
                continue
            arr, translate = preview_placement(image, preview.frame, preview.region, layout,
                                               source)
            layer.data = arr
            layer.translate = translate
            if name in preview.spreads:
                layer.reset_contrast_limits()

    def set_choice(self, name: str | None) -> None:
        self.choice = name
        for n, layer in self.layers.items():
            layer.visible = n == name

    def _remove(self, name: str) -> None:
        layer = self.layers.pop(name)
        if self._alive(layer):
            self.viewer.layers.remove(layer)

    def remove_all(self) -> None:
        for name in list(self.layers):
            self._remove(name)
        self._source = None
