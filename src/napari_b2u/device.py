"""Device choice and description (CUDA, Apple MPS, CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def available_devices() -> list[str]:
    """Device strings a user can pick, best first."""
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU, else Apple MPS, else CPU. Validates explicit choices."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asked for, but this PyTorch has no CUDA GPU available "
                f"(torch {torch.__version__}); use device='cpu' or install a CUDA build of torch"
            )
        idx = dev.index if dev.index is not None else 0
        if idx >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) found"
            )
        return torch.device("cuda", idx)
    if dev.type == "mps" and "mps" not in available_devices():
        raise ValueError("device 'mps' asked for, but Apple MPS is not available here")
    return dev


@dataclass
class DeviceInfo:
    device: str
    name: str
    free_bytes: int | None = None
    total_bytes: int | None = None

    def describe(self) -> str:
        if self.free_bytes is None:
            return f"{self.device}: {self.name}"
        return (
            f"{self.device}: {self.name} "
            f"({self.free_bytes / 2**30:.1f} of {self.total_bytes / 2**30:.1f} GiB free)"
        )


def device_info(device: str | torch.device) -> DeviceInfo:
    dev = resolve_device(device)
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return DeviceInfo(str(dev), torch.cuda.get_device_name(dev), int(free), int(total))
    if dev.type == "mps":
        return DeviceInfo("mps", "Apple GPU (MPS)")
    import os

    return DeviceInfo(
        "cpu", f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")


def free_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX: recent Xeon and EPYC).
    Elsewhere bf16 is emulated and slower than fp32, so CPU training stays in fp32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)  # private probes: absent in some builds
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 - a failing probe means "not known to be native"
            pass
    return False


def amp_dtype(device: torch.device):
    """The autocast dtype for training on ``device``, or None for plain fp32: bf16 (fp16 on
    GPUs without it) on CUDA; bf16 on CPUs that compute it natively (an AMD EPYC with
    AVX512-BF16 trained the CPU preset 3× faster: docs/benchmarks.md)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16_native():
        return torch.bfloat16
    return None


def release_memory(device: torch.device) -> None:
    """Give cached GPU memory back after a run, a stop or a failure."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        try:
            torch.mps.empty_cache()
        except Exception:  # noqa: BLE001 - older torch builds lack it
            pass


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors of any backend."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "mps backend out of memory" in msg
    )


def retry_on_oom(device: torch.device, attempt, shrink, give_up=None):
    """The one out-of-memory rule: run ``attempt()`` (a generator function: its items are
    passed on, its return value returned — ``yield from``) and, when it runs out of memory,
    drop the error's traceback (its frames hold the tensors), release the device's cache and
    ask ``shrink()`` to make the next attempt smaller: True retries; False gives up — the
    out-of-memory error propagates, or, with ``give_up`` (a callable), its value is returned.
    :func:`call_retrying` runs a plain function under the same rule."""
    while True:
        try:
            return (yield from attempt())
        except Exception as exc:
            if not is_oom(exc):
                raise
            error = exc.with_traceback(None)
        release_memory(device)  # outside the except block, so the tensors are free
        if not shrink():
            if give_up is not None:
                return give_up()
            raise error


def call_retrying(device: torch.device, fn, shrink, give_up=None):
    """:func:`retry_on_oom` for a plain function ``fn()``."""
    gen = retry_on_oom(device, lambda: _once(fn), shrink, give_up)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _once(fn):
    return fn()
    yield  # unreachable: makes this a generator that yields nothing
