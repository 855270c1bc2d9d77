"""Self-supervised validation on the held-out crops, robust to running out of GPU memory."""

from __future__ import annotations

from .device import is_oom, release_memory


def validate_safe(trainer) -> float:
    """``trainer._validate`` (the method's self-supervised error on the held-out crops),
    retried in smaller chunks when the GPU runs out of memory; the smaller chunk is kept for
    the rest of the run, and the user is told once per change."""
    vb = max(1, min(trainer.batch_size, trainer._val_batch or trainer.batch_size))
    while True:
        oom = False
        try:
            err = trainer._guarded(trainer._validate, vb)
            trainer._val_batch = vb
            return err
        except Exception as exc:
            if not is_oom(exc) or vb == 1:
                raise
            oom = True
        if oom:  # outside the except block so the traceback frees its tensors
            trainer.model.train()
            release_memory(trainer.device)
            vb = max(1, vb // 2)
            trainer._note(f"out of GPU memory in validation: validating {vb} crops at a time")
