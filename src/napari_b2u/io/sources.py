"""Lazy inputs: stacks that are read a few chunks at a time, never whole.

A :class:`Source` is an array-like over a zarr / OME-Zarr array (a path, a group, a store), a
big TIFF (through tifffile's zarr store), a dask array or any other sliceable array: it knows
its shape, dtype, the axes and pixel sizes its file declares, and reads what it is indexed
with (:mod:`.frames` reads (N, C, Y, X) frames from it, so the denoising and training paths
hold a bounded number of chunks). Sources made from paths pickle as their path (a dask worker
reopens them). No torch here; zarr and dask are imported only when such an input is given.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import os
import stat
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..data import data_fingerprint
from ..errors import DISTRIBUTED_EXTRA, B2UError, InputError, MissingExtra
from .image import SPECIAL, check_regular
from .memory import in_memory_bytes, memory_budget
from .readers import sniff
from .tiff import normalize_axes, tiff_metadata, to_um


def require(module: str, what: str = "reading zarr / OME-Zarr and big-data denoising"):
    """Import an optional dependency, or one clear error naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{what} needs the optional package {module.split('.')[0]!r}, which "
                           f"is not installed: {DISTRIBUTED_EXTRA}") from None


def needs_lazy(src) -> bool:
    """Whether a lazy input is too large to be handled in memory (see :func:`memory_budget`)."""
    return in_memory_bytes(src.shape, src.dtype) > memory_budget()


