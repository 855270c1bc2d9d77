"""The memory budget: how much an in-memory copy of a stack may take before the lazy paths
(reading a block at a time, training from a buffer) take over. A leaf module (numpy only)."""

from __future__ import annotations

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
