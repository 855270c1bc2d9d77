"""OME-Zarr outputs of out-of-core denoising: created, resumed, written chunk by chunk, given
their multiscales metadata (through ome-zarr-py) and a pyramid once complete.

Layout of an output: a zarr v3 group (OME-Zarr 0.5) with arrays ``0`` (full resolution),
``1``, ``2``… (each halving Y and X), chunks of one frame and one channel by ``chunk`` px.
The group's ``napari_b2u`` attribute records what made it (model checksum, source, options):
a rerun with the same settings resumes, skipping every chunk already on disk (zarr writes
each chunk to a temporary file and renames it, so a chunk on disk is complete); another
model or other options are refused unless ``overwrite``, which replaces only what napari-b2u
wrote (the level arrays and the group's metadata: labels and other files stay), and a folder
napari-b2u did not write is never replaced. ``complete`` turns true, and the multiscales
metadata appears, only when every chunk and the pyramid are written.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..data import SAMPLE_AXES, cast_output
from ..errors import InputError
from ..io.files import same_file
from ..io.sources import require

KEY = "napari_b2u"
#: chunk side (Y, X) of the outputs, and the size below which the pyramid stops
CHUNK = 1024
PYRAMID_MIN = 512


def ngff_axes(axes: str) -> str:
    """``axes`` in an order OME-Zarr accepts (time first, then channel / other axes, then
    space, Y before X): the input's order when it already is one (OME-Zarr inputs always)."""
    ax = axes.upper()
    if len(ax) > 5:
        raise InputError(f"OME-Zarr holds at most 5 dimensions; axes {ax!r} have {len(ax)}: "
                         "write OME-TIFF (--out name.ome.tif) or split the stack")
    if sum(a in "SIQ" for a in ax) > 1:
        raise InputError(f"OME-Zarr holds one axis besides time, channel and space; axes "
                         f"{ax!r} have more (S, I, Q): write OME-TIFF or split the stack")
    other = [a for a in ax if a not in "TZYX"]
    canon = ("T" if "T" in ax else "") + "".join(other) + ("Z" if "Z" in ax else "") + "YX"
    valid = ax.endswith("YX") and (("T" not in ax) or ax[0] == "T") and all(
        ax.index(a) < ax.index("Z") for a in other if "Z" in ax)
    return ax if valid else canon


#: the type OME-Zarr gives each of its named axes
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def axes_metadata(out_axes: str, src) -> list[dict]:
    """OME-Zarr axis dicts: the input's own (names, units) when it is OME-Zarr with the same
    axes, else from the letters (space axes in micrometres when pixel sizes are known). Types
    always follow the letters: OME-Zarr 0.4 allows axes without types, but then more than one
    axis has an unknown type and the output's metadata would be invalid."""
    ngff = getattr(src, "ngff", None)
    if ngff and src.axes and sorted(src.axes) == sorted(out_axes):
        by = dict(zip(src.axes, ngff["axes"]))
        out = []
        for a in out_axes:
            d = dict(by[a])
            if a in _TYPES:
                d["type"] = _TYPES[a]
            elif d.get("type") in _TYPES.values():  # another axis (S, Q): one unknown type
                del d["type"]
            out.append(d)
        return out
    out = []
    for a in out_axes:
        d = {"name": a.lower()}
        if a in _TYPES:
            d["type"] = _TYPES[a]
            if a in "XYZ" and src.pixel_size.get(a):
                d["unit"] = "micrometer"
        out.append(d)
    return out


def check_axes(out_axes: str, src) -> None:
    """Refuse, before any work, axes whose OME-Zarr metadata ome-zarr-py would not write."""
    with warnings.catch_warnings():  # ome-zarr-py's own deprecations, at import
        warnings.simplefilter("ignore", DeprecationWarning)
        axes = require("ome_zarr.axes", "writing OME-Zarr metadata")
        fmt = require("ome_zarr.format", "writing OME-Zarr metadata")
    try:
        axes.Axes(axes_metadata(out_axes, src), fmt=fmt.FormatV05())
    except ValueError as exc:
        raise InputError(f"the axes of {src.name} cannot be written as OME-Zarr ({exc}); "
                         "give --axes, or write OME-TIFF (--out name.ome.tif)") from exc