# ---- sources ---------------------------------------------------------------------------------
class Source(ABC):
    """A lazily read array (see the module's docstring). Basic indexing only."""

    shape: tuple
    dtype: np.dtype
    axes: str | None = None  # what the file declares (ours: 'TCZYX', ...), None if nothing
    pixel_size: dict = {}
    ngff: dict | None = None  # the input's OME-Zarr axes and transforms of its level 0
    chunks: tuple | None = None
    name: str = "array"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        return self.read(index if isinstance(index, tuple) else (index,))

    def __array__(self, dtype=None, copy=None):
        a = self.read((slice(None),) * self.ndim)
        return a if dtype is None else a.astype(dtype, copy=False)

    def read(self, index: tuple) -> np.ndarray:
        a = self._array()[index]
        if hasattr(a, "compute"):  # dask: this thread computes it (no nested scheduler)
            a = a.compute(scheduler="sync")
        return np.asarray(a)

    @abstractmethod
    def _array(self):
        """The underlying sliceable array (dask, zarr, a memory map)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class ArraySource(Source):
    """Any sliceable array: a dask array, a zarr array, a memory map (pickled as itself)."""

    def __init__(self, array, name: str | None = None):
        self.array = array
        self.shape = tuple(int(v) for v in array.shape)
        self.dtype = np.dtype(array.dtype)
        chunks = getattr(array, "chunksize", None) or getattr(array, "chunks", None)
        if chunks is not None and len(chunks) == len(self.shape) and all(
                isinstance(c, (int, np.integer)) for c in chunks):
            self.chunks = tuple(int(c) for c in chunks)
        self.name = name or getattr(array, "name", None) or type(array).__name__

    def _array(self):
        return self.array


class _Reopened(Source):
    """A source opened from a path: pickled as the path, reopened where it is unpickled."""

    path: str | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["_arr"] = None
        return state

    def _array(self):
        if self.__dict__.get("_arr") is None:
            self._arr = self._open()
        return self._arr

    @abstractmethod
    def _open(self):
        """Open the array at ``self.path`` (in this process)."""

    def read(self, index: tuple) -> np.ndarray:
        try:
            return super().read(index)
        except (B2UError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise anything on a damaged chunk
            where = f" of its array {self.component!r}" if getattr(self, "component", None) else ""
            raise InputError(
                f"{self.name} is damaged: {self._bad_chunk(index)}{where} could not be decoded "
                f"({type(exc).__name__}: {exc}); copy or export the file again") from exc

    def _bad_chunk(self, index: tuple, most: int = 256) -> str:
        """The first chunk of those ``index`` reads that fails alone, as 'chunk (i, j) (elements
        [a:b, c:d])', or the range of chunks when none does (or there are too many)."""
        index = tuple(index) + (slice(None),) * (self.ndim - len(index))
        chunks = self.chunks or self.shape
        spans = []
        for ix, n, c in zip(index, self.shape, chunks):
            a, b = ix.indices(n)[:2] if isinstance(ix, slice) else (ix % n, ix % n + 1)
            spans.append(range(a // c, max(a, b - 1) // c + 1))
        for pos in itertools.islice(itertools.product(*spans), most):
            box = tuple(slice(p * c, min((p + 1) * c, n))
                        for p, c, n in zip(pos, chunks, self.shape))
            try:
                Source.read(self, box)
            except Exception:  # noqa: BLE001 - this one is damaged
                where = ", ".join(f"{b.start}:{b.stop}" for b in box)
                return f"chunk {pos} (elements [{where}])"
        first, last = (tuple(r[0] for r in spans), tuple(r[-1] for r in spans))
        return f"one of the chunks {first} to {last}"


_NGFF_LETTERS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_NGFF_TYPES = {"time": "T", "channel": "C"}


class ZarrSource(_Reopened):
    """A zarr array, or the full-resolution level of an OME-Zarr image (0.4 or 0.5)."""

    def __init__(self, target, component: str | None = None):
        zarr = require("zarr")
        self.path = str(target) if isinstance(target, (str, os.PathLike)) else None
        self.name = self.path or "zarr"  # the node's name once it is open
        self.component = component
        try:
            node = zarr.open(store=local_store(self.path), mode="r") if self.path else (
                target if isinstance(target, (zarr.Array, zarr.Group))
                else zarr.open(store=target, mode="r"))
            self.name = self.path or getattr(node, "name", None) or "zarr"
            if isinstance(node, zarr.Group):
                node = self._level0(node, component)
            elif component is not None:
                raise InputError(f"{self.name} is a zarr array; it has no component "
                                 f"{component!r}")
            shape, dtype, chunks = node.shape, np.dtype(node.dtype), node.chunks
        except (B2UError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - zarr raises anything on damaged metadata
            raise InputError(
                f"{self.name} could not be read as zarr / OME-Zarr ({type(exc).__name__}: "
                f"{exc}); its metadata (zarr.json, .zarray, .zattrs) may be damaged") from exc
        if any(int(c) < 1 for c in chunks):  # zarr would divide by it
            raise InputError(f"{self.name} is damaged: its chunk shape {tuple(chunks)} has a "
                             f"side of 0 (array of shape {tuple(shape)}); repair its metadata")
        self._arr = node
        self.shape = tuple(int(v) for v in shape)
        self.dtype = dtype
        self.chunks = tuple(int(c) for c in chunks)
        if self.axes is None:
            names = getattr(node.metadata, "dimension_names", None)
            if names and all(isinstance(n, str) and n.lower() in _NGFF_LETTERS for n in names):
                self.axes = "".join(_NGFF_LETTERS[n.lower()] for n in names)

    def _bad(self, what: str) -> InputError:
        return InputError(f"{self.name}: its OME-Zarr metadata is damaged ({what}); repair "
                          "zarr.json (.zattrs for OME-Zarr 0.4), or point to the array inside "
                          f"it and give --axes, e.g. {self.name}/0")

    def _child(self, group, path: str):
        zarr = require("zarr")
        try:
            node = group[path]
        except KeyError:
            raise self._bad(f"there is no array {path!r} in it") from None
        if not isinstance(node, zarr.Array):
            raise self._bad(f"{path!r} is a group, not an array")
        return node

    def _level0(self, group, component):
        attrs = group.attrs.asdict()
        ome = attrs.get("ome")
        ms = (ome.get("multiscales") if isinstance(ome, dict) else None) or attrs.get(
            "multiscales")
        if component is None and not ms:
            raise InputError(f"{self.name} is a zarr group but not an OME-Zarr image (no "
                             "multiscales metadata); point to an array inside it, e.g. "
                             f"{self.name}/0")
        if component is not None:
            return self._child(group, component)
        if not isinstance(ms, list) or not isinstance(ms[0], dict):
            raise self._bad(f"multiscales is {ms!r}, not a list of multiscale images")
        m = ms[0]
        dss = m.get("datasets")
        ds = dss[0] if isinstance(dss, list) and dss and isinstance(dss[0], dict) else {}
        if not isinstance(ds.get("path"), str):
            raise self._bad("no multiscales[0].datasets[0].path, the full-resolution array")
        self.component = ds["path"]
        node = self._child(group, ds["path"])
        self._read_ngff(m, ds, len(node.shape))
        return node

    def _read_ngff(self, m: dict, ds: dict, ndim: int) -> None:

        axes = m.get("axes", [])
        if not isinstance(axes, list) or not all(isinstance(a, (dict, str)) for a in axes):
            raise self._bad(f"multiscales[0].axes is {axes!r}, not a list of axes")
        axes = [a if isinstance(a, dict) else {"name": a} for a in axes]
        if not axes:  # OME-Zarr < 0.3 names no axes
            return
        if len(axes) != ndim:
            raise self._bad(f"{len(axes)} axes for an array of {ndim} dimensions")
        letters, free = [], [a for a in "QSI"]
        for a in axes:
            name = str(a.get("name", "")).lower()
            letter = _NGFF_LETTERS.get(name) or _NGFF_TYPES.get(str(a.get("type", "")))
            letters.append(letter or (free.pop(0) if free else "?"))
        scale, trans, declared = [1.0] * ndim, None, False
        for where, trs in (("datasets[0]", ds.get("coordinateTransformations")),
                           ("multiscales[0]", m.get("coordinateTransformations"))):
            if trs is None:  # optional before OME-Zarr 0.4: no pixel size then
                continue
            if not isinstance(trs, list) or not all(isinstance(t, dict) for t in trs):
                raise self._bad(f"{where}.coordinateTransformations is {trs!r}, not a list of "
                                "transformations")
            for tr in trs:
                kind = tr.get("type")
                if kind not in ("scale", "translation") or kind not in tr:
                    continue
                v = tr[kind]
                if not (isinstance(v, list) and len(v) == ndim and all(
                        isinstance(x, (int, float)) and not isinstance(x, bool)
                        and np.isfinite(x) for x in v)):
                    raise self._bad(f"the {kind} {v!r} of {where} is not {ndim} numbers")
                if kind == "scale":
                    scale, declared = [s * float(x) for s, x in zip(scale, v)], True
                else:
                    trans = [float(x) for x in v]
        self.ngff = {"axes": axes, "scale": scale, "translation": trans, "name": m.get("name")}
        if "?" not in letters and len(set(letters)) == len(letters):
            self.axes = "".join(letters)
        sizes = {}
        for a, letter, s in zip(axes, letters, scale):
            if declared and letter in "XYZ" and a.get("type", "space") == "space":
                um = to_um(s, str(a.get("unit") or "micrometer"), self.name)
                if um is not None:
                    sizes[letter] = um
        self.pixel_size = sizes

    def _open(self):
        zarr = require("zarr")
        node = zarr.open(store=local_store(self.path), mode="r")
        return node[self.component] if self.component is not None else node


_STORE_CLASS = None


def local_store(path):
    """A read-only zarr store of the folder ``path`` that refuses, before opening it, a file
    in it that is not a regular file or folder: a FIFO as a chunk or as zarr.json blocks
    zarr's read forever, a link to /dev/zero never ends (a missing chunk stays zarr's fill
    value)."""
    global _STORE_CLASS
    if _STORE_CLASS is None:
        require("zarr")
        from zarr.storage import LocalStore

        class RegularFileStore(LocalStore):
            async def get(self, key, prototype=None, byte_range=None):
                _check_member(self.root / key, self.root)
                return await super().get(key, prototype, byte_range)

            async def get_partial_values(self, prototype, key_ranges):
                key_ranges = list(key_ranges)
                for key, _ in key_ranges:
                    _check_member(self.root / key, self.root)
                return await super().get_partial_values(prototype, key_ranges)

        _STORE_CLASS = RegularFileStore
    return _STORE_CLASS(path, read_only=True)


def _check_member(path: Path, root) -> None:
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a FIFO is a FIFO
    except OSError:
        return  # missing: zarr says what that means
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = next((name for test, name in SPECIAL if test(mode)), "not a regular file")
    raise InputError(f"{root} is damaged: its file {path.relative_to(root)} is {kind}, not "
                     "a chunk or metadata file (reading it would never end); copy or export "
                     "the data again")


_TIFF_LOCK = threading.Lock()


class TiffSource(_Reopened):
    """The first series of a (big, OME-)TIFF, read through tifffile's zarr store."""

    def __init__(self, path):
        import tifffile

        self.path = self.name = str(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                self.shape = tuple(int(v) for v in series.shape)
                self.dtype = np.dtype(series.dtype)
                self.axes = normalize_axes(series.axes) or None
                self.pixel_size, _ = tiff_metadata(tif, self.path)
            self._arr = None
            self.chunks = tuple(int(c) for c in self._array().chunks)
        except (B2UError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file raises anything
            raise InputError(f"{path} could not be read as a TIFF ({type(exc).__name__}: "
                             f"{exc}); the file may be truncated or not a TIFF") from exc

    def read(self, index: tuple) -> np.ndarray:
        with _TIFF_LOCK:  # one file handle: reads from several threads take turns
            return super().read(index)

    def _open(self):
        import tifffile

        zarr = require("zarr", "reading a big TIFF lazily")
        return zarr.open(store=tifffile.imread(self.path, aszarr=True, series=0, level=0),
                         mode="r")


def is_zarr_path(path) -> bool:
    p = Path(path)
    if p.suffix.lower() == ".zarr" or p.name.lower().endswith(".zarr/"):
        return True
    return p.is_dir() and any((p / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))


def open_source(obj) -> Source | None:
    """A :class:`Source` over ``obj`` when it is a lazy input (a zarr / OME-Zarr / TIFF path, a
    zarr array, group or store, tifffile's zarr store, a dask array); None for arrays in
    memory and other files."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if p.exists():
            check_regular(p, folder_ok=True)  # a FIFO or device would block or never end
        if is_zarr_path(p):
            if not p.exists():
                raise InputError(f"no such zarr / OME-Zarr folder: {p}")
            return ZarrSource(p)
        if p.is_file() and is_tiff_path(p) and importlib.util.find_spec("zarr") is not None:
            return TiffSource(p)  # (without zarr, a TIFF is read whole, as before)
        return None
    if isinstance(obj, np.ndarray):
        return None
    mod = type(obj).__module__ or ""
    if mod.startswith("xarray") and hasattr(getattr(obj, "data", None), "__dask_graph__"):
        return ArraySource(obj.data, getattr(obj, "name", None))
    if hasattr(obj, "__dask_graph__") and hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return ArraySource(obj)
    if mod.startswith("zarr"):
        zarr = require("zarr")
        if isinstance(obj, zarr.Array):
            return ArraySource(obj, obj.name or "zarr")
        return ZarrSource(obj)
    if mod.startswith("tifffile") and "Store" in type(obj).__name__:
        return ZarrSource(obj)
    return None


def is_tiff_path(path: Path) -> bool:
    try:
        return sniff(path) == "tiff"
    except (OSError, InputError):
        return False


def source_fingerprint(src: Source, axes: str) -> str:
    """A cheap identity of a lazy stack: shape, dtype, axes and a 64-px patch of its first,
    middle and last entries along the first axis (a few chunks read, never the whole)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{src.shape}|{src.dtype.str}|{axes}|lazy".encode())
    for k in sorted({0, src.shape[0] // 2, src.shape[0] - 1}):
        idx = (k,) + tuple(slice(max(0, s // 2 - 32), s // 2 + 32) for s in src.shape[1:])
        h.update(np.ascontiguousarray(src.read(idx)).tobytes())
    return h.hexdigest()


def stack_fingerprint(stack, axes: str) -> str:
    """The identity a checkpoint stores of its training stack: :func:`source_fingerprint` for a
    lazy stack too large for memory (the one lazy training uses), else
    :func:`~napari_b2u.data.data_fingerprint` of the values."""
    src = open_source(stack) if not isinstance(stack, np.ndarray) else None
    if src is not None and needs_lazy(src):
        return source_fingerprint(src, axes)
    return data_fingerprint(np.asarray(src if src is not None else stack), axes)
