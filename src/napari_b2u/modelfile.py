"""Model files (``.b2u``): what they hold, how they are written, and how a file is checked before
anything in it is trusted.

A model file is ``torch.save`` of a dict of plain types and tensors: ``format``, ``version``,
``package_version``, ``method``, ``method_params``, ``model_config``, ``normalization``, ``info``
and ``state_dict``, plus (since version 2) ``weights_sha256``; autosaves add ``training``.
Loading never runs code (``weights_only``) and refuses, with one clear :class:`InputError`,
anything that is not what napari-b2u writes: compressed or oversized archives, a declared network
that does not match the stored tensors (checked on the ``meta`` device, before any memory is
spent), damaged weights (checksum), non-finite weights or normalization, unknown keys.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .io.image import check_regular

MODEL_FORMAT = "napari-b2u-model"
#: 1: napari-b2u 0.1; 2: weights checksum, versioned training settings
MODEL_VERSION = 4  # 3: an optional "blend" (network + Gaussian filter); 4: an optional
#                   "context" (neighbouring frames); each written only when set
#: the most a model file may unpack to; the reference U-Net is 4.4 MB, D-BSN about 27 MB
MAX_UNPACKED_BYTES = 1 << 30
#: the most parameters a model may declare (the largest preset network has 6.6 M)
MAX_PARAMETERS = 100_000_000
#: the deepest nesting of a model's free-form info (napari-b2u's is 4 levels)
MAX_INFO_DEPTH = 32

_KEYS = {"format", "version", "package_version", "method", "method_params", "model_config",
         "normalization", "info", "state_dict", "weights_sha256", "training", "blend",
         "context"}


def weights_checksum(state_dict: dict) -> str:
    """sha256 over the weights' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state_dict[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_checkpoint(path) -> dict:
    """Load a model/checkpoint file safely (``weights_only``: it can never run code)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no model file at {path}")
    check_regular(path, what="a model file")  # a FIFO would block torch.load forever
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable model"
        # torch's message suggests weights_only=False (running the file's code): never pass
        # that on to a user
        raise InputError(f"{path} is not a readable napari-b2u model file (damaged, truncated "
                         f"or another program's file; {type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise InputError(f"{path} is not a napari-b2u model file")
    return ckpt


def _check_archive(path: Path) -> None:
    """torch.save writes an uncompressed zip: refuse compressed entries (a 1 MB file that
    inflates to gigabytes) and archives that unpack to more than any model needs."""
    if not zipfile.is_zipfile(path):
        return  # torch.load says what it is (legacy format or not a model at all)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable napari-b2u model file ({exc})") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise InputError(f"{path} is not a napari-b2u model file (compressed entries: "
                         "napari-b2u never writes those)")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise InputError(f"{path} unpacks to {total / 2**30:.1f} GiB, far more than any "
                         "napari-b2u model; refusing to load it")


def check_checkpoint(ck: dict, source: str = "the model") -> None:
    """Every field of a model file checked, before a network is built from it."""
    version = ck.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{source} has a model-format version {version!r} that is not a "
                         "positive whole number: the file is damaged")
    if version > MODEL_VERSION:
        raise InputError(
            f"{source} was written by a newer napari-b2u (model format {version}, this version "
            f"reads up to {MODEL_VERSION}); upgrade napari-b2u to load it")
    unknown = sorted(set(ck) - _KEYS)
    if unknown:
        raise InputError(f"{source} has unknown entries {', '.join(map(str, unknown))}: it is "
                         "damaged or was not written by napari-b2u")
    from .methods import get_method, method_names

    if ck.get("method") not in method_names():
        raise InputError(
            f"{source} was trained with method {ck.get('method')!r}, which this version "
            f"of napari-b2u does not have (it has {', '.join(method_names())}); upgrade "
            "napari-b2u to use it")
    for key in ("method_params", "model_config", "normalization", "state_dict"):
        if not isinstance(ck.get(key), dict):
            raise InputError(f"{source} is damaged: its {key} is not a mapping")
    if not isinstance(ck.get("info", {}), dict):
        raise InputError(f"{source} is damaged: its info is not a mapping")
    if _deeper(ck.get("info", {}), MAX_INFO_DEPTH):  # saving or exporting it would recurse
        raise InputError(f"{source} is damaged: its info is nested more than {MAX_INFO_DEPTH} "
                         "deep (napari-b2u writes a few levels)")
    method = get_method(ck["method"], **ck["method_params"])  # checks each parameter
    check_context(method, ck.get("context"), source)
    check_blend(ck.get("blend"), source)
    _check_normalization(ck["normalization"], source)
    channels = len(ck["normalization"]["offset"])
    if ck.get("blend") and len(ck["blend"]["gauss_sigma"]) != channels:
        raise InputError(f"{source} is damaged: its blend has {len(ck['blend']['gauss_sigma'])} "
                         f"Gaussian σ for {channels} channel(s)")
    state = ck["state_dict"]
    for key, t in state.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise InputError(f"{source} is damaged: its weights are not named tensors")
        if t.numel() > MAX_PARAMETERS:  # a view of a few stored values can declare 10^10
            raise InputError(f"{source} is damaged: weight {key} declares {t.numel():,} values, "
                             "more than any napari-b2u model; refusing to load it")
        if not t.is_floating_point():
            raise InputError(f"{source} is damaged: weight {key} is not floating point")
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{source} is damaged: weight {key} holds NaN or infinite values")
    if version >= 2:
        stored = ck.get("weights_sha256")
        if not isinstance(stored, str) or stored != weights_checksum(state):
            raise InputError(f"{source} is damaged: its weights do not match their checksum "
                             "(the file was changed or corrupted after it was written)")
    _check_architecture(method, ck["model_config"], state, source)


def _deeper(obj, limit: int) -> bool:
    """Whether the lists and mappings of ``obj`` nest deeper than ``limit`` (walked without
    recursion: a file may nest them 100000 deep)."""
    todo = [(obj, 1)]
    while todo:
        o, depth = todo.pop()
        if isinstance(o, (dict, list, tuple)):
            if depth > limit:
                return True
            todo.extend((v, depth + 1) for v in (o.values() if isinstance(o, dict) else o))
    return False


def check_context(method, context, source: str) -> None:
    """A model's stack context: {"frames": 1 … MAX_CONTEXT, "axis": a stack axis}, for a
    method that takes it (then ``method`` sees that many neighbours, as it was trained)."""
    if context is None:
        return
    from .context import MAX_CONTEXT
    from .data import SAMPLE_AXES

    k = context.get("frames") if isinstance(context, dict) else None
    ok = (isinstance(context, dict) and set(context) == {"frames", "axis"}
          and isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_CONTEXT
          and context.get("axis") in tuple(SAMPLE_AXES))
    if not ok:
        raise InputError(f"{source} is damaged: its stack context {context!r} is not a number "
                         f"of frames (1 to {MAX_CONTEXT}) along a stack axis")
    method.set_context(k)


def _check_normalization(d: dict, source: str) -> None:
    off, sc = d.get("offset"), d.get("scale")
    ok = (isinstance(off, list) and isinstance(sc, list) and 0 < len(off) == len(sc) <= 4096
          and all(isinstance(v, (int, float)) and math.isfinite(v) for v in off)
          and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in sc))
    if not ok:
        raise InputError(f"{source} is damaged: its normalization (offset {off!r}, scale "
                         f"{sc!r}) is not finite with positive scales")


#: the most levels, blocks and blind-spot half-extents a network description may declare:
#: building costs time per layer even on the meta device (a U-Net of depth 100000 took
#: minutes) and a DBSN mask per extent², so larger ones are refused unbuilt (napari-b2u trains
#: depth <= 7, 8 blocks, extents <= 7)
_LAYER_LIMITS = {"depth": 16, "est_depth": 16, "blocks": 64, "blind_ly": 7, "blind_lx": 7}


def _check_architecture(method, config: dict, state: dict, source: str) -> None:
    """Build the declared network on the meta device (no memory) and compare its tensors with
    the stored ones: a file claiming a huge network is refused at once."""
    for key, high in _LAYER_LIMITS.items():
        v = config.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > high:
            raise InputError(f"{source} declares a network with {key} {v} (napari-b2u's "
                             f"networks have at most {high}); refusing to load it")
    try:
        with torch.device("meta"):
            net = method.build(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{source} is damaged: its network description {config!r} cannot be "
                         f"built ({exc})") from None
    expected = net.state_dict()
    count = sum(t.numel() for t in expected.values())
    if count > MAX_PARAMETERS:
        raise InputError(f"{source} declares a network of {count:,} parameters, more than any "
                         "napari-b2u model; refusing to load it")
    if set(expected) != set(state):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise InputError(f"{source} holds weights that do not match its network (missing "
                         f"{missing}, unexpected {extra})")
    for key, t in expected.items():
        if tuple(state[key].shape) != tuple(t.shape):
            raise InputError(
                f"{source} holds weights that do not match its network: {key} is "
                f"{tuple(state[key].shape)}, the network needs {tuple(t.shape)}")


def jsonable(obj):
    """Plain types only, so that ``torch.load(weights_only=True)`` accepts the file."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    # str subclasses too (torch.__version__ is one): weights_only loading refuses their class
    return str(obj)


def check_blend(blend, source: str = "the model") -> None:
    """A model file's optional blend: {"weight": w in (0, 1), "gauss_sigma": [σ > 0 per
    channel]} — the output is w × network + (1 − w) × Gaussian filter."""
    if blend is None:
        return
    ok = (isinstance(blend, dict) and set(blend) == {"weight", "gauss_sigma"}
          and isinstance(blend["weight"], float) and 0.0 < blend["weight"] < 1.0
          and isinstance(blend["gauss_sigma"], list) and blend["gauss_sigma"]
          and all(isinstance(s, float) and 0.0 < s < 100.0 for s in blend["gauss_sigma"]))
    if not ok:
        raise InputError(f"{source} is damaged: its blend {blend!r} is not a weight in (0, 1) "
                         "and a Gaussian σ per channel")
