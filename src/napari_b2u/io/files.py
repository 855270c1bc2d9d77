"""Writing files safely: atomically, never over an input, never leaving a partial file.

A leaf module (no torch, no Qt) used by model saving, autosave, the TIFF/Zarr writers and the CLI.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..errors import InputError, OutputError

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_write(path, what: str = "the file"):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step,
    on any failure (disk full, Ctrl-C, a writer's error) the temporary file is removed, ``path``
    is untouched, and write errors become an :class:`OutputError` naming ``what`` and ``path``.

    The temporary file is a fresh hidden name created exclusively (``.NAME.<random>.part``),
    never ``NAME.part``: that may be an input or any other file of the user's."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_file(path)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        # judged before the temporary file goes: it may be what filled the disk
        failed = not isinstance(exc, OutputError) and _is_write_error(exc, path.parent)
        why = reason(exc, path.parent) if failed else ""
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not failed:
            raise
        raise OutputError(f"could not write {what} to {path}: {why}") from exc


def _fresh_file(path: Path) -> Path:
    """A new empty file next to ``path`` that no one else has: O_EXCL, a random name (mode
    0666 less the umask, as the final file would have had)."""
    while True:
        tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


#: how torch's C++ writer (PyTorchStreamWriter, inline_container.cc) words a failed write: a
#: full disk is "unexpected pos 576 vs 534", an unwritable folder "open file failed with
#: strerror: ...", others "failed writing file ..." -- RuntimeErrors, not OSErrors
_TORCH_WRITE = ("inline_container", "pytorchstreamwriter", "unexpected pos", "file failed",
                "strerror", "failed writing", "iostream error")


def _is_write_error(exc: BaseException, folder) -> bool:
    """A failed write: any OSError, torch's serialization errors, or any other RuntimeError
    of the writer while ``folder`` is full or not writable."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(s in text for s in _TORCH_WRITE) or _disk_trouble(folder) is not None


def _disk_trouble(folder) -> str | None:
    """What is wrong with ``folder`` for writing (no space, not writable), else None."""
    try:
        if not os.access(folder, os.W_OK):
            return "the folder is read-only or not writable"
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < 64 * 1024:
            return "No space left on device"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    return None


def reason(exc: BaseException, folder=None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    trouble = _disk_trouble(folder) if folder is not None else None
    # torch's words ("unexpected pos 576 vs 534") do not say what happened; the disk does
    return f"{trouble} ({text[:160]})" if trouble else text[:200]


def check_writable(path, what: str = "output") -> None:
    """Refuse, before any work, an output whose folder cannot be written (read-only, no
    permission): a probe file is created there and removed. A full disk passes (an empty file
    needs no space); a write that fails later still raises OutputError."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the first folder that exists: the others will be made in it
    try:
        _fresh_file(folder / Path(path).name).unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path}: {reason(exc)} ({folder}); "
                          "choose a folder you can write to") from exc


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
