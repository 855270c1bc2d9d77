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
import re
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from .errors import InputError, MissingExtra

EXTRA = 'pip install "napari-b2u[bioimageio]"'
#: names a package's description may have (inside the zip or its folder)
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: the entry of the description's ``config`` that lets napari-b2u open the package again
CONFIG_KEY = "napari_b2u"
CONFIG_FORMAT = 1
#: the exported network's state dict is the method's own under this prefix
STATE_PREFIX = "model."
#: the largest description read (a real rdf.yaml is a few KB; a zip's can inflate to gigabytes)
MAX_RDF_BYTES = 1 << 20
#: YAML anchors + aliases allowed (napari-b2u writes none): each alias can multiply what a
#: reader walks, so a few dozen make a "billion laughs" that never finishes
MAX_ALIASES = 16
#: the deepest nesting of a description (napari-b2u's is 7 levels)
MAX_DEPTH = 64
#: fields bioimageio.spec resolves as files, besides every mapping's "source" (v0.4 names too)
FILE_KEYS = ("documentation", "covers", "attachments", "files", "icon", "test_inputs",
             "test_outputs", "sample_inputs", "sample_outputs")
FETCH = ("napari-b2u opens only the package's own files and never downloads: download the "
         "package and the files it refers to yourself and put them inside it, or open it with "
         "bioimageio.core")


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


def _open_description(p: Path, stack: contextlib.ExitStack):
    """A package's description (content, root, file name), read within bounds: a zip's every
    member by its declared size (zipfile never inflates past it) and the description also by
    what is read, then its YAML scanned for aliases and nesting before anything composes it."""
    from bioimageio.spec.utils import read_yaml

    from .modelfile import MAX_UNPACKED_BYTES

    size, data = 0, b""
    if p.is_file() and zipfile.is_zipfile(p):
        try:
            root = stack.enter_context(zipfile.ZipFile(p))
            infos = root.infolist()
            name = next((n for n in RDF_NAMES if n in root.namelist()), None)
            big = max(infos, key=lambda i: i.file_size)
            size = root.getinfo(name).file_size if name else 0
            if name and size <= MAX_RDF_BYTES:
                data = root.read(name)[:MAX_RDF_BYTES + 1]
        except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise many kinds
            raise InputError(f"{p} is a damaged zip file ({reason(exc)})") from None
        total = sum(i.file_size for i in infos)
        if big.file_size > MAX_UNPACKED_BYTES or total > 2 * MAX_UNPACKED_BYTES:
            raise InputError(f"{p} unpacks to {total / 2**30:.1f} GiB ({big.filename}: "
                             f"{big.file_size / 2**30:.1f} GiB), far more than any napari-b2u "
                             "package; refusing to open it")
    else:
        rdf = next((p / n for n in RDF_NAMES if (p / n).is_file()), None) if p.is_dir() else p
        name, root = getattr(rdf, "name", None), (rdf or p / "-").parent.resolve()
        try:
            if rdf is not None:
                size = rdf.stat().st_size
                with open(rdf, "rb") as f:
                    data = f.read(MAX_RDF_BYTES + 1)
        except OSError as exc:
            raise InputError(f"{p}: its description cannot be read ({exc})") from None
    if name is None:
        raise InputError(f"{p} is not a bioimage.io package (it has no {' or '.join(RDF_NAMES)})")
    if max(size, len(data)) > MAX_RDF_BYTES:
        raise InputError(f"{p}: its description {name} is {max(size, len(data)) / 2**20:.1f} MB "
                         f"(a real one is a few KB, at most {MAX_RDF_BYTES >> 20} MB); refusing "
                         "to read it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: its description {name} is not UTF-8 text") from None
    _scan_yaml(text, f"{p}: its description {name}")
    try:
        content = read_yaml(text)
    except Exception as exc:  # noqa: BLE001 - any YAML error: not a description
        raise InputError(f"{p} is not a valid bioimage.io model package ({reason(exc)})"
                         ) from None
    if not isinstance(content, dict):
        raise InputError(f"{p} is not a valid bioimage.io model package ({name} is not a "
                         "mapping)")
    return content, root, name


