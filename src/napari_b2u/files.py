"""Writing files safely: atomically, never over an input, never leaving a partial file.

A leaf module (no torch, no Qt) used by model saving, autosave, the TIFF/Zarr writers and the CLI.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import InputError, OutputError

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_write(path, what: str = "the file"):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step,
    on any failure (disk full, Ctrl-C, a writer's error) the temporary file is removed, ``path``
    is untouched, and OS errors become an :class:`OutputError` naming ``what`` and ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + PART_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OutputError) or not _is_write_error(exc):
            raise
        raise OutputError(f"could not write {what} to {path}: {_reason(exc)}") from exc


def _is_write_error(exc: BaseException) -> bool:
    # torch.save reports a full disk as RuntimeError("... failed writing file ..."): the
    # C++ stream writer does not raise OSError
    return isinstance(exc, OSError) or (
        isinstance(exc, RuntimeError) and "writ" in str(exc).lower())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def same_file(a, b) -> bool:
    """True when ``a`` and ``b`` name the same file: equal resolved paths (``sub/../x``,
    symlinks) or, when both exist, the same inode (hard links)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare what exists below
        pass
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def check_output(path, inputs=(), overwrite: bool = False, what: str = "output",
                 allow=()) -> Path:
    """Refuse to write ``path`` over any of ``inputs`` (whatever ``overwrite`` says: an input is
    the user's data), or over an existing file unless ``overwrite``. ``allow``: inputs that this
    output may replace (an autosave continuing the checkpoint it resumed from). Returns the path.
    """
    path = Path(path)
    for inp in inputs:
        if inp is None:
            continue
        inside = Path(inp).is_dir() and _is_inside(path, inp)
        if (same_file(path, inp) or inside) and not any(same_file(path, a) for a in allow):
            where = "inside the input folder" if inside and not same_file(path, inp) else \
                "the input file"
            raise InputError(f"the {what} {path} is {where} {inp}; the input is never "
                             "overwritten (not even with --overwrite): choose another name")
    if path.is_dir():
        raise InputError(f"the {what} {path} is a folder; give a file name")
    if path.exists() and not overwrite and not any(same_file(path, a) for a in allow):
        raise InputError(f"{path} exists; choose another {what} name or pass --overwrite")
    return path


def check_distinct(paths: dict) -> None:
    """Refuse two outputs that name the same file (e.g. --out and --autosave)."""
    items = [(k, Path(v)) for k, v in paths.items() if v is not None]
    for i, (ka, pa) in enumerate(items):
        for kb, pb in items[i + 1:]:
            if same_file(pa, pb):
                raise InputError(f"{ka} and {kb} name the same file ({pa}); give each its own")


def _is_inside(path: Path, folder) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False
