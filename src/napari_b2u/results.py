"""What a training run hands back: which weights are kept, the model file's info, and the
classical floor. Functions of a :class:`~napari_b2u.engine.Trainer` that ran (engine.py stays the
loop)."""

from __future__ import annotations

import numpy as np
import torch

from .methods import get_method
from .noise import frames_report, resolve_auto_mask, variance_fit
from .risk import Risk
from .sampling import crop_spots, take_crops, validation_crops


def finish(trainer, stopped: bool = False) -> None:
    """Choose the model to keep and set ``trainer._result``. A user's stop is quick: the best
    validated model, or the last one when nothing was validated yet, with no final validation,
    no comparison and no floor.

    ``config.keep`` "auto" (the default): the best model by the blind-spot validation error and
    the last weights, when they differ, are compared by the estimated error of the output the
    user gets (:class:`~napari_b2u.risk.Risk`) and the lower one is kept. The blind-spot error
    scores the network's *blind* output: on real frames it kept early checkpoints whose visible
    output was 0.1–0.3 dB worse than the last one (docs/benchmarks.md)."""
    trainer._finished = True
    step = trainer.step
    if step == 0:  # nothing was learned: a random network is not a model
        trainer._result = None
        return
    keep = trainer.config.keep
    chosen, state, best = "last", None, None
    if trainer.val is not None:
        last_seen = trainer.history and trainer.history[-1]["step"] == step
        if not last_seen and not stopped:
            with trainer.average.applied(trainer.model):
                trainer.history.append({"step": step, "val_error": trainer._validate_safe()})
        best = trainer.best_record()
        if trainer._best_state is not None and best["step"] != step and keep != "last":
            state, chosen = trainer._best_state, f"best by validation (step {best['step']})"
    last = trainer.average.kept(trainer.model)
    full = trainer.method.trainable and not stopped
    risk = measured = record = None
    if state is None:
        state = last
        if best is not None and best["step"] == step:
            chosen = f"last, also best by validation (step {step})"
    elif full and keep == "auto":
        risk = sure_risk(trainer)
        if risk is not None:
            state, chosen, measured, record = choose_by_risk(trainer, risk, state, last,
                                                             best["step"])
    trainer.model.load_state_dict(state)  # the readout below describes the kept model
    trainer._result = make_denoiser(trainer, state, chosen)
    if record is not None:
        trainer._result.info["keep"] = record
    if trainer.config.floor != "none" and full and trainer.history:
        net_error = best["val_error"] if state is not last else trainer.history[-1]["val_error"]
        apply_floor(trainer, net_error, risk, measured)


def sure_risk(trainer):
    """The risk estimate on 16 training crops (those the floor calibrates on), each with the
    noise law of its own frame and, where the noise is correlated between neighbours, its
    measured correlation; None when the noise fit gives nothing to measure with."""
    train = trainer.data.train
    size = max(trainer.patch_size, 128)
    spots = crop_spots(train.shape, size, 16)
    taken = take_crops(train, size, spots)
    crops = torch.from_numpy(taken).to(trainer.device)
    # the noise check of training (mask="auto"), else one of these crops (a given mask)
    report = trainer.noise if trainer.noise is not None else frames_report(taken)
    corr = report.noise_kernel()
    laws = {f: variance_fit(train, f, corr) for f in sorted({f for f, _, _ in spots})}
    risk = Risk(crops, [laws[f] for f, _, _ in spots], trainer.config.seed, corr=corr)
    return risk if risk.usable() else None


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
    from .denoise.denoiser import Denoiser

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


