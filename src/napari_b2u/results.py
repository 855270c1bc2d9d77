"""What a training run hands back: which weights are kept, the model file's info, and the
classical floor. Functions of a :class:`~napari_b2u.engine.Trainer` that ran (engine.py stays the
loop)."""

from __future__ import annotations

import numpy as np
import torch

from .methods import get_method
from .noise import resolve_auto_mask
from .sampling import validation_crops


def finish(trainer, stopped: bool = False) -> None:
    """Choose the model to keep and set ``trainer._result``. A user's stop is quick: the best
    validated model, or the last one when nothing was validated yet, with no final validation
    and no floor."""
    trainer._finished = True
    step = trainer.step
    if step == 0:  # nothing was learned: a random network is not a model
        trainer._result = None
        return
    chosen, state = "last", None
    if trainer.val is not None:
        last_seen = trainer.history and trainer.history[-1]["step"] == step
        if not last_seen and not stopped:
            with trainer.average.applied(trainer.model):
                trainer.history.append({"step": step, "val_error": trainer._validate_safe()})
        best = trainer.best_record()
        if trainer._best_state is not None and best["step"] != step:
            state, chosen = trainer._best_state, f"best by validation (step {best['step']})"
    if state is None:
        state = trainer.average.kept(trainer.model)
        if trainer.history and trainer.best_record()["step"] == step:
            chosen = f"last, also best by validation (step {step})"
    trainer.model.load_state_dict(state)  # the readout below describes the kept model
    trainer._result = make_denoiser(trainer, state, chosen)
    if (trainer.config.floor != "none" and trainer.method.trainable and trainer.history
            and not stopped):  # a stop must be quick: no floor then
        apply_floor(trainer, trainer.best_record()["val_error"])


def make_denoiser(trainer, state: dict, chosen: str):
    """A Denoiser of ``state`` with the run's info (what the model file records)."""
    from .inference import Denoiser

    info = {
        "steps": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "device": str(trainer.device),
        "chosen": chosen,
        "split": trainer.data.split,
        "patch_size": trainer.patch_size,
        "batch_size": trainer.batch_size,
        "history": list(trainer.history),
        "train_config": trainer.config.to_dict(),
        "axes": trainer.data.layout.axes,
        "messages": list(trainer.messages),
        "readout": readout(trainer),
        "warm_start": trainer.warm_start,
        "noise": trainer.noise.to_dict() if trainer.noise is not None else None,
    }
    return Denoiser(
        method=trainer.method.name,
        method_params=dict(trainer.method.params),
        model_config=trainer.model_config,
        state_dict={k: v.float().cpu() for k, v in state.items()},
        normalization=trainer.data.normalization,
        info=info,
    )


@torch.no_grad()
def readout(trainer) -> dict:
    """The method's fitted extras (B2S's noise parameters) on training crops, raw units."""
    norm = trainer.data.normalization
    y = torch.from_numpy(validation_crops(trainer.data.train, trainer.patch_size, 8)).to(
        trainer.device)
    trainer.model.eval()
    try:
        return trainer.method.readout(trainer.model, y, norm.offset[0], norm.scale[0])
    finally:
        trainer.model.train()


def apply_floor(trainer, net_error: float) -> None:
    """The classical floor: calibrate ``config.floor`` (a Gaussian filter by default) on the
    training data, validate it on the same held-out crops, and return it instead of the network
    when its self-supervised error is lower — the user never gets a network that a filter they
    could have chosen by the same measure beats."""
    from .inference import Denoiser

    floor = get_method(trainer.config.floor)
    if "mask" in floor.params:
        # the same blind spot as the network's error, or the filter's error rewards passing
        # correlated noise through and the comparison is not on one scale
        mask = trainer.method.params.get("mask", "auto")
        if mask == "auto":
            resolve_auto_mask(floor, trainer.data.train)
        else:
            floor.params["mask"] = mask
    channels = trainer.data.layout.n_channels
    model = floor.build(floor.model_config(channels)).to(trainer.device)
    crops = validation_crops(trainer.data.train, max(trainer.patch_size, 128), 16)
    for _ in floor.fit(model, torch.from_numpy(crops).to(trainer.device)):
        pass
    val = trainer.val
    with torch.no_grad():
        err = float(np.mean([float(floor.validation_error(model, val[i:i + 1]))
                             for i in range(val.shape[0])]))
    info = trainer._result.info
    info["floor"] = {"method": floor.name, "val_error": err, "network_val_error": net_error}
    if err >= net_error:
        return
    norm = trainer.data.normalization
    trainer._note(f"the {floor.title} scored a lower self-supervised error ({err:.4g}) than the "
                  f"trained network ({net_error:.4g}): returning the filter. Train longer, or "
                  "check the noise (correlated noise defeats blind-spot training)")
    info = {**info, "chosen": f"classical floor: {floor.title}", "trained_method":
            trainer.method.name, "readout": floor.readout(model, None, norm.offset[0],
                                                          norm.scale[0]),
            "messages": list(trainer.messages)}
    trainer._result = Denoiser(floor.name, dict(floor.params), floor.model_config(channels),
                               {k: v.float().cpu() for k, v in model.state_dict().items()},
                               norm, info)
