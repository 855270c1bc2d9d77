"""What a training run hands back: which weights are kept and the model file's info (the
classical floor then compares them with a filter: :mod:`.floor`). Functions of a
:class:`~.trainer.Trainer` that ran, through its public state (:class:`~.state.RunState`)."""

from __future__ import annotations

import numpy as np
import torch

from ..denoise.denoiser import Denoiser
from .crops import validation_crops
from .floor import apply_floor
from .sure import network_output, sure_risk


def finish(trainer, stopped: bool = False) -> None:
    """Choose the model to keep and set ``trainer.state.result``. A user's stop is quick: the best
    validated model, or the last one when nothing was validated yet, with no final validation,
    no comparison and no floor.

    ``config.keep`` "auto" (the default): the best model by the blind-spot validation error and
    the last weights, when they differ, are compared by the estimated error of the output the
    user gets (:class:`~.sure.Risk`) and the lower one is kept. The blind-spot error
    scores the network's *blind* output: on real frames it kept early checkpoints whose visible
    output was 0.1–0.3 dB worse than the last one (docs/benchmarks.md)."""
    st = trainer.state
    st.finished = True
    if st.step == 0:  # nothing was learned: a random network is not a model
        st.result = None
        return
    state, chosen, best = _best_or_last(trainer, stopped)
    last = trainer.average.kept(trainer.model)
    full = trainer.method.trainable and not stopped
    risk = measured = record = None
    if state is None:
        state = last
    elif full and trainer.config.keep == "auto":
        risk = sure_risk(trainer)
        if risk is not None:
            state, chosen, measured, record = choose_by_risk(trainer, risk, state, last,
                                                             best["step"])
    trainer.model.load_state_dict(state)  # the readout below describes the kept model
    st.result = make_denoiser(trainer, state, chosen)
    if record is not None:
        st.result.info["keep"] = record
    if trainer.config.floor != "none" and full and st.history:
        net_error = best["val_error"] if state is not last else st.history[-1]["val_error"]
        apply_floor(trainer, net_error, risk, measured)


def _best_or_last(trainer, stopped: bool):
    """``(best weights or None for the last, what was chosen, the best record)``: the final
    validation (not after a stop), then the best by validation unless it is the last step or
    ``keep="last"``."""
    st, step = trainer.state, trainer.state.step
    chosen, state, best = "last", None, None
    if trainer.val is not None:
        last_seen = st.history and st.history[-1]["step"] == step
        if not last_seen and not stopped:
            with trainer.average.applied(trainer.model):
                st.history.append({"step": step, "val_error": trainer.validate()})
        best = st.best_record()
        if st.best_state is not None and best["step"] != step and trainer.config.keep != "last":
            state, chosen = st.best_state, f"best by validation (step {best['step']})"
        elif best is not None and best["step"] == step:
            chosen = f"last, also best by validation (step {step})"
    return state, chosen, best


def measure_state(trainer, risk, state: dict):
    """The network with ``state``: its output on the risk's crops and divergence term."""
    trainer.model.load_state_dict(state)
    trainer.model.eval()
    try:
        return risk.output(network_output(trainer))
    finally:
        trainer.model.train()


def choose_by_risk(trainer, risk, best_state: dict, last: dict, best_step: int):
    """The best-by-validation or the last weights, whichever has the lower estimated error:
    ``(state, chosen, measured, record)``, ``measured`` the kept one's output and divergence,
    ``record`` both estimates (the model file's info["keep"]). The
    same crops and probe for both, so the difference is what is estimated, and a tie keeps
    the last (more training)."""
    on_best = measure_state(trainer, risk, best_state)
    on_last = measure_state(trainer, risk, last)
    e_best, e_last = risk.error(*on_best), risk.error(*on_last)
    if not (np.isfinite(e_best) and np.isfinite(e_last)):
        return best_state, f"best by validation (step {best_step})", None, None
    record = {"measure": "estimated error of the output (SURE)", "best_step": best_step,
              "best_by_validation": e_best, "last": e_last}
    if e_last <= e_best:
        return last, (f"last: a lower estimated error (SURE) than the best by validation "
                      f"(step {best_step})"), on_last, record
    return best_state, (f"best by validation (step {best_step}), confirmed by a lower "
                        "estimated error (SURE) than the last"), on_best, record


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
