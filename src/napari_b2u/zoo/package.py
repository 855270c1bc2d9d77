"""Opening a bioimage.io package that napari-b2u exported: its description checked as
untrusted (:mod:`.guard`), validated by bioimageio.spec from the checked content (never the
network), and its weights read back into a napari-b2u model file — a checkpoint dict that
``api.load`` turns into a Denoiser like any ``.b2u`` file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from ..errors import InputError
from ..modelfile import MAX_UNPACKED_BYTES, MODEL_FORMAT, MODEL_VERSION
from .common import CONFIG_FORMAT, CONFIG_KEY, STATE_PREFIX, quiet, reason, require_bioimageio
from .guard import check_references, open_description


def read_package(path) -> dict:
    """The model file (a checkpoint dict, as :func:`~napari_b2u.modelfile.read_checkpoint`
    returns) of a package napari-b2u exported, its weights checked like a model file's.
    Nothing outside the package is read: its description is bounded (size, YAML aliases) and
    every file it refers to must be inside it, all before bioimageio.spec sees it."""
    require_bioimageio()
    import torch
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description
    from bioimageio.spec.utils import get_reader


    with contextlib.ExitStack() as stack:
        content, root, name = open_description(Path(path), stack)
        check_references(content, root, path)
        config = content.get("config")
        cfg = config.get(CONFIG_KEY) if isinstance(config, dict) else None
        if not isinstance(cfg, dict):
            raise InputError(f"{path} is a bioimage.io model ({str(content.get('name'))[:80]}) "
                             "that napari-b2u did not export; run it with bioimageio.core, "
                             "deepImageJ or ilastik")
        cfg = json.loads(json.dumps(cfg))  # plain types, whatever the YAML reader made
        if not isinstance(cfg.get("format"), int) or cfg["format"] > CONFIG_FORMAT:
            raise InputError(f"{path} was exported by a newer napari-b2u (package format "
                             f"{cfg.get('format')!r}); upgrade napari-b2u to open it")
        try:  # the checked content itself: bioimageio.spec never reads the YAML again
            with quiet():
                descr = build_description(content, context=ValidationContext(
                    root=root, file_name=name, perform_io_checks=False))
            if isinstance(descr, InvalidDescr):
                raise ValueError(descr.get_reason())
            if descr.type != "model":
                raise ValueError(f"it describes a {descr.type}, not a model")
        except Exception as exc:  # noqa: BLE001 - any failure: not a package we can open
            raise InputError(f"{path} is not a valid bioimage.io model package "
                             f"({reason(exc)})") from None
        weights = descr.weights.pytorch_state_dict
        if weights is None:
            raise InputError(f"{path} has no pytorch_state_dict weights: it is damaged")
        try:  # the reader checks the file's sha256 against the description's
            data = get_reader(weights).read(MAX_UNPACKED_BYTES + 1)
        except Exception as exc:  # noqa: BLE001 - a bad hash, a missing member: one message
            raise InputError(f"{path} is damaged: its weights cannot be read ({reason(exc)})"
                             ) from None
    if len(data) > MAX_UNPACKED_BYTES:
        raise InputError(f"{path}: its weights are larger than any napari-b2u model; refusing "
                         "to load them")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - never suggest weights_only=False to anyone
        raise InputError(f"{path}: its weights are not readable ({type(exc).__name__})"
                         ) from None
    prefix = str(cfg.get("state_prefix", STATE_PREFIX))
    if not isinstance(state, dict) or not all(isinstance(k, str) and k.startswith(prefix)
                                              for k in state):
        raise InputError(f"{path} is damaged: its weights are not those of the exported model")
    info = cfg.get("info") if isinstance(cfg.get("info"), dict) else {}
    info["bioimageio"] = {"name": str(descr.name), "source": str(path),
                          "output": cfg.get("output")}
    ckpt = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
            "package_version": str(cfg.get("package_version", "")),
            **{k: cfg.get(k) for k in ("method", "method_params", "model_config",
                                       "normalization", "weights_sha256")},
            "info": info, "state_dict": {k[len(prefix):]: v for k, v in state.items()}}
    return ckpt
