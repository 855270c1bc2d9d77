"""Losses and training schedules (METHOD.md §1)."""

from __future__ import annotations

import torch


def lambda_schedule(p: float, start: float = 2.0, end: float = 20.0, hold: float = 0.4) -> float:
    """Visible weight λ at training progress ``p`` in [0, 1].

    Constant ``start`` while p <= ``hold``, then linear to ``end`` at p = 1 (reference code).
    """
    p = min(max(float(p), 0.0), 1.0)
    if p <= hold:
        return float(start)
    return float(start + (end - start) * (p - hold) / (1.0 - hold))


def lr_factor(p: float, milestones=(0.2, 0.4, 0.6, 0.8), gamma: float = 0.5) -> float:
    """Learning-rate multiplier: halved at each milestone fraction of training (reference)."""
    p = min(max(float(p), 0.0), 1.0)
    return float(gamma ** sum(p >= m for m in milestones))


def revisible_loss(
    blind: torch.Tensor,
    visible: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor | float,
    eta: float = 1.0,
    weight: torch.Tensor | None = None,
):
    """Regularized re-visible loss of B2U.

    ``L = mean((h + λ·f̂ − (λ+1)·y)²) + η·mean((h − y)²)``. ``visible`` is detached here, so the
    gradient only flows through the blind branch whatever the caller passes. ``weight``
    (broadcastable to ``y``, 0/1) restricts both means to the pixels a step's copies covered.
    Returns ``(total, revisible_term, regularizer_term)``.
    """
    visible = visible.detach()
    blind = blind.float()
    visible = visible.float()
    y = y.float()
    rev = weighted_mean((blind + lam * visible - (lam + 1.0) * y) ** 2, weight)
    reg = weighted_mean((blind - y) ** 2, weight)
    return rev + eta * reg, rev, reg


def weighted_mean(e: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean(e), or its mean over the pixels where ``weight`` (broadcastable to e) is 1."""
    if weight is None:
        return torch.mean(e)
    w = weight.to(e.dtype).expand_as(e)
    return (e * w).sum() / w.sum().clamp(min=1.0)
