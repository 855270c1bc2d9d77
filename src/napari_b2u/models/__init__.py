"""Networks. Built from a plain config dict so that a saved model can be rebuilt exactly."""

from __future__ import annotations

from .unet import UNet, pad_to_multiple

__all__ = ["UNet", "pad_to_multiple", "build_model"]


def build_model(config: dict):
    """Build a network from ``{"arch": ..., **kwargs}`` (the form stored in model files)."""
    cfg = dict(config)
    arch = cfg.pop("arch", "unet")
    if arch == "unet":
        return UNet(**cfg)
    if arch == "dbsn":
        from .dbsn import DBSN

        return DBSN(**cfg)
    raise ValueError(f"unknown network architecture {arch!r}")
