"""Small stand-ins and checks the engine needs while it runs (no state of their own)."""

from __future__ import annotations

import torch


class StopNow(Exception):
    """Raised inside a step when a stop is requested: the step is dropped, weights unchanged."""


def abort_hooks(model: torch.nn.Module, should_stop) -> list:
    """Hooks on every convolution that raise :class:`StopNow` once ``should_stop()``: before
    its forward and when its weight's gradient is computed, so a stop ends a running step at
    its next layer of the forward or the backward pass (remove them with ``h.remove()``)."""
    def check(*args):
        if should_stop():
            raise StopNow

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return ([m.register_forward_pre_hook(check) for m in convs]
            + [m.weight.register_hook(check) for m in convs if m.weight.requires_grad])


def is_compile_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor")) or "triton" in mod


class NoOptimizer:
    """What a classical method has instead of an optimizer."""

    param_groups: list = []
    state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def state_dict(self) -> dict:
        return {}


class Released:
    """Stands in for a sampler after training ended; holds no tensors."""

    def __init__(self, sampler):
        self.device = getattr(sampler, "device", None)

    def sample(self, *a, **k):
        raise RuntimeError("this trainer has finished; create a new Trainer to train again")