def base_transform(out_axes: str, src) -> tuple[list[float], list[float] | None]:
    """Scale (and translation) of level 0, from the input's OME-Zarr transforms or its pixel
    sizes (µm)."""
    ngff = getattr(src, "ngff", None)
    if ngff and src.axes and sorted(src.axes) == sorted(out_axes):
        pos = [src.axes.index(a) for a in out_axes]
        trans = ngff.get("translation")
        return ([float(ngff["scale"][i]) for i in pos],
                [float(trans[i]) for i in pos] if trans else None)
    return [float(src.pixel_size.get(a, 1.0)) if a in "XYZ" else 1.0 for a in out_axes], None


def level_shapes(shape: tuple, out_axes: str) -> list[tuple]:
    """Shapes of the pyramid: level 0, then Y and X halved (floor) while the larger side
    exceeds :data:`PYRAMID_MIN` and the smaller stays ≥ 16."""
    iy, ix = out_axes.index("Y"), out_axes.index("X")
    shapes = [tuple(shape)]
    while True:
        s = list(shapes[-1])
        if max(s[iy], s[ix]) <= PYRAMID_MIN or min(s[iy], s[ix]) < 32:
            return shapes
        s[iy], s[ix] = s[iy] // 2, s[ix] // 2
        shapes.append(tuple(s))


def chunks_for(shape: tuple, out_axes: str, chunk: int = CHUNK) -> tuple:
    return tuple(min(chunk, s) if a in "YX" else 1 for a, s in zip(out_axes, shape))


# ---- creating, resuming ---------------------------------------------------------------------
def is_ours(path) -> dict | None:
    """The ``napari_b2u`` record of an output folder written by this package, else None."""
    p = Path(path)
    for meta in ("zarr.json", ".zattrs"):
        f = p / meta
        if f.is_file():
            import json

            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                return None
            attrs = d.get("attributes", d)
            rec = attrs.get(KEY) if isinstance(attrs, dict) else None
            return rec if isinstance(rec, dict) else None
    return None


def check_output_folder(out, inputs, overwrite: bool, identity: dict) -> str:
    """What to do with ``out``: 'create', 'resume' (same identity, unfinished or finished) or
    'replace' (ours, other settings, ``overwrite``). InputError for an input (any input of the
    run), a file, a folder napari-b2u did not write, or other settings without ``overwrite``."""
    out = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        if same_file(out, inp) or _inside(out, inp) or _inside(inp, out):
            raise InputError(f"the output {out} and the input {inp} overlap (one is, or is "
                             "inside, the other); the input is never overwritten: choose "
                             "another output name")
    if not out.exists():
        return "create"
    if not out.is_dir():
        raise InputError(f"{out} exists and is a file; give a new folder name for the OME-Zarr "
                         "output")
    rec = is_ours(out)
    if rec is None:
        raise InputError(f"{out} exists and was not written by napari-b2u; it is never "
                         "replaced (not even with --overwrite): choose another output name")
    diff = [k for k in identity if k not in _INFO_ONLY and rec.get(k) != identity[k]]
    if not diff:
        return "resume"
    if overwrite or not (out / "0").is_dir():  # ours without arrays (a failed start): no loss
        return "replace"
    raise InputError(f"{out} holds the output of an earlier run with other settings "
                     f"({', '.join(diff)} differ); pass --overwrite (overwrite=True) to "
                     "replace it, or choose another name. The same command resumes a run")


#: recorded, not compared on resume (a path may change; the model's checksum and the source's
#: shape, dtype and sampled values are what must match)
_INFO_ONLY = ("complete", "levels_done", "source", "model")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return folder.is_dir()
    except (ValueError, OSError, RuntimeError):
        return False