def apply_floor(trainer, net_error: float, risk=None, measured=None) -> None:
    """The classical floor: calibrate ``config.floor`` (a Gaussian filter by default) on the
    training data and compare it with the network on the same crops. The user never gets a
    network that a filter they could have chosen by that measure beats.

    A Gaussian floor is compared and *blended* by the estimated error of the outputs the user
    gets (:class:`~napari_b2u.risk.Risk`: the network's visible prediction, ensembled as
    inference will, and the full filter): w × network + (1 − w) × filter with the w in [0, 1]
    that minimizes it (closed form: quadratic in w); w = 1 / w = 0 are the network / the filter
    alone. The blind-spot errors used before under-rated the network's visible output more than
    the filter and cost 0.1–0.3 dB on real frames (docs/benchmarks.md). Other floors (BM3D)
    keep the hard choice by the blind-spot error. ``risk`` and ``measured`` (the kept network's
    output and divergence on its crops), when :func:`finish` has them, are not computed
    again."""
    from .denoise.denoiser import Denoiser

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
    if floor.name == "gauss" and risk is None:
        risk = sure_risk(trainer)
    crops = risk.y if risk is not None else torch.from_numpy(validation_crops(
        trainer.data.train, max(trainer.patch_size, 128), 16)).to(trainer.device)
    for _ in floor.fit(model, crops):
        pass
    val = trainer.val
    sums = None
    if floor.name == "gauss" and risk is not None:
        if measured is None:  # the kept weights are loaded
            trainer.model.eval()
            try:
                measured = risk.output(network_output(trainer))
            finally:
                trainer.model.train()
        sums = risk.blend_sums(*measured, model)  # None: not finite (e.g. flat frames)
    if sums is not None:
        s0, s1, s2, d_net, d_filt, n = sums

        def blend_risk(w):
            return (s0 + 2 * w * s1 + w * w * s2 + 2 * (w * d_net + (1 - w) * d_filt)) / n

        weight = snap_weight(-(s1 + d_net - d_filt) / s2 if s2 > 0 else 1.0)
        err, net_error, blend_error = blend_risk(0.0), blend_risk(1.0), blend_risk(weight)
        measure = "estimated error of the outputs (SURE)"
    else:
        with torch.no_grad():
            err = float(np.mean([float(floor.validation_error(model, val[i:i + 1]))
                                 for i in range(val.shape[0])]))
        weight = 1.0 if err >= net_error else 0.0
        measure = "blind-spot error"
    info = trainer._result.info
    info["floor"] = {"method": floor.name, "val_error": err, "network_val_error": net_error,
                     "measure": measure, "mask": floor.params.get("mask")}
    if weight >= 1.0:
        return
    norm = trainer.data.normalization
    if weight > 0.0:
        sigma = [float(s) for s in model.sigma]
        info["floor"].update(blend_weight=weight, blend_val_error=blend_error)
        trainer._note(f"blended {weight:.2f} × the network with {1 - weight:.2f} × a Gaussian "
                      f"filter (σ {', '.join(f'{s:.2f}' for s in sigma)} px): its "
                      f"{measure} ({blend_error:.4g}) is lower than the network's "
                      f"({net_error:.4g}) and the filter's ({err:.4g})")
        res = trainer._result
        info["chosen"] = f"{info['chosen']}, blended with a Gaussian filter (weight {weight:.2f})"
        info["messages"] = list(trainer.messages)
        trainer._result = Denoiser(res.method_name, res.method_params, res.model_config,
                                   res.state_dict, norm, info,
                                   blend={"weight": weight, "gauss_sigma": sigma})
        return
    trainer._note(f"the {floor.title} scored a lower {measure} ({err:.4g}) than the "
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


def network_output(trainer):
    """The trained network's prediction as the user gets it, as a function of normalized
    crops: the method's default output, averaged over the dihedral views when inference of the
    training stack would ensemble; in float32 (the risk probe's differences are below half
    precision)."""
    from .denoise.predict import ensemble_views, predict_view

    method, model = trainer.method, trainer.model
    output = method.check_output(None)
    views = ensemble_views(method, tuple(trainer.data.frames.shape), output, trainer.device)

    def predict(y):
        return sum(predict_view(method, model, y, output, v) for v in range(views)) / views
    return predict
