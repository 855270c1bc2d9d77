"""The Denoise panel's axes row: which axes each ticked layer is read with (the user's choice,
shared with the Train panel through the session, else the layer's own, else the model's when
they fit, else a guess), with the layout it gives and the notes on it. A mixin of
:class:`~._denoise.DenoiseWidget` (its ``layer_list``, ``axes_edit``, ``axes_hint``,
``axes_row`` and ``session``)."""

from __future__ import annotations

from ..errors import InputError
from ._layers import (
    axes_warnings,
    describe_layout,
    layer_note,
    layer_problem,
    layout_of,
    propose_axes,
)


class DenoiseAxes:
    def _highlighted(self):
        layer = self.layer_list.layer_at(self.layer_list.currentRow())
        if layer is None or layer_problem(layer, True) is not None:
            checked = self.layer_list.checked_layers()
            layer = checked[0] if checked else None
        return layer

    def _model_axes(self) -> str | None:
        model = self.session.model
        return model.info.get("axes") if model is not None else None

    def axes_for(self, layer) -> str:
        """The axes used for ``layer``: the user's choice (here or in the Train panel), else
        what the layer declares, else the model's axes when they fit, else a guess."""
        return self.session.chosen_axes(layer) or propose_axes(layer, self._model_axes())[0]

    def _show_axes(self, *_) -> None:
        layer = self._highlighted()
        self.axes_edit.setEnabled(layer is not None)
        if layer is None:
            self.axes_edit.setText("")
            self.axes_hint.setText("")
            self._set_notes([])
            return
        self.axes_edit.setText(self.axes_for(layer))
        self._update_axes_hint(layer)

    def _on_axes_edited(self, text: str) -> None:
        layer = self._highlighted()
        if layer is not None:
            self.session.choose_axes(layer, text.strip().upper())
            self._update_axes_hint(layer)

    def _update_axes_hint(self, layer) -> None:
        axes = self.axes_for(layer)
        guessed = not self.session.chosen_axes(layer) and propose_axes(
            layer, self._model_axes())[1]
        try:
            desc = describe_layout(layout_of(layer, axes))
            self.axes_hint.setText(f"'{layer.name}': {desc}")
        except InputError:
            self.axes_hint.setText(f"'{layer.name}': shape {tuple(layer.data.shape)}")
        note = layer_note(layer)
        self._set_notes(([note] if note else []) + axes_warnings(layer, axes, guessed))

    def _set_notes(self, notes) -> None:
        self.axes_row.show_notes(notes)
