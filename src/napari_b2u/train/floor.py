"""The classical floor: after training, a filter the user could have chosen (a self-calibrated
Gaussian by default) is compared with the network on the same crops, and the user never gets a
network that the filter beats by that measure.

A Gaussian floor is compared and *blended* by the estimated error of the outputs the user gets
(:class:`~.sure.Risk`: the network's visible prediction, ensembled as inference will, and the
full filter): w × network + (1 − w) × filter with the w in [0, 1] that minimizes it (closed
form: quadratic in w); w = 1 / w = 0 are the network / the filter alone. The blind-spot errors
used before under-rated the network's visible output more than the filter and cost 0.1–0.3 dB
on real frames (docs/benchmarks.md). Other floors (BM3D) keep the hard choice by the blind-spot
error.
"""

from __future__ import annotations

import numpy as np
import torch

from ..denoise.denoiser import Denoiser
from ..methods import get_method
from ..noise import resolve_auto_mask
from .crops import validation_crops

#: blend weights this close to 0 or 1 give the filter or the network alone: a 2 % share is not
#: worth a second filter at every inference and a model file older readers cannot load
BLEND_SNAP = 0.02


def snap_weight(w: float) -> float:
    """The blend weight clipped to [0, 1], ends within ``BLEND_SNAP`` taken."""
    w = min(1.0, max(0.0, float(w)))
    return 0.0 if w < BLEND_SNAP else 1.0 if w > 1.0 - BLEND_SNAP else w


def apply_floor(trainer, net_error: float, floor, model, risk=None, measured=None) -> None:
    """Compare ``floor`` (its ``model`` calibrated: :func:`calibrate`) with the kept network
    and replace ``trainer.state.result`` by a blend or the filter when either is better.
    ``risk`` and ``measured`` (the kept network's output and divergence on the risk's crops)
    come from the end phase (:mod:`.endphase`); without them a Gaussian floor falls back to
    the blind-spot error."""
    verdict = compare(trainer, floor, model, net_error, risk, measured)
    weight, err, net_error, blend_error, measure = verdict
    info = trainer.state.result.info
    info["floor"] = {"method": floor.name, "val_error": err, "network_val_error": net_error,
                     "measure": measure, "mask": floor.params.get("mask")}
    if weight >= 1.0:
        return
    if weight > 0.0:
        _blend(trainer, model, weight, err, net_error, blend_error, measure)
    else:
        _filter_instead(trainer, floor, model, err, net_error, measure)


def floor_method(trainer):
    """The floor's method, with the network's blind spot: the filter's error must be on the
    network's scale (a one-pixel blind spot rewards a filter that passes correlated noise
    through)."""
    floor = get_method(trainer.config.floor)
    if "mask" in floor.params:
        mask = trainer.method.params.get("mask", "auto")
        if mask == "auto":
            resolve_auto_mask(floor, trainer.data.train)
        else:
            floor.params["mask"] = mask
    return floor


def calibrate(trainer, floor, risk=None):
    """The floor's model fitted on the crops the risk measures (or 16 training crops); None
    when a stop comes first (it is checked between candidates)."""
    model = floor.build(floor.model_config(trainer.data.layout.n_channels)).to(trainer.device)
    crops = risk.y if risk is not None else torch.from_numpy(validation_crops(
        trainer.data.train, max(trainer.patch_size, 128), 16)).to(trainer.device)
    for _ in floor.fit(model, crops):
        if trainer.stopping:
            return None
    return model


def compare(trainer, floor, model, net_error: float, risk, measured):
    """``(weight, filter error, network error, blend error, measure)``: by the estimated
    error of the outputs (SURE) for a Gaussian floor when it is finite, else the hard choice by
    the blind-spot error (weight 1: the network, 0: the filter)."""
    sums = None
    if floor.name == "gauss" and risk is not None and measured is not None:
        sums = risk.blend_sums(*measured, model)  # None: not finite (e.g. flat frames)
    if sums is not None:
        s0, s1, s2, d_net, d_filt, n = sums

        def blend_risk(w):
            return (s0 + 2 * w * s1 + w * w * s2 + 2 * (w * d_net + (1 - w) * d_filt)) / n

        weight = snap_weight(-(s1 + d_net - d_filt) / s2 if s2 > 0 else 1.0)
        return (weight, blend_risk(0.0), blend_risk(1.0), blend_risk(weight),
                "estimated error of the outputs (SURE)")
    val = trainer.val
    with torch.no_grad():
        err = float(np.mean([float(floor.validation_error(model, val[i:i + 1]))
                             for i in range(val.shape[0])]))
    return (1.0 if err >= net_error else 0.0), err, net_error, None, "blind-spot error"


def _blend(trainer, model, weight, err, net_error, blend_error, measure) -> None:
    """The result becomes w × the network + (1 − w) × the Gaussian filter."""
    res, info = trainer.state.result, trainer.state.result.info
    sigma = [float(s) for s in model.sigma]
    info["floor"].update(blend_weight=weight, blend_val_error=blend_error)
    trainer.note(f"blended {weight:.2f} × the network with {1 - weight:.2f} × a Gaussian "
                 f"filter (σ {', '.join(f'{s:.2f}' for s in sigma)} px): its {measure} "
                 f"({blend_error:.4g}) is lower than the network's ({net_error:.4g}) and the "
                 f"filter's ({err:.4g})")
    info["chosen"] = f"{info['chosen']}, blended with a Gaussian filter (weight {weight:.2f})"
    info["messages"] = list(trainer.messages)
    trainer.state.result = Denoiser(res.method_name, res.method_params, res.model_config,
                                    res.state_dict, res.normalization, info,
                                    blend={"weight": weight, "gauss_sigma": sigma},
                                    context=res.context)


def _filter_instead(trainer, floor, model, err, net_error, measure) -> None:
    """The result becomes the filter: it scored better than the network."""
    norm = trainer.data.normalization
    trainer.note(f"the {floor.title} scored a lower {measure} ({err:.4g}) than the trained "
                 f"network ({net_error:.4g}): returning the filter. Train longer, or check the "
                 "noise (correlated noise defeats blind-spot training)")
    info = {**trainer.state.result.info, "chosen": f"classical floor: {floor.title}",
            "trained_method": trainer.method.name,
            "readout": floor.readout(model, None, norm.offset[0], norm.scale[0]),
            "messages": list(trainer.messages)}
    trainer.state.result = Denoiser(
        floor.name, dict(floor.params), floor.model_config(trainer.data.layout.n_channels),
        {k: v.float().cpu() for k, v in model.state_dict().items()}, norm, info)
