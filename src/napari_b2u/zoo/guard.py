"""A downloaded package is untrusted: before bioimageio.spec sees it, its description is read
with bounds (size, YAML anchors and aliases, nesting: a "billion laughs" would never finish)
and every file it refers to must lie inside it (no URL of any scheme, no absolute path, no
``..``, no link out of a folder), so opening a package never reaches the network or the rest
of the disk."""

from __future__ import annotations

import contextlib
import re
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .common import RDF_NAMES, reason

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


def open_description(p: Path, stack: contextlib.ExitStack):
    """A package's description (content, root, file name), read within bounds: a zip's every
    member by its declared size (zipfile never inflates past it) and the description also by
    what is read, then its YAML scanned for aliases and nesting before anything composes it."""
    from bioimageio.spec.utils import read_yaml

    from ..modelfile import MAX_UNPACKED_BYTES

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


def check_references(content: dict, root, path) -> None:
    """Refuse a reference that leaves the package: a URL of any scheme (``file:`` too), an
    absolute path (a drive letter reads as a scheme), a path through '..', or (in a folder) a
    link out of it; a folder's files are bounded like a zip's members."""
    from ..modelfile import MAX_UNPACKED_BYTES

    for ref in _references(content, top=True):
        r = ref.strip().replace("\\", "/")
        outside = (re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", r) is not None or r.startswith("/")
                   or ".." in PurePosixPath(r).parts)
        if not outside and isinstance(root, Path):
            try:
                target = (root / r).resolve()
                outside = not target.is_relative_to(root)
                if not outside and target.is_file() and (target.stat().st_size
                                                         > MAX_UNPACKED_BYTES):
                    raise InputError(f"{path}: its file {r} is larger than any napari-b2u "
                                     "package holds; refusing to open it")
                if not outside and target.exists() and not (target.is_file()
                                                            or target.is_dir()):
                    raise InputError(f"{path}: its file {r} is not a regular file (a FIFO, "
                                     "socket or device, which would never end); copy the "
                                     "package again")
            except OSError as exc:  # a name too long for the file system, ...
                raise InputError(f"{path} refers to {ref[:80]!r}, which is no file of the "
                                 f"package ({exc.strerror or exc})") from None
        if outside:
            raise InputError(f"{path} refers to {ref[:200]!r}, outside the package; {FETCH}")