def create_output(out, action: str, identity: dict, shape, dtype, out_axes: str,
                  chunk: int = CHUNK):
    """Open (resume) or create the output group with its (empty) level arrays. 'replace'
    replaces only what napari-b2u wrote (the level arrays and the group's metadata): OME-Zarr
    labels and any other file a user put in the folder stay."""
    zarr = require("zarr")
    out = Path(out).resolve()  # a symlink: the folder it names is written, the link stays
    shapes = level_shapes(shape, out_axes)
    if action == "resume":
        group = zarr.open_group(str(out), mode="r+")
        a0 = group.get("0")
        if a0 is not None and (a0.shape, a0.dtype, a0.chunks) == (
                shapes[0], np.dtype(dtype), chunks_for(shapes[0], out_axes, chunk)):
            return group
        action = "replace"  # ours and the same settings, but its arrays are not all there
    created = not out.exists()
    try:
        group = zarr.open_group(str(out), mode="a", zarr_format=3)
        # the record first (and only it: the old multiscales go), so that a replace that fails
        # half-way leaves a folder still known as ours, unfinished
        group.attrs.put({KEY: {**identity, "complete": False, "levels_done": 1}})
        for name in os.listdir(out):  # the earlier levels: "0", "1", ...
            if name.isdigit() and (out / name / "zarr.json").is_file():
                shutil.rmtree(out / name)
        names = [a.lower() for a in out_axes]
        for k, s in enumerate(shapes):
            group.create_array(str(k), shape=s, dtype=np.dtype(dtype), chunks=chunks_for(
                s, out_axes, chunk), fill_value=0, dimension_names=names,
                config={"write_empty_chunks": True})
    except OSError:
        if created:  # all of it is this call's: a rerun must not meet a folder it refuses
            shutil.rmtree(out, ignore_errors=True)
        raise
    return group


def chunk_path(out, array, coords: tuple) -> str:
    return os.path.join(str(out), array.path or "", array.metadata.encode_chunk_key(coords))


def frame_index(layout, out_axes: str, f: int) -> dict:
    """{axis letter: index} of frame ``f`` along the frame (sample) axes."""
    ax = layout.axes
    batch = [a for a in ax if a in SAMPLE_AXES]
    sizes = [layout.shape[ax.index(a)] for a in batch]
    idx = np.unravel_index(f, sizes) if sizes else ()
    return {a: int(i) for a, i in zip(batch, idx)}


