"""Registry of denoising methods; each is a small object run by the one training engine."""

from __future__ import annotations

from .b2s import Blind2Sound
from .b2u import Blind2Unblind
from .base import Method
from .classical import BM3DMethod, GaussMethod
from .dbsn import DBSNMethod
from .n2v import Noise2Void
from .nbr2nbr import Neighbor2Neighbor

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (Blind2Unblind, Blind2Sound, DBSNMethod, Noise2Void, Neighbor2Neighbor,
             GaussMethod, BM3DMethod):
    register(_cls)


def unregister(name: str) -> None:
    """Remove a registered method (plugins and tests that registered their own)."""
    _REGISTRY.pop(name, None)


def method_names() -> list[str]:
    return list(_REGISTRY)


def method_titles() -> dict[str, str]:
    return {k: v.title for k, v in _REGISTRY.items()}


def get_method(name: str, **params) -> Method:
    try:
        cls = _REGISTRY[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}"
        ) from None
    return cls(**params)


__all__ = ["Method", "Blind2Unblind", "Blind2Sound", "DBSNMethod", "Noise2Void",
           "Neighbor2Neighbor", "GaussMethod", "BM3DMethod", "get_method", "method_names",
           "method_titles", "register", "unregister"]
