"""Blind2Unblind: global masker, mask mapper and the regularized re-visible loss."""

from __future__ import annotations

import torch

from ..losses import lambda_schedule, revisible_loss
from ..masking import MASK_HELP, MASK_PATTERN, covered, global_mask, mask_mapper, pick_copies
from ..params import Param
from .base import Method

#: B2U's settings, shared by Blind2Sound (which adds its own)
CELLS = Param("cells", int, 2, 2, 8, label="cells s",
              help="global-mask cell size s: s² masked copies of each patch per step "
                   "(the FMDD reference script uses 4; 2 measured better, docs/benchmarks.md)")
#: the blind spot's shape, for every blind-spot method
MASK = Param("mask", str, "auto", pattern=MASK_PATTERN, label="blind spot",
             help="the blind spot: " + MASK_HELP + ". 'auto' measures the noise's correlation "
                  "between neighbours and hides the correlated extent")
#: how many of the s² masked copies one training step runs
COPIES = Param("copies", int, 4, 0, 64, user=False, label="copies per step",
               help="masked copies run per training step: when s² is larger (wide blind spots "
                    "need larger cells) a random subset of this many, so a step costs what the "
                    "pixel mask's does; 0 runs all s². Validation and the weighted output always "
                    "use all of them")


def step_copies(method, y: torch.Tensor):
    """The masked copies one training step of a B2U-style ``method`` runs (None: all s²) and
    the 0/1 weight of the pixels they make blind (None: all)."""
    cells = method.cells
    copies = pick_copies(cells, int(method.params["copies"]), getattr(method, "generator", None))
    weight = None if copies is None else covered(*y.shape[-2:], cells, copies, y.device)
    return copies, weight


def lambda_params(start: float, end: float) -> tuple[Param, ...]:
    return (
        Param("lambda_start", float, start, 0.0, 1000.0, user=False,
              help="visible weight λ at the start of training"),
        Param("lambda_end", float, end, 0.0, 1000.0, user=False,
              help="visible weight λ at the end (and in the weighted output)"),
        Param("lambda_hold", float, 0.4, 0.0, 0.99, user=False,
              help="fraction of training at lambda_start before λ ramps up"),
    )


class Blind2Unblind(Method):
    name = "b2u"
    title = "Blind2Unblind"
    outputs = ("visible", "weighted", "blind")
    preview_names = ("blind", "visible", "weighted")
    default_preview = "weighted"
    texts = {
        "visible": "visible f(y): the network on the unmasked image — fast, one pass",
        "weighted": "weighted (h + λ·f)/(λ + 1): B2U's re-visible combination — best "
                    "quality, s² + 1 passes",
        "blind": "blind h(f(Ωy)): every pixel predicted by the copy in which it was masked",
        "loss": "total loss: re-visible term + η × regularizer (grows as λ ramps up)",
        "revisible": "re-visible term mean((h + λ·f − (λ+1)·y)²) (scales with λ²)",
        "regularizer": "blind-spot error mean((h − y)²): independent of λ",
    }
    loss_terms = ("loss", "revisible", "regularizer")
    takes_context = True
    plot_term = "regularizer"
    schedule_name = "lambda"
    schedule_label = "λ (visible weight)"
    parameters = (
        CELLS,
        MASK,
        COPIES,
        *lambda_params(2.0, 20.0),
        Param("eta", float, 1.0, 0.0, 100.0, user=False, help="weight η of the regularizer"),
    )

    @property
    def cells(self) -> int:
        """s: the parameter, enlarged where the blind spot needs room (box masks)."""
        return self.spot.cells(int(self.params["cells"]))

    def schedule(self, p: float) -> float:
        pr = self.params
        return lambda_schedule(p, pr["lambda_start"], pr["lambda_end"], pr["lambda_hold"])

    def blind(self, model, y: torch.Tensor, copies=None) -> torch.Tensor:
        """h(f(Ωy)): every pixel predicted by the copy in which it was blind (with ``copies``,
        only the pixels blind in those copies are)."""
        s = self.cells
        y, ctx = self.split(y)  # the centre frame is masked, its neighbours are not
        return mask_mapper(self.run(model, global_mask(y, s, self.spot, copies), ctx), s,
                           copies)

    def training_loss(self, model, y, sched):
        copies, weight = step_copies(self, y)
        blind = self.blind(model, y, copies)
        with torch.no_grad():
            visible = self.run(model, y)
        centre = self.split(y)[0]
        loss, rev, reg = revisible_loss(blind, visible, centre, sched, self.params["eta"],
                                        weight)
        return loss, {"loss": loss, "revisible": rev, "regularizer": reg}

    def blind_prediction(self, model, y):
        return self.blind(model, y)

    def validation_error(self, model, y):
        # With pixel-independent noise E[(h - y)²] = E[(h - x)²] + σ²: an honest stopping signal.
        return torch.mean((self.blind_prediction(model, y).float()
                           - self.split(y)[0].float()) ** 2)

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