def block_chunks(out, array, layout, out_axes: str, block) -> list[str]:
    """Paths of the chunk files that ``block`` writes in level 0."""
    chunks = array.chunks
    iy, ix = out_axes.index("Y"), out_axes.index("X")
    cys = range(block.y0 // chunks[iy], -(-block.y1 // chunks[iy]))
    cxs = range(block.x0 // chunks[ix], -(-block.x1 // chunks[ix]))
    n_c = layout.n_channels
    paths = []
    for f in range(block.f0, block.f1):
        where = frame_index(layout, out_axes, f)
        for c in range(n_c):
            for cy in cys:
                for cx in cxs:
                    coords = []
                    for a in out_axes:
                        coords.append(cy if a == "Y" else cx if a == "X" else c if a == "C"
                                      else where[a])
                    paths.append(chunk_path(out, array, tuple(coords)))
    return paths


def block_done(out, array, layout, out_axes: str, block) -> bool:
    return all(os.path.exists(p) for p in block_chunks(out, array, layout, out_axes, block))


def write_block(array, layout, out_axes: str, block, data: np.ndarray) -> None:
    """Write ``data`` (frames, C, rows, columns of ``block``) into level 0, frame by frame
    (each write covers whole chunks, so blocks never share a chunk)."""
    kept = [a for a in out_axes if a in "CYX"]
    order = [("C", "Y", "X").index(a) if "C" in layout.axes else ("Y", "X").index(a)
             for a in kept if a in layout.axes]
    for i, f in enumerate(range(block.f0, block.f1)):
        where = frame_index(layout, out_axes, f)
        idx = tuple(slice(block.y0, block.y1) if a == "Y" else slice(block.x0, block.x1)
                    if a == "X" else slice(None) if a == "C" else where[a] for a in out_axes)
        frame = data[i] if "C" in layout.axes else data[i, 0]
        array[idx] = np.transpose(frame, order)


# ---- finishing --------------------------------------------------------------------------------
def _downsample(block: np.ndarray, iy: int, ix: int, dtype) -> np.ndarray:
    s = list(block.shape)
    s[iy:iy + 1] = [s[iy] // 2, 2]
    jx = ix + (1 if ix > iy else 0)
    s[jx:jx + 1] = [s[jx] // 2, 2]
    m = block.astype(np.float64).reshape(s).mean(axis=(iy + 1, jx + 1))
    return cast_output(m, dtype)


def build_pyramid(out, scheduler=None) -> None:
    """Levels 1, 2… from the level before (2×2 means, rounded and clipped for integers),
    computed chunk by chunk with dask; levels already built (resume) are kept."""
    zarr = require("zarr")
    da = require("dask.array")
    group = zarr.open_group(str(out), mode="r+")
    rec = dict(group.attrs[KEY])
    out_axes = rec["out_axes"]
    iy, ix = out_axes.index("Y"), out_axes.index("X")
    k = int(rec.get("levels_done", 1))
    while str(k) in group:
        prev, dst = group[str(k - 1)], group[str(k)]
        x = da.from_zarr(prev)
        x = x[tuple(slice(0, 2 * dst.shape[i]) if i in (iy, ix) else slice(None)
                    for i in range(x.ndim))]
        x = x.rechunk(tuple(2 * c if i in (iy, ix) else c for i, c in enumerate(dst.chunks)))
        y = x.map_blocks(_downsample, iy, ix, dst.dtype, dtype=dst.dtype,
                         chunks=tuple((tuple(c // 2 for c in cs) if i in (iy, ix) else cs)
                                      for i, cs in enumerate(x.chunks)))
        da.store(y, dst, lock=False, scheduler=scheduler)
        k += 1
        rec["levels_done"] = k
        group.attrs[KEY] = rec


def finish(out, src, name: str | None = None) -> None:
    """Write the multiscales metadata (ome-zarr-py) and mark the output complete."""
    zarr = require("zarr")
    with warnings.catch_warnings():  # ome-zarr-py's own deprecations, at import
        warnings.simplefilter("ignore", DeprecationWarning)
        writer = require("ome_zarr.writer", "writing OME-Zarr metadata")
    group = zarr.open_group(str(out), mode="r+")
    rec = dict(group.attrs[KEY])
    out_axes = rec["out_axes"]
    scale0, trans0 = base_transform(out_axes, src)
    iy, ix = out_axes.index("Y"), out_axes.index("X")
    datasets, k = [], 0
    while str(k) in group:
        f = float(2 ** k)
        scale = [s * f if i in (iy, ix) else s for i, s in enumerate(scale0)]
        tr = [{"type": "scale", "scale": scale}]
        if trans0 is not None:  # the centre of a 2^k × 2^k mean moves by (2^k - 1) / 2 pixels
            tr.append({"type": "translation", "translation": [
                round(t + (f - 1) / 2 * s, 12) if i in (iy, ix) else t
                for i, (t, s) in enumerate(zip(trans0, scale0))]})
        datasets.append({"path": str(k), "coordinateTransformations": tr})
        k += 1
    writer.write_multiscales_metadata(group, datasets, axes=axes_metadata(out_axes, src),
                                      name=name or Path(str(out)).name)
    rec["complete"] = True
    group.attrs[KEY] = rec


def open_levels(out) -> tuple[list, str, list[float]]:
    """The pyramid of a finished output as dask arrays (lazy), its axes and level-0 scale."""
    zarr = require("zarr")
    da = require("dask.array")
    group = zarr.open_group(str(out), mode="r")
    rec = group.attrs[KEY]
    levels, k = [], 0
    while str(k) in group:
        levels.append(da.from_zarr(group[str(k)]))
        k += 1
    ms = group.attrs.get("ome", {}).get("multiscales") or group.attrs.get("multiscales")
    scale = [1.0] * len(rec["out_axes"])
    if ms:
        for tr in ms[0]["datasets"][0]["coordinateTransformations"]:
            if tr["type"] == "scale":
                scale = list(tr["scale"])
    return levels, rec["out_axes"], scale
