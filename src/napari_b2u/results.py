"""What a training run hands back: which weights are kept, the model file's info, and the
classical floor. Functions of a :class:`~napari_b2u.engine.Trainer` that ran (engine.py stays the
loop)."""

from __future__ import annotations

import numpy as np
import torch

from .methods import get_method
from .noise import resolve_auto_mask, variance_fit
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
    training data and compare it with the network on the same crops. The user never gets a
    network that a filter they could have chosen by that measure beats.

    A Gaussian floor is compared and *blended* by the estimated error of the outputs the user
    gets (:func:`risk_sums`: the network's visible prediction, ensembled as inference will, and
    the full filter): w × network + (1 − w) × filter with the w in [0, 1] that minimizes it
    (closed form: quadratic in w); w = 1 / w = 0 are the network / the filter alone. The blind-spot
    errors used before under-rated the network's visible output more than the filter and cost
    0.1–0.3 dB on real frames (docs/benchmarks.md). Other floors (BM3D) keep the hard choice by
    the blind-spot error."""
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
    crops = torch.from_numpy(validation_crops(trainer.data.train, max(trainer.patch_size, 128),
                                              16)).to(trainer.device)
    for _ in floor.fit(model, crops):
        pass
    val = trainer.val
    sums = None
    if floor.name == "gauss":
        trainer.model.eval()
        try:
            sums = risk_sums(network_output(trainer), model, crops,
                             variance_fit(trainer.data.train), trainer.config.seed)
        finally:
            trainer.model.train()
        if not np.all(np.isfinite(sums)):  # no usable noise fit (e.g. flat frames)
            sums = None
    if sums is not None:
        s0, s1, s2, d_net, d_filt, n = sums

        def risk(w):
            return (s0 + 2 * w * s1 + w * w * s2 + 2 * (w * d_net + (1 - w) * d_filt)) / n

        weight = snap_weight(-(s1 + d_net - d_filt) / s2 if s2 > 0 else 1.0)
        err, net_error, blend_error = risk(0.0), risk(1.0), risk(weight)
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


#: the divergence probe's step, in units of the noise's standard deviation (0.01 and 0.05 gave
#: the same blend weights on real frames)
PROBE_EPS = 0.01


@torch.no_grad()
def risk_sums(predict, filt, crops: torch.Tensor, fits, seed: int = 0):
    """Stein's unbiased risk estimate (SURE) of w × ``predict`` + (1 − w) × ``filt`` (a
    GaussModel: the full filter) on ``crops`` (B, C, H, W). For noise of variance
    v = a·signal + b (per channel, ``fits``) independent between pixels,
    E‖out − x‖² + Σv = E‖out − y‖² + 2 Σ v_i ∂out_i/∂y_i: the divergence term is what an
    output that sees the noisy pixel gains by passing its noise. The filter's is exact (its
    centre tap × Σv); the network's is a Monte-Carlo probe with noise drawn at v. With
    r = filter − y and e = network − filter, returns (Σr², Σr·e, Σe², D_network, D_filter,
    count); the blend's risk is (Σr² + 2wΣre + w²Σe² + 2(w D_net + (1 − w) D_filt)) / count,
    on the scale of mean squared error + mean noise variance."""
    from .methods.classical import gaussian_kernel1d

    dev = crops.device
    fits = torch.tensor(fits, dtype=torch.float32, device=dev)
    a, b = fits[:, 0].view(1, -1, 1, 1), fits[:, 1].view(1, -1, 1, 1)
    centre = torch.tensor([float(gaussian_kernel1d(float(s)).max()) ** 2 for s in filt.sigma],
                          device=dev).view(1, -1, 1, 1)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    sums = np.zeros(5)
    for i in range(0, crops.shape[0], 4):
        y = crops[i:i + 4].float()
        f = filt(y)
        var = (a * f + b).clamp(min=0.0)  # the filter's output as the signal
        g = predict(y)
        probe = var.sqrt() * torch.randn(y.shape, generator=gen, device=dev, dtype=y.dtype)
        d_net = float((probe * (predict(y + PROBE_EPS * probe) - g)).sum()) / PROBE_EPS
        r, e = f - y, g - f
        sums += [float((r * r).sum()), float((r * e).sum()), float((e * e).sum()), d_net,
                 float((centre * var).sum())]
    return (*sums.tolist(), crops.numel())


def network_output(trainer):
    """The trained network's prediction as the user gets it, as a function of normalized
    crops: the method's default output, averaged over the dihedral views when inference of the
    training stack would ensemble; in float32 (the risk probe's differences are below half
    precision)."""
    from .inference import predict_view

    method, model = trainer.method, trainer.model
    output = method.check_output(None)
    views = trainer._result.plan(tuple(trainer.data.frames.shape), output, trainer.device)[2]

    def predict(y):
        return sum(predict_view(method, model, y, output, v) for v in range(views)) / views
    return predict