def _scan_yaml(text: str, what: str) -> None:
    """Tokens only (linear, nothing expanded): more than MAX_ALIASES anchors and aliases (a
    "billion laughs") or nesting deeper than MAX_DEPTH is refused before any parser runs."""
    from ruyaml import YAML  # bioimageio.spec's own YAML library

    count = depth = 0
    try:
        for tok in YAML(typ="safe").scan(text):
            kind = type(tok).__name__
            count += kind in ("AliasToken", "AnchorToken")
            depth += kind in ("BlockMappingStartToken", "BlockSequenceStartToken",
                              "FlowMappingStartToken", "FlowSequenceStartToken")
            depth -= kind in ("BlockEndToken", "FlowMappingEndToken", "FlowSequenceEndToken")
            if count > MAX_ALIASES or depth > MAX_DEPTH:
                raise InputError(f"{what} has more than {MAX_ALIASES} YAML anchors and aliases "
                                 f"or is nested more than {MAX_DEPTH} deep (napari-b2u writes "
                                 "neither): a YAML bomb, refusing to read it")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a YAML syntax error
        raise InputError(f"{what} is not valid YAML ({reason(exc)})") from None


def _references(node, top: bool = False):
    """Every string bioimageio.spec may resolve as a file: each mapping's "source", the
    FILE_KEYS values and v0.4's "file.py:Class" and "conda:env.yaml" forms; the top-level
    config is free-form (napari-b2u's own info is there) and nobody resolves it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if top and key == "config":
                continue
            if isinstance(value, str) and key == "architecture" and ":" in value:
                yield value.rsplit(":", 1)[0]
            elif isinstance(value, str) and key == "dependencies":
                yield re.sub(r"^(conda|pip):", "", value)
            elif key == "source" or key in FILE_KEYS:
                yield from (v for v in (value if isinstance(value, list) else [value])
                            if isinstance(v, str))
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _check_references(content: dict, root, path) -> None:
    """Refuse a reference that leaves the package: a URL of any scheme (``file:`` too), an
    absolute path (a drive letter reads as a scheme), a path through '..', or (in a folder) a
    link out of it; a folder's files are bounded like a zip's members."""
    from .modelfile import MAX_UNPACKED_BYTES

    for ref in _references(content, top=True):
        r = ref.strip().replace("\\", "/")
        outside = (re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", r) is not None or r.startswith("/")
                   or ".." in PurePosixPath(r).parts)
        if not outside and isinstance(root, Path):
            target = (root / r).resolve()
            outside = not target.is_relative_to(root)
            if not outside and target.is_file() and target.stat().st_size > MAX_UNPACKED_BYTES:
                raise InputError(f"{path}: its file {r} is larger than any napari-b2u package "
                                 "holds; refusing to open it")
        if outside:
            raise InputError(f"{path} refers to {ref[:200]!r}, outside the package; {FETCH}")


def load_bioimageio(path):
    """The :class:`~napari_b2u.inference.Denoiser` in a package napari-b2u exported (every
    output of its method), its weights checked like a model file's. Nothing outside the
    package is read: its description is bounded (size, YAML aliases) and every file it refers
    to must be inside it, all before bioimageio.spec sees it."""
    require_bioimageio()
    import torch
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description
    from bioimageio.spec.utils import get_reader

    from .inference import Denoiser
    from .modelfile import MAX_UNPACKED_BYTES, MODEL_FORMAT, MODEL_VERSION

    with contextlib.ExitStack() as stack:
        content, root, name = _open_description(Path(path), stack)
        _check_references(content, root, path)
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
    return Denoiser.from_checkpoint(ckpt, source=str(path))


def check_package(path):
    """bioimageio.core's own test of a package (it loads each weight format, runs the test
    input and compares with the test output, and runs other input sizes); returns its
    ValidationSummary (``.status`` is 'passed' when it passed)."""
    require_bioimageio(core=True)
    from bioimageio.core import test_model

    with quiet():
        return test_model(str(path), devices=["cpu"])
