"""An exponential moving average of the weights (``TrainConfig.ema``).

With a short CPU budget the last weights are noisy; their running average is validated and kept
instead. Off (``decay`` None or 0), every method here is a pass-through, so the engine calls them
unconditionally.
"""

from __future__ import annotations

import contextlib

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float | None):
        self.decay = float(decay) if decay else None
        self.state = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                      if self.decay else None)

    @property
    def on(self) -> bool:
        return self.state is not None

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if self.state is None:
            return
        # a short warm-up (decay (1 + t) / (10 + t) below the target) so that the average does
        # not drag the random initialization along
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        cur = model.state_dict()
        keys = [k for k, v in self.state.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state[k] for k in keys], [cur[k] for k in keys], 1.0 - d)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Evaluate ``model`` with the averaged weights, then put the training weights back."""
        if self.state is None:
            yield
            return
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(backup)

    def kept(self, model: torch.nn.Module) -> dict:
        """The weights a model made now would hold: the average, else the current ones."""
        src = self.state if self.state is not None else model.state_dict()
        return {k: v.detach().clone() for k, v in src.items()}

    def release(self) -> None:
        self.state = None
