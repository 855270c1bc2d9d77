"""napari layers <-> the core's stacks: which layers can be used, their axes, where the viewer's
slider and camera point in a stack, and how previews and outputs are placed. Qt-free."""

from __future__ import annotations

import weakref

import numpy as np

from ..data import (
    SAMPLE_AXES,
    Layout,
    axes_notes,
    check_dtype,
    default_axes,
    parse_axes,
    single_channel_of_rgb,
)
from ..errors import InputError
from ._session import META_KEY, unwrap

#: napari axis labels (lower-cased) that name one of the core's axes letters
_LABELS = {
    "T": {"t", "time", "frame", "frames", "timepoint", "timepoints"},
    "Z": {"z", "depth", "plane", "planes", "slice", "slices"},
    "C": {"c", "ch", "channel", "channels"},
    "S": {"s", "sample", "samples", "position", "positions", "p", "tile"},
    "Y": {"y", "row", "rows"},
    "X": {"x", "col", "cols", "column", "columns"},
}

NO_LAYER = ("No image layer chosen. Open an image (File ▸ Open…) or a sample "
            "(File ▸ Open Sample ▸ Blind2Unblind), then pick it here.")


def is_preview(layer) -> bool:
    return bool(layer.metadata.get(META_KEY, {}).get("preview")) if layer is not None else False


def candidate_layers(viewer) -> list:
    """Layers shown in the pickers: images (usable or not) and labels (to say why not)."""
    from napari.layers import Image, Labels

    return [unwrap(ly) for ly in unwrap(viewer).layers
            if isinstance(ly, (Image, Labels)) and not is_preview(ly)]


# ---- colour-mapped RGB layers that hold one channel -----------------------------------------
_RGB: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> (data, result)


def rgb_channel(layer):
    """(channel, note) when ``layer`` is an RGB layer that holds one channel (grey, or a
    single-colour lookup table); None for true colour and for other layers. Cached per data."""
    layer = unwrap(layer)
    if layer is None or not getattr(layer, "rgb", False):
        return None
    cached = _RGB.get(layer)
    if cached is not None and cached[0] is layer.data:
        return cached[1]
    found = single_channel_of_rgb(np.asarray(layer.data))
    _RGB[layer] = (layer.data, found)
    return found


def layer_problem(layer, multiscale_ok: bool = False) -> str | None:
    """Why ``layer`` cannot be trained on or denoised, in plain words; None if it can.
    ``multiscale_ok``: a pyramid is fine (the Denoise panel writes it to OME-Zarr)."""
    from napari.layers import Image, Labels

    layer = unwrap(layer)
    if layer is None:
        return NO_LAYER
    name = layer.name
    if isinstance(layer, Labels):
        return (f"'{name}' is a Labels layer (a segmentation), not an intensity image. "
                "Blind2Unblind denoises fluorescence images: pick an Image layer.")
    if not isinstance(layer, Image):
        return f"'{name}' is a {type(layer).__name__} layer, not an image: pick an Image layer."
    if is_preview(layer):
        return f"'{name}' is a live preview of training: pick the image it was made from."
    if getattr(layer, "multiscale", False) and not multiscale_ok:
        return (f"'{name}' is a multiscale (pyramid) image. Denoise it to OME-Zarr in the "
                "Denoise panel, or open its full-resolution level as a plain image layer.")
    if getattr(layer, "rgb", False) and rgb_channel(layer) is None:
        return (f"'{name}' is a true-colour RGB(A) image. Blind2Unblind needs raw fluorescence "
                "intensities: right-click the layer ▸ Split RGB and pick one channel, or open "
                "the original microscope file.")
    try:
        check_dtype(np.empty(0, dtype=layer.data.dtype))
    except InputError as exc:
        return f"'{name}': {exc}."
    return None


def layer_note(layer) -> str | None:
    """Something to say about how a usable layer is read (an RGB layer holding one channel)."""
    found = rgb_channel(layer)
    return f"'{unwrap(layer).name}': {found[1]}" if found is not None else None


