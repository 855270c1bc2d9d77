"""Pickers that follow the viewer: one layer (combo box), several layers (check list), and the
device. Layers are compared by identity of the unwrapped napari objects (see ``_session``)."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QSizePolicy

from ._layers import candidate_layers, layer_problem
from ._prefs import plugin_defaults
from ._session import unwrap


class _LayerWatcher:
    """Calls ``self._rebuild()`` when layers are added, removed, moved or renamed."""

    def _watch(self, viewer) -> None:
        self.viewer = unwrap(viewer)
        ev = self.viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered", "renamed"):
            getattr(ev, name).connect(self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        try:
            self._rebuild()
        except RuntimeError:  # the Qt side was deleted (viewer closing)
            pass


def _find(layers, layer) -> int:
    layer = unwrap(layer)
    return next((i for i, ly in enumerate(layers) if ly is layer and ly is not None), -1)


class LayerCombo(QComboBox, _LayerWatcher):
    """Picks one layer of the viewer; lists unusable ones too, so that choosing one can say why.
    ``none_text`` adds a first 'no layer' entry. At first it offers the viewer's selected layer
    (else the first usable one, and :attr:`swap_note` says which and why). When the chosen layer
    is removed it does not switch to another one: it shows that the layer was removed and emits
    ``layer_removed`` with its name."""

    layer_changed = Signal()
    layer_removed = Signal(str)

    def __init__(self, viewer, none_text: str | None = None, parent=None):
        super().__init__(parent)
        self._none_text = none_text
        self._removed_text: str | None = None
        self._swapped: tuple | None = None  # (layer chosen instead of the selected one, why)
        self._layers: list = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._watch(viewer)
        self._rebuild()
        self.currentIndexChanged.connect(self._on_index_changed)

    def _on_index_changed(self, *_) -> None:
        if self.current_layer() is not None:
            self._removed_text = None
        self.layer_changed.emit()

    def _initial(self, layers):
        """The viewer's selected layer if usable, else the first usable layer (remembering
        why the selected one was passed over)."""
        active = unwrap(self.viewer.layers.selection.active)
        i = _find(layers, active)
        problem = layer_problem(layers[i]) if i >= 0 else None
        if i >= 0 and problem is None:
            return layers[i]
        chosen = next((ly for ly in layers if layer_problem(ly) is None), None)
        if chosen is not None and problem is not None:
            self._swapped = (chosen, f"'{chosen.name}' is chosen, the first usable image: the "
                             f"selected layer cannot be used. {problem}")
        return chosen

    @property
    def swap_note(self) -> str | None:
        """Why the chosen layer is not the one selected in the viewer, while it is chosen."""
        if self._swapped is None or self.current_layer() is not self._swapped[0]:
            return None
        return self._swapped[1]

    def _rebuild(self) -> None:
        previous = self.current_layer()
        layers = candidate_layers(self.viewer)
        gone = previous is not None and _find(layers, previous) < 0
        current = None if gone else previous
        if gone and self._none_text is None:
            self._removed_text = f"('{previous.name}' was removed: pick a layer)"
        if current is None and self._none_text is None and self._removed_text is None:
            current = self._initial(layers)
        head = []
        if self._none_text is not None:
            head = [(None, self._none_text)]
        elif current is None and self._removed_text is not None:
            head = [(None, self._removed_text)]
        self._layers = [ly for ly, _ in head] + layers
        self.blockSignals(True)
        self.clear()
        for _, text in head:
            self.addItem(text)
        for ly in layers:
            problem = layer_problem(ly)
            self.addItem(ly.name if problem is None else f"{ly.name}  (not usable)")
            if problem:
                self.setItemData(self.count() - 1, problem, Qt.ItemDataRole.ToolTipRole)
        idx = _find(self._layers, current)
        self.setCurrentIndex(max(idx, 0) if self._layers else -1)
        self.blockSignals(False)
        if gone:
            self.layer_removed.emit(previous.name)
        if self.current_layer() is not previous:
            self.layer_changed.emit()

    @property
    def removed_text(self) -> str | None:
        """Set while the chosen layer was removed and no other has been picked."""
        return self._removed_text if self.current_layer() is None else None

    def current_layer(self):
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer) -> None:
        """Choose ``layer`` (None: the 'no layer' entry, if there is one)."""
        i = 0 if layer is None and self._none_text is not None else _find(self._layers, layer)
        if i < 0:
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not in the list")
        self.setCurrentIndex(i)


def _no_decoration(layer) -> str:
    return ""


class LayerChecklist(QListWidget, _LayerWatcher):
    """Layers with check boxes (several may be denoised at once); unusable layers are listed,
    greyed, with the reason as tooltip. ``initial``: the layers ticked at first;
    ``multiscale_ok``: pyramids are usable (denoised to OME-Zarr)."""

    changed = Signal()

    def __init__(self, viewer, decorate=None, initial=(), parent=None, multiscale_ok=False):
        super().__init__(parent)
        self._decorate = decorate or _no_decoration
        self._multiscale_ok = multiscale_ok
        self._layers: list = []
        self._checked: set[int] = {id(unwrap(ly)) for ly in initial
                                   if layer_problem(ly, multiscale_ok) is None}
        self.setMaximumHeight(110)
        self._watch(viewer)
        self._rebuild()
        self.itemChanged.connect(self._on_item_changed)

    def _on_item_changed(self, item) -> None:
        layer = self._layers[self.row(item)]
        if item.checkState() == Qt.CheckState.Checked:
            self._checked.add(id(layer))
        else:
            self._checked.discard(id(layer))
        self.changed.emit()

    def _rebuild(self) -> None:
        self._layers = candidate_layers(self.viewer)
        alive = {id(ly) for ly in self._layers}
        self._checked &= alive
        self.blockSignals(True)
        self.clear()
        for ly in self._layers:
            problem = layer_problem(ly, self._multiscale_ok)
            item = QListWidgetItem(ly.name + (self._decorate(ly) if problem is None
                                              else "  (not usable)"))
            if problem is None:
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if id(ly) in self._checked
                                   else Qt.CheckState.Unchecked)
            else:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
                item.setToolTip(problem)
            self.addItem(item)
        self.blockSignals(False)
        self.changed.emit()

    def refresh(self) -> None:
        self._rebuild()

    def layer_at(self, row: int):
        return self._layers[row] if 0 <= row < len(self._layers) else None

    def checked_layers(self) -> list:
        return [ly for ly in self._layers if id(ly) in self._checked]

    def set_checked(self, layers) -> None:
        self._checked = {id(unwrap(ly)) for ly in layers}
        self._rebuild()


class DeviceCombo(QComboBox):
    """'auto' and every device torch sees, with GPU name and free memory (refreshed when the
    list opens)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fill()
        self._prefer(plugin_defaults()["device"])

    def _prefer(self, kind: str) -> None:
        """Start on the device napari's Preferences name ('cuda': the first CUDA GPU), if this
        machine has it; else on auto."""
        for i in range(self.count()):
            data = self.itemData(i)
            if kind != "auto" and (data == kind or str(data).startswith(f"{kind}:")):
                self.setCurrentIndex(i)
                return

    def _fill(self) -> None:
        from ..device import available_devices, device_info

        current = self.device() if self.count() else "auto"
        devices = available_devices()
        texts = {}
        for d in devices:
            try:
                texts[d] = device_info(d).describe()
            except Exception as exc:  # noqa: BLE001 - a broken driver must not break the widget
                texts[d] = f"{d}: unavailable ({exc})"
        self.blockSignals(True)
        self.clear()
        self.addItem(f"auto → {texts[devices[0]]}", "auto")
        for d in devices:
            self.addItem(texts[d], d)
        self.setCurrentIndex(max(0, self.findData(current)))
        self.blockSignals(False)
        self.setToolTip("auto picks the first CUDA GPU, then Apple MPS, then the CPU")

    def showPopup(self) -> None:  # noqa: N802 - Qt name
        self._fill()
        super().showPopup()

    def device(self) -> str:
        return self.currentData() or "auto"

    def set_device(self, device: str) -> None:
        i = self.findData(device)
        if i < 0:
            raise ValueError(f"device {device!r} is not available here")
        self.setCurrentIndex(i)

    def device_type(self) -> str:
        """'cuda', 'mps' or 'cpu': what the choice resolves to (selects the presets)."""
        from ..device import available_devices

        d = self.device()
        d = available_devices()[0] if d == "auto" else d
        return d.split(":")[0]
