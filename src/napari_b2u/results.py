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
    training data and validate it on the same held-out crops as the network, by the same
    self-supervised error under the same blind spot. The user never gets a network that a
    filter they could have chosen by that measure beats.

    A Gaussian floor is also *blended*: w × network + (1 − w) × filter, with the w in [0, 1]
    that minimizes the blend's blind-spot error (closed form: the error is quadratic in w).
    Both blind predictions are J-invariant, so the blend's error is as honest as theirs, and
    w = 1 / w = 0 recover the network / the filter. Measured on real frames where the two are
    close (docs/benchmarks.md), the blend beats the hard choice, which the blind errors often
    got wrong by a fraction of a per cent."""
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
    sums = blend_sums(trainer, floor, model) if floor.name == "gauss" else None
    if sums is not None:
        s0, s1, s2, n = sums
        err, net_error = s0 / n, (s0 + 2 * s1 + s2) / n  # the filter's and the network's
        weight = snap_weight(-s1 / s2 if s2 > 0 else 1.0)
        blend_error = (s0 + 2 * weight * s1 + weight**2 * s2) / n
    else:
        with torch.no_grad():
            err = float(np.mean([float(floor.validation_error(model, val[i:i + 1]))
                                 for i in range(val.shape[0])]))
        weight = 1.0 if err >= net_error else 0.0
    info = trainer._result.info
    info["floor"] = {"method": floor.name, "val_error": err, "network_val_error": net_error,
                     "mask": floor.params.get("mask")}
    if weight >= 1.0:
        return
    norm = trainer.data.normalization
    if weight > 0.0:
        sigma = [float(s) for s in model.sigma]
        info["floor"].update(blend_weight=weight, blend_val_error=blend_error)
        trainer._note(f"blended {weight:.2f} × the network with {1 - weight:.2f} × a Gaussian "
                      f"filter (σ {', '.join(f'{s:.2f}' for s in sigma)} px): its "
                      f"self-supervised error ({blend_error:.4g}) is lower than the network's "
                      f"({net_error:.4g}) and the filter's ({err:.4g})")
        res = trainer._result
        info["chosen"] = f"{info['chosen']}, blended with a Gaussian filter (weight {weight:.2f})"
        info["messages"] = list(trainer.messages)
        trainer._result = Denoiser(res.method_name, res.method_params, res.model_config,
                                   res.state_dict, norm, info,
                                   blend={"weight": weight, "gauss_sigma": sigma})
        return
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


#: blend weights this close to 0 or 1 give the filter or the network alone: a 2 % share is not
#: worth a second filter at every inference and a model file older readers cannot load
BLEND_SNAP = 0.02


def snap_weight(w: float) -> float:
    """The blend weight clipped to [0, 1], ends within ``BLEND_SNAP`` taken."""
    w = min(1.0, max(0.0, float(w)))
    return 0.0 if w < BLEND_SNAP else 1.0 if w > 1.0 - BLEND_SNAP else w


@torch.no_grad()
def blend_sums(trainer, floor, model):
    """Over the validation crops, with d = filter's J-invariant prediction − y and
    e = network's blind prediction − filter's: (Σd², Σd·e, Σe², count); None when the
    method has no per-pixel blind prediction. The blend w·net + (1−w)·filter then has the
    blind-spot error (Σd² + 2wΣde + w²Σe²) / count."""
    val = trainer.val
    trainer.model.eval()
    try:
        s0 = s1 = s2 = 0.0
        n = 0
        for i in range(val.shape[0]):
            y = val[i:i + 1].float()
            with trainer._autocast():
                h = trainer.method.blind_prediction(trainer.model, val[i:i + 1])
            if h is None:
                return None
            g = floor.j_invariant(model, y)
            d, e = g - y, h.float() - g
            s0 += float((d * d).sum())
            s1 += float((d * e).sum())
            s2 += float((e * e).sum())
            n += d.numel()
        return s0, s1, s2, n
    finally:
        trainer.model.train()
