"""What a training run has done so far: one object the Trainer updates and its helpers (the
weights choice, the floor, autosave, events) read, instead of the Trainer's private members."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RunState:
    step: int = 0
    elapsed: float = 0.0  # seconds of training (a resumed run continues its clock)
    history: list = field(default_factory=list)  # validation records: step, val_error
    best_state: dict | None = None  # the weights with the lowest validation error so far
    best_val: float = math.inf
    nan_retries: int = 0  # rollbacks after a non-finite loss
    val_batch: int | None = None  # crops validated at a time (smaller after out of memory)
    loss: float | None = None  # the last loss read out
    terms: dict = field(default_factory=dict)  # its terms
    rate: float | None = None  # steps per second (smoothed)
    schedule: float | None = None  # the method's scheduled weight (B2U: λ)
    lr: float = 0.0
    result: object = None  # the Denoiser kept (None until the run ends, or without a model)
    finished: bool = False  # the end phase ran (with or without a model)

    def best_record(self) -> dict | None:
        """The validation record (step, val_error) with the lowest error so far."""
        return min(self.history, key=lambda r: r["val_error"]) if self.history else None

    def record_validation(self, err: float, kept) -> bool:
        """Add a validation error; ``kept()`` gives the weights to keep when it is the best so
        far (then True)."""
        self.history.append({"step": self.step, "val_error": err})
        if err < self.best_val:
            self.best_state, self.best_val = kept(), err
            return True
        return False
