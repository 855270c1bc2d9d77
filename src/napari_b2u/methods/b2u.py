"""Blind2Unblind: global masker, mask mapper and the regularized re-visible loss."""

from __future__ import annotations

import torch

from ..losses import lambda_schedule, revisible_loss
from ..masking import global_mask, mask_mapper
from .base import Method


class Blind2Unblind(Method):
    name = "b2u"
    title = "Blind2Unblind"
    outputs = ("visible", "weighted", "blind")
    preview_names = ("blind", "visible", "weighted")
    loss_terms = ("loss", "revisible", "regularizer")
    schedule_name = "lambda"
    defaults = {
        "cells": 2,  # s; the FMDD reference script uses 4, see docs/benchmarks.md for the choice
        "lambda_start": 2.0,
        "lambda_end": 20.0,
        "lambda_hold": 0.4,
        "eta": 1.0,
    }

    @property
    def cells(self) -> int:
        return int(self.params["cells"])

    def schedule(self, p: float) -> float:
        pr = self.params
        return lambda_schedule(p, pr["lambda_start"], pr["lambda_end"], pr["lambda_hold"])

    def blind(self, model, y: torch.Tensor) -> torch.Tensor:
        """h(f(Ωy)): every pixel predicted by the copy in which it was blind."""
        return mask_mapper(self.run(model, global_mask(y, self.cells)), self.cells)

    def training_loss(self, model, y, sched):
        blind = self.blind(model, y)
        with torch.no_grad():
            visible = self.run(model, y)
        loss, rev, reg = revisible_loss(blind, visible, y, sched, self.params["eta"])
        return loss, {"loss": loss, "revisible": rev, "regularizer": reg}

    def validation_error(self, model, y):
        # With pixel-independent noise E[(h - y)²] = E[(h - x)²] + σ²: an honest stopping signal.
        return torch.mean((self.blind(model, y).float() - y.float()) ** 2)

    def predict(self, model, y, output=None):
        output = self.check_output(output)
        if output == "visible":
            return self.run(model, y)
        blind = self.blind(model, y)
        if output == "blind":
            return blind
        lam = float(self.params["lambda_end"])
        return (blind + lam * self.run(model, y)) / (lam + 1.0)

    def previews(self, model, y, sched):
        blind = self.blind(model, y)
        visible = self.run(model, y)
        lam = float(sched if sched is not None else self.params["lambda_end"])
        return {"blind": blind, "visible": visible, "weighted": (blind + lam * visible) / (lam + 1)}

    def copies_per_image(self, output: str) -> int:
        return 1 if output == "visible" else self.cells**2 + 1
