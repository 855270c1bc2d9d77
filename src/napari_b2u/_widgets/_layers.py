"""napari layers <-> the core's stacks: which layers can be used, their axes, where the viewer's
slider and camera point in a stack, and how previews and outputs are placed. Qt-free."""

from __future__ import annotations

import numpy as np

from ..data import SAMPLE_AXES, InputError, Layout, check_dtype, parse_axes
from ._session import META_KEY

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

    return [ly for ly in viewer.layers
            if isinstance(ly, (Image, Labels)) and not is_preview(ly)]


def layer_problem(layer) -> str | None:
    """Why ``layer`` cannot be trained on or denoised, in plain words; None if it can."""
    from napari.layers import Image, Labels

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
    if getattr(layer, "rgb", False):
        return (f"'{name}' is an RGB(A) colour image. Blind2Unblind needs raw fluorescence "
                "intensities: right-click the layer ▸ Split RGB and pick one channel, or open "
                "the original microscope file.")
    if getattr(layer, "multiscale", False):
        return (f"'{name}' is a multiscale (pyramid) image. Open its full-resolution level as "
                "a plain image layer to train on it or denoise it.")
    try:
        check_dtype(np.empty(0, dtype=layer.data.dtype))
    except InputError as exc:
        return f"'{name}': {exc}."
    return None


def _label_letter(label) -> str | None:
    text = str(label).strip().lower()
    for letter, names in _LABELS.items():
        if text in names:
            return letter
    return None


def default_axes(ndim: int) -> str:
    """The axes proposed for ``ndim`` dimensions without labels: every leading axis a sample
    axis (safe: it never mixes channels into one network input by guess)."""
    return SAMPLE_AXES[: max(0, ndim - 2)] + "YX"


def infer_axes(layer) -> str:
    """Axes for ``layer``: its metadata['axes'] if valid, else its napari axis labels if they
    name axes (t, z, c, y, x, ...), else 'YX' / 'TYX' / 'TZYX' by dimensions."""
    ndim = layer.ndim
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
    return default_axes(ndim)


def layout_of(layer, axes: str) -> Layout:
    """The core's layout for ``layer`` with ``axes`` (raises InputError with a plain message)."""
    ax = parse_axes(axes, layer.ndim)
    return Layout(ax, tuple(int(s) for s in layer.data.shape))


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


def preview_placement(preview: np.ndarray, region, layout: Layout, layer):
    """A (C, h, w) preview as an array with the layer's dimensions (sample axes of size 1) and
    the translate that puts it over its crop and frame in world coordinates."""
    axes = layout.axes
    frame, y0, x0, _, _ = region
    sub = "CYX" if "C" in axes else "YX"
    arr = preview if "C" in axes else preview[0]
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


def output_kwargs(layer, name: str, note: dict) -> dict:
    """Keyword arguments for a new Image layer holding denoised data in ``layer``'s place: scale,
    translate, rotation, units, axis labels, metadata, contrast and colormap are kept."""
    _, state, _ = layer.as_layer_data_tuple()
    state = dict(state)
    for key in ("rgb", "multiscale", "locked_data_level"):
        state.pop(key, None)
    state["name"] = name
    state["metadata"] = {**layer.metadata, META_KEY: note}
    return state
