"""What every part of the BioImage Model Zoo wing shares: the names and format of napari-b2u's
entry in a package, whether a path is a package, the one error for the missing optional extra
(``pip install "napari-b2u[bioimageio]"``: bioimageio.spec and bioimageio.core, imported only
when used), and bioimageio.core's own test of a package."""

from __future__ import annotations

import contextlib
import importlib
import warnings
import zipfile
from pathlib import Path

from ..errors import MissingExtra

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
    """The line of an exception's message that says what is wrong, shortened: pydantic puts
    the cause last (then, in some versions, a "For further information visit ..." link, and
    the field on the line before), a YAML error says what first and ends with a caret under
    the place."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("For further information")]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[-1].startswith("^"):  # YAML: what, where, the line, a caret
        return f"{lines[0]} ({lines[-1].lstrip('^ ').strip('()')})"[:200]
    last = lines[-1]
    if len(lines) > 2 and " " not in lines[-2] and "[type=" in last:  # pydantic: field, cause
        last = f"{lines[-2]}: {last.split(' [type=')[0]}"
    return last[:200]


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


def check_package(path):
    """bioimageio.core's own test of a package (it loads each weight format, runs the test
    input and compares with the test output, and runs other input sizes); returns its
    ValidationSummary (``.status`` is 'passed' when it passed)."""
    require_bioimageio(core=True)
    from bioimageio.core import test_model

    with quiet():
        return test_model(str(path), devices=["cpu"])