def layer_shape(layer) -> tuple[int, ...]:
    """The shape of the intensities (an RGB layer without its colour axis)."""
    layer = unwrap(layer)
    shape = tuple(int(s) for s in layer.data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def layer_array(session, layer):
    """The intensities to train on or denoise: the raw data (the kept original of a layer
    denoised in place), or the one channel of a colour-mapped RGB layer."""
    found = rgb_channel(layer)
    return found[0] if found is not None else session.raw_data(layer)


# ---- axes -----------------------------------------------------------------------------------
def _label_letter(label) -> str | None:
    text = str(label).strip().lower()
    for letter, names in _LABELS.items():
        if text in names:
            return letter
    return None


def layer_axes(layer) -> str | None:
    """The axes ``layer`` itself declares: its metadata['axes'] if valid, else its napari axis
    labels if they name axes (t, z, c, y, x, ...); None if it declares none."""
    layer = unwrap(layer)
    ndim = len(layer_shape(layer))
    meta = layer.metadata.get("axes")
    if isinstance(meta, str):
        try:
            return parse_axes(meta, ndim)
        except InputError:
            pass
    letters = [_label_letter(lb) for lb in getattr(layer, "axis_labels", ())]
    if (len(letters) == ndim and None not in letters and len(set(letters)) == ndim
            and "Y" in letters and "X" in letters):
        return "".join(letters)
    return None


def propose_axes(layer, model_axes: str | None = None) -> tuple[str, bool]:
    """(axes, guessed) for ``layer``: what the layer declares, else ``model_axes`` (the axes a
    model was trained with) when they fit its dimensions, else the core's guess."""
    declared = layer_axes(layer)
    if declared:
        return declared, False
    ndim = len(layer_shape(layer))
    if model_axes and len(model_axes) == ndim:
        return model_axes, False
    try:
        return default_axes(ndim, guess=True), True
    except InputError:
        return "", True


def infer_axes(layer) -> str:
    """Axes for ``layer``: declared (metadata, axis labels), else the core's guess
    ('YX', 'TYX', 'TZYX', ...)."""
    return propose_axes(layer)[0]


def axes_warnings(layer, axes: str, guessed: bool = False) -> list[str]:
    """The core's warnings about a valid but probably wrong axes choice for ``layer``."""
    try:
        ax = parse_axes(axes, len(layer_shape(layer)))
    except InputError:
        return []
    return axes_notes(layer_shape(layer), ax, guessed)


def layout_of(layer, axes: str) -> Layout:
    """The core's layout for ``layer`` with ``axes`` (raises InputError with a plain message)."""
    shape = layer_shape(layer)
    return Layout(parse_axes(axes, len(shape)), shape)


def describe_layout(layout: Layout) -> str:
    h, w = layout.frame_shape
    n, c = layout.n_frames, layout.n_channels
    frames = f"{n} frame{'s' if n != 1 else ''} of {h}×{w}"
    return frames + (f", {c} channels" if c > 1 else "")


# ---- where the viewer looks ------------------------------------------------------------------
def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera``
    before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def preview_size(layout: Layout, cap: int = 256) -> int:
    """Side of the preview crop: half the frame (so the preview reads as a window onto the
    denoised image inside the noisy one), at least 32 pixels, at most ``cap``."""
    side = min(layout.frame_shape)
    return int(min(cap, side, max(32, side // 2)))


def view_target(viewer, layer, layout: Layout, size: int):
    """(frame, region) under the viewer's slider and camera for ``layer``: the frame index over
    all frames in the core's (N, C, Y, X) order, and a ``size``-pixel square (y0, x0, h, w)
    centred on the camera when Y and X are the displayed axes (else on the frame)."""
    axes, shape = layout.axes, layout.shape
    ndim = len(axes)
    point = list(viewer.dims.point)
    offset = len(point) - ndim  # world dim of the layer's dim 0
    iy, ix = axes.index("Y"), axes.index("X")
    centred = list(viewer.dims.displayed)[-2:] == [offset + iy, offset + ix]
    if centred:
        point[offset + iy], point[offset + ix] = list(camera_of(viewer).center)[-2:]
    pos = layer.world_to_data(point)
    batch = [i for i, a in enumerate(axes) if a in SAMPLE_AXES]
    idx = [int(np.clip(round(float(pos[i])), 0, shape[i] - 1)) for i in batch]
    frame = int(np.ravel_multi_index(idx, [shape[i] for i in batch])) if batch else 0
    h, w = layout.frame_shape
    cy, cx = (float(pos[iy]), float(pos[ix])) if centred else (h / 2, w / 2)
    ph, pw = min(size, h), min(size, w)
    y0 = int(np.clip(round(cy - ph / 2), 0, h - ph))
    x0 = int(np.clip(round(cx - pw / 2), 0, w - pw))
    return frame, (y0, x0, ph, pw)


def preview_placement(image: np.ndarray, frame: int, region, layout: Layout, layer):
    """A (C, h, w) preview of ``region`` (y0, x0, h, w) of ``frame`` as an array with the
    layer's dimensions (sample axes of size 1), and the translate that puts it over its crop
    and frame in world coordinates."""
    axes = layout.axes
    y0, x0 = region[0], region[1]
    sub = "CYX" if "C" in axes else "YX"
    arr = image if "C" in axes else image[0]
    order = [a for a in axes if a in sub]
    arr = np.transpose(arr, [sub.index(a) for a in order])
    shape = [arr.shape[order.index(a)] if a in order else 1 for a in axes]
    arr = arr.reshape(shape)
    batch = [i for i, a in enumerate(axes) if a in SAMPLE_AXES]
    offsets = [0.0] * len(axes)
    if batch:
        for i, k in zip(batch, np.unravel_index(frame, [layout.shape[i] for i in batch])):
            offsets[i] = float(k)
    offsets[axes.index("Y")], offsets[axes.index("X")] = float(y0), float(x0)
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float) + scale * np.asarray(offsets)
    return arr, translate


def axis_labels(layer, axes: str) -> tuple[str, ...]:
    """napari axis labels for a layer the plugin adds from ``layer``, holding a stack with
    ``axes`` (one letter per dimension): ``layer``'s own labels when it has them (not napari's
    defaults '-3', '-2', …), else the letters in lower case ('t', 'y', 'x')."""
    own = tuple(str(a) for a in (getattr(unwrap(layer), "axis_labels", None) or ()))
    default = tuple(str(-i) for i in range(len(own), 0, -1))
    if own and own != default and len(own) == len(axes):
        return own
    return tuple(a.lower() for a in axes)


def output_kwargs(layer, name: str, note: dict, axes: str) -> dict:
    """Keyword arguments for a new Image layer holding denoised data in ``layer``'s place (a
    stack with ``axes``): scale, translate, rotation, units, metadata, contrast and colormap
    are kept; the axis labels are ``layer``'s, else named after ``axes``."""
    _, state, _ = unwrap(layer).as_layer_data_tuple()
    state = dict(state)
    for key in ("rgb", "multiscale", "locked_data_level"):
        state.pop(key, None)
    state["name"] = name
    state["metadata"] = {**layer.metadata, META_KEY: note}
    state["axis_labels"] = axis_labels(layer, axes)
    return state
