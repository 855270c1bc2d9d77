"""What the widgets of one viewer share: the current model and the raw data of layers that were
denoised in place. Qt-free (psygnal signals), one :class:`Session` per viewer.

The raw array of a layer denoised in place is kept here, keyed by the layer object (weakly, so
removing the layer frees it), and handed back untouched by :meth:`Session.restore`: the very
same array object, hence bit-exact and with its dtype.

napari hands plugin widgets a proxy of the viewer (``PublicOnlyProxy``) that wraps every layer
it returns in a new proxy, so ``proxy_layer is layer`` is False and ``id()`` differs on every
access. Everything here and in the widgets works on the unwrapped objects (:func:`unwrap`).
"""

from __future__ import annotations

import weakref

from psygnal import Signal

#: metadata key the plugin writes on layers it made or changed (small, JSON-able values only)
META_KEY = "napari_b2u"
#: added to the name of a layer denoised in place (taken off again by Restore original)
IN_PLACE_SUFFIX = " (denoised)"


def unwrap(obj):
    """The napari object behind a plugin proxy (``obj`` itself when it is not one)."""
    while obj is not None and hasattr(type(obj), "__wrapped__") and hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer, through napari's proxies."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def in_viewer(viewer, layer) -> bool:
    """Whether ``layer`` is (still) one of the layers of ``viewer``, through proxies."""
    layer = unwrap(layer)
    return layer is not None and any(unwrap(ly) is layer for ly in unwrap(viewer).layers)


class Session:
    """Model and originals shared by the Train and Denoise widgets of one viewer."""

    model_changed = Signal()
    originals_changed = Signal()

    def __init__(self) -> None:
        self.model = None  # a napari_b2u.denoise.denoiser.Denoiser
        self.model_source = ""  # e.g. "trained on 'nuclei' (300 steps)" or a file name
        self.model_layer = None  # weakref to the layer the model was trained on
        self._originals: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # (raw, shown)
        self._axes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ---- axes the user chose for a layer (in either widget) ------------------------------------
    def chosen_axes(self, layer) -> str | None:
        return self._axes.get(unwrap(layer)) if layer is not None else None

    def choose_axes(self, layer, axes: str) -> None:
        self._axes[unwrap(layer)] = axes

    # ---- model -----------------------------------------------------------------------------
    def set_model(self, model, source: str, layer=None) -> None:
        self.model = model
        self.model_source = source
        self.model_layer = weakref.ref(unwrap(layer)) if layer is not None else None
        self.model_changed.emit()

    def trained_layer(self):
        """The layer the current model was trained on (None: loaded, or the layer is gone)."""
        return self.model_layer() if self.model_layer is not None else None

    # ---- originals of layers denoised in place ---------------------------------------------
    def has_original(self, layer) -> bool:
        return layer is not None and unwrap(layer) in self._originals

    def raw_data(self, layer):
        """The layer's raw data: the kept original if it was denoised in place."""
        layer = unwrap(layer)
        return self._originals.get(layer, layer.data)

    def plain_name(self, layer) -> str:
        """The layer's name without the mark of a layer denoised in place (outputs and models
        made from its raw data are named after it)."""
        layer = unwrap(layer)
        names = self._names.get(layer)
        return names[0] if names is not None and layer.name == names[1] else layer.name

    def replace_data(self, layer, data, note: dict) -> None:
        """Show ``data`` in ``layer``, keeping its raw array (once: a second in-place denoising
        still keeps the very first, raw array), and mark its name (' (denoised)')."""
        layer = unwrap(layer)
        if layer not in self._originals:
            self._originals[layer] = layer.data
        layer.data = data
        layer.metadata = {**layer.metadata, META_KEY: {"denoised_in_place": True, **note}}
        if self.plain_name(layer) == layer.name:  # not marked yet (or renamed since)
            raw = layer.name
            layer.name = raw + IN_PLACE_SUFFIX
            self._names[layer] = (raw, layer.name)  # napari may have made the name unique
        self.originals_changed.emit()

    def restore(self, layer) -> bool:
        """Put the raw array back into ``layer`` (and its name, unless the user renamed it);
        False if there is nothing to restore."""
        layer = unwrap(layer)
        original = self._originals.pop(layer, None)
        if original is None:
            return False
        layer.data = original
        meta = dict(layer.metadata)
        meta.pop(META_KEY, None)
        layer.metadata = meta
        names = self._names.pop(layer, None)
        if names is not None and layer.name == names[1]:
            layer.name = names[0]
        self.originals_changed.emit()
        return True


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created on first use; it dies with the viewer). A proxy of the
    viewer and the viewer itself share one session."""
    viewer = unwrap(viewer)
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = Session()
        return session
