"""The BioImage Model Zoo side of napari-b2u: is a path a bioimage.io package, open one that
napari-b2u exported (:func:`load_bioimageio`, what ``api.load`` does with a package), run
bioimageio.core's test of a package, and the one error for a missing extra. The export itself
is :mod:`napari_b2u.export`.

Detecting a package needs nothing optional; opening, writing and testing one need
``pip install "napari-b2u[bioimageio]"`` (bioimageio.spec and bioimageio.core), imported only
when used.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import warnings
import zipfile
from pathlib import Path

from .errors import InputError, MissingExtra

EXTRA = 'pip install "napari-b2u[bioimageio]"'
#: names a package's description may have (inside the zip or its folder)
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: the entry of the description's ``config`` that lets napari-b2u open the package again
CONFIG_KEY = "napari_b2u"
CONFIG_FORMAT = 1
#: the exported network's state dict is the method's own under this prefix
STATE_PREFIX = "model."


def require_bioimageio(core: bool = False) -> None:
    """Raise :class:`MissingExtra` naming the pip command unless the bioimageio packages are
    installed (``core``: bioimageio.core as well, to test a package)."""
    for name in ("bioimageio.spec",) + (("bioimageio.core",) if core else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingExtra(f"bioimage.io packages need the optional bioimageio packages "
                               f"({name} is not installed): {EXTRA}") from None


def reason(exc) -> str:
    """The last line of an exception's message (pydantic puts the cause there), shortened."""
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else type(exc).__name__


@contextlib.contextmanager
def quiet():
    """bioimageio.spec warns about every file of a package it reopens from a zip ("Found
    mapping with 'source' and 'sha256' keys ..."): its own noise, not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found mapping with 'source'")
        yield


def is_package(path) -> bool:
    """Whether ``path`` is a bioimage.io package (a zip or folder with rdf.yaml or
    bioimageio.yaml, or such a file itself). Needs no extra; a .b2u file is not one."""
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES)
    if p.name.endswith(RDF_NAMES) and p.is_file():
        return True
    if p.is_file() and zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                return any(n in RDF_NAMES for n in zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False


def load_bioimageio(path):
    """The :class:`~napari_b2u.inference.Denoiser` in a package napari-b2u exported (every
    output of its method), its weights checked like a model file's."""
    require_bioimageio()
    import torch
    from bioimageio.spec import load_model_description
    from bioimageio.spec.utils import get_reader

    from .inference import Denoiser
    from .modelfile import MAX_UNPACKED_BYTES, MODEL_FORMAT, MODEL_VERSION

    p = Path(path)
    source = next((p / n for n in RDF_NAMES if (p / n).is_file()), p) if p.is_dir() else p
    try:
        with quiet():
            descr = load_model_description(str(source), perform_io_checks=False)
    except Exception as exc:  # noqa: BLE001 - any failure: not a package we can open
        raise InputError(f"{path} is not a valid bioimage.io model package ({reason(exc)})"
                         ) from None
    extra = getattr(getattr(descr, "config", None), "model_extra", None) or {}
    cfg = extra.get(CONFIG_KEY)
    if not isinstance(cfg, dict):
        raise InputError(f"{path} is a bioimage.io model ({descr.name}) that napari-b2u did not "
                         "export; run it with bioimageio.core, deepImageJ or ilastik")
    cfg = json.loads(json.dumps(cfg))  # plain types, whatever the YAML reader made
    if not isinstance(cfg.get("format"), int) or cfg["format"] > CONFIG_FORMAT:
        raise InputError(f"{path} was exported by a newer napari-b2u (package format "
                         f"{cfg.get('format')!r}); upgrade napari-b2u to open it")
    weights = descr.weights.pytorch_state_dict
    if weights is None:
        raise InputError(f"{path} has no pytorch_state_dict weights: it is damaged")
    try:  # the reader checks the file's sha256 against the description's
        data = get_reader(weights).read(MAX_UNPACKED_BYTES + 1)
    except (ValueError, OSError) as exc:
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
    info["bioimageio"] = {"name": descr.name, "source": str(path), "output": cfg.get("output")}
    ckpt = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
            "package_version": str(cfg.get("package_version", "")),
            **{k: cfg.get(k) for k in ("method", "method_params", "model_config",
                                       "normalization", "weights_sha256")},
            "info": info, "state_dict": {k[len(prefix):]: v for k, v in state.items()}}
    return Denoiser.from_checkpoint(ckpt, source=str(path))


def check_package(path):
    """bioimageio.core's own test of a package (it loads each weight format, runs the test
    input and compares with the test output, and runs other input sizes); returns its
    ValidationSummary (``.status`` is 'passed' when it passed)."""
    require_bioimageio(core=True)
    from bioimageio.core import test_model

    with quiet():
        return test_model(str(path), devices=["cpu"])
