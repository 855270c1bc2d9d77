"""The memory budget: how much an in-memory copy of a stack may take before the lazy paths
(reading a block at a time, training from a buffer) take over. A leaf module (numpy only)."""

from __future__ import annotations

import ctypes
import functools
import os
import re

import numpy as np

from ..errors import InputError

#: environment variable that sets the memory budget, e.g. "4GB" (default: half the RAM)
BUDGET_ENV = "NAPARI_B2U_MEMORY_BUDGET"


def parse_size(text) -> int:
    """Bytes from 4e9, '4GB', '512 MiB', '2g'."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise InputError(f"memory size {text!r}: write e.g. 4GB, 512MB or a number of bytes")
    unit = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * unit)


def total_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil comes with napari and dask's distributed
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_budget() -> int:
    """Bytes an in-memory copy of a stack may take before the lazy paths take over:
    ``NAPARI_B2U_MEMORY_BUDGET`` if set, else half the machine's RAM."""
    env = os.environ.get(BUDGET_ENV)
    return parse_size(env) if env else total_memory() // 2


def in_memory_bytes(shape, dtype) -> int:
    """What training or denoising in memory holds: the raw stack and two float32 copies."""
    n = int(np.prod(shape, dtype=np.int64))
    return n * np.dtype(dtype).itemsize + 2 * 4 * n


#: glibc's mallopt parameter M_MMAP_THRESHOLD, and the fixed threshold set by
#: :func:`bound_heap`
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 2**20


@functools.cache  # once per process: every out-of-core block calls it
def bound_heap() -> bool:
    """Let the memory of freed arrays go back to the system (glibc; elsewhere nothing): every
    allocation of 1 MB or more is mapped on its own and unmapped when freed. glibc's default
    raises that threshold up to 32 MB as large blocks are freed, after which a network's
    activations (tens of MB per tile) live in per-thread heaps that keep what they once held.
    Measured (benchmarks/scale.py, CPU U-Net, 512 MB budget, 2 × 4096² frames out of core): the
    run's peak above the process's baseline 742 → 340 MB. Returns whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False
