"""Which weights a run keeps, and the model file's info: the quick choice (a stop's, and the
end phase's first) and the comparison of the best-by-validation and the last weights by the
estimated error of their outputs. The end phase (:mod:`.endphase`) runs them in stages; the
classical floor then compares the kept network with a filter (:mod:`.floor`). Functions of a
:class:`~.trainer.Trainer` through its public state (:class:`~.state.RunState`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..denoise.denoiser import Denoiser
from .crops import validation_crops
from .sure import network_output


@dataclass
class Choice:
    """The quick choice: ``state`` the weights kept (the last or the best validated),
    ``best_state`` the best validated weights when they are not the last, ``best`` the best
    validation record (None without validation)."""

    state: dict
    chosen: str
    best_state: dict | None = None
    best: dict | None = None
    last: dict | None = None


def finish(trainer, stopped: bool = False) -> Choice | None:
    """The quick choice, with no validation, comparison or floor (a stop's, and the end phase's
    first, so that a stop there keeps it at once): ``trainer.state.result`` becomes the best
    validated weights, or the last when they are the best, nothing was validated or
    ``keep="last"``. None when nothing was learned.

    With ``config.keep`` "auto" (the default) the end phase then compares the best by the
    blind-spot validation error and the last by the estimated error of the output the user
    gets (:class:`~.sure.Risk`) and keeps the lower: the blind-spot error scores the network's
    *blind* output, and on real frames it kept early checkpoints whose visible output was
    0.1–0.3 dB worse than the last one (docs/benchmarks.md)."""
    st = trainer.state
    st.finished = True
    if st.step == 0:  # nothing was learned: a random network is not a model
        st.result = None
        return None
    last = trainer.average.kept(trainer.model)
    choice = Choice(last, "last", last=last)
    if st.history:
        best = choice.best = st.best_record()
        if st.best_state is not None and best["step"] != st.step and trainer.config.keep != "last":
            choice.state = choice.best_state = st.best_state
            choice.chosen = f"best by validation (step {best['step']})"
        elif best["step"] == st.step:
            choice.chosen = f"last, also best by validation (step {st.step})"
    keep(trainer, choice.state, choice.chosen)
    return choice


def keep(trainer, state: dict, chosen: str, record: dict | None = None) -> None:
    """``trainer.state.result`` becomes a Denoiser of ``state`` (loaded into the model: the
    readout describes the kept model); ``record``: the comparison (info["keep"])."""
    trainer.model.load_state_dict(state)
    trainer.state.result = make_denoiser(trainer, state, chosen)
    if record is not None:
        trainer.state.result.info["keep"] = record


def measure_state(trainer, risk, state: dict):
    """The network with ``state``: its output on the risk's crops and divergence term."""
    trainer.model.load_state_dict(state)
    trainer.model.eval()
    try:
        return risk.output(network_output(trainer, trainer.end.views))
    finally:
        trainer.model.train()


def pick(risk, on_best, on_last, best_step: int):
    """The best-by-validation or the last weights, whichever has the lower estimated error
    (``on_best``/``on_last``: :func:`measure_state`'s): ``("best" or "last", chosen,
    record)``, ``record`` both estimates (the model file's info["keep"]); ``(None, …)`` when
    either is not finite. The same crops and probe for both, so the difference is what is
    estimated, and a tie keeps the last (more training)."""
    e_best, e_last = risk.error(*on_best), risk.error(*on_last)
    if not (np.isfinite(e_best) and np.isfinite(e_last)):
        return None, None, None
    record = {"measure": "estimated error of the output (SURE)", "best_step": best_step,
              "best_by_validation": e_best, "last": e_last}
    if e_last <= e_best:
        return "last", (f"last: a lower estimated error (SURE) than the best by validation "
                        f"(step {best_step})"), record
    return "best", (f"best by validation (step {best_step}), confirmed by a lower estimated "
                    "error (SURE) than the last"), record


def make_denoiser(trainer, state: dict, chosen: str):
    """A Denoiser of ``state`` with the run's info (what the model file records)."""
    info = {
        "steps": trainer.state.step,
        "seconds": round(trainer.state.elapsed, 2),
        "device": str(trainer.device),
        "chosen": chosen,
        "split": trainer.data.split,
        "patch_size": trainer.patch_size,
        "batch_size": trainer.batch_size,
        "history": list(trainer.state.history),
        "train_config": trainer.config.to_dict(),
        "axes": trainer.data.layout.axes,
        "messages": list(trainer.messages),
        "readout": readout(trainer),
        "warm_start": trainer.warm_start,
        "noise": trainer.noise.to_dict() if trainer.noise is not None else None,
        "context": trainer.context.to_dict(),
    }
    k = trainer.method.context
    return Denoiser(
        method=trainer.method.name,
        method_params=dict(trainer.method.params),
        model_config=trainer.model_config,
        state_dict={k: v.float().cpu() for k, v in state.items()},
        normalization=trainer.data.normalization,
        info=info,
        context={"frames": k, "axis": trainer.context.axis} if k else None,
    )


@torch.no_grad()
def readout(trainer) -> dict:
    """The method's fitted extras (B2S's noise parameters) on training crops, raw units."""
    norm = trainer.data.normalization
    y = torch.from_numpy(validation_crops(trainer.data.train_inputs, trainer.patch_size, 8)).to(
        trainer.device)
    trainer.model.eval()
    try:
        return trainer.method.readout(trainer.model, y, norm.offset[0], norm.scale[0])
    finally:
        trainer.model.train()
