"""Starting weights for training ("warm start").

``warm_start="pretrained"`` starts from a generic fluorescence model shipped in the package's
``pretrained/`` folder (trained by ``benchmarks/pretrain.py`` on the project's own synthetic
generator; see pretrained/MODELS.md for the data, the command and the time it took);
``warm_start="path/to/earlier.b2u"`` starts from a model the user trained before, e.g. on
another stack of the same microscope. Either way the file is
checked like any model file, and its network must be the one being trained.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch

from ..denoise.model import TrainedModel
from ..errors import InputError
from ..modelfile import read_checkpoint

#: packaged models, by the network they hold: (arch, channels, width, depth) -> file name
PACKAGED = {
    ("unet", 1, 24, 4): "generic_unet_w24_d4.b2u",
    ("unet", 1, 48, 5): "generic_unet_w48_d5.b2u",
}


def _key(config: dict):
    return (config.get("arch"), config.get("in_channels"), config.get("width"),
            config.get("depth"))


def packaged_path(model_config: dict) -> Path | None:
    """The shipped model for this network, if there is one."""
    name = PACKAGED.get(_key(model_config))
    if name is None or model_config.get("out_channels") != model_config.get("in_channels"):
        return None
    path = Path(str(files("napari_b2u") / "pretrained" / name))
    return path if path.is_file() else None


def single_frame(model_config: dict) -> dict:
    """The network of ``model_config`` without stack context (the neighbours' input channels)."""
    cfg = dict(model_config)
    if cfg.get("window", 1) != 1:
        cfg.pop("window")
    if cfg.get("arch") == "unet" and "out_channels" in cfg:
        cfg["in_channels"] = cfg["out_channels"]
    return cfg


def warm_start_weights(spec: str, model_config: dict):
    """``(state_dict, description)`` to start training from, or ``(None, why not)`` when
    ``spec`` is 'pretrained' and nothing fits this network (training then starts from
    scratch). A path that does not fit is an InputError. A network with stack context starts
    from the same network without it (:func:`widen`)."""
    if spec == "pretrained":
        path = packaged_path(single_frame(model_config))
        if path is None:
            w, d = model_config.get("width"), model_config.get("depth")
            c = model_config.get("out_channels", model_config.get("channels"))
            return None, (f"no pretrained weights for this network ({model_config.get('arch')}"
                          f", {c} channel(s), width {w}, depth {d}); training from scratch")
        model = TrainedModel.from_checkpoint(read_checkpoint(path), str(path))
        return model.state_dict, f"pretrained: {model.info.get('description', path.name)}"
    model = TrainedModel.from_checkpoint(read_checkpoint(spec), str(spec))
    mine = dict(model.model_config)
    if mine != dict(model_config) and mine != single_frame(model_config):
        raise InputError(
            f"warm start: {spec} holds another network ({_describe(mine)}) than this training "
            f"({_describe(model_config)}); train with the same width, depth and channels, or "
            "start from scratch")
    return model.state_dict, f"from {Path(spec).name} ({model.info.get('steps', '?')} steps)"


def widen(state: dict, target: dict) -> dict:
    """A single-frame network's weights for the same network with stack context: the layers
    that read the input (the first convolution, and the last level's, which concatenates the
    input) get zero weights for the neighbours' channels, which come after the centre's — so
    the widened network starts as exactly the single-frame one and learns to use them."""
    out = {}
    for key, t in state.items():
        want = target[key].shape
        if t.shape != want and t.dim() == 4 and t.shape[0] == want[0] and \
                t.shape[1] < want[1] and t.shape[2:] == want[2:]:
            wide = torch.zeros(want, dtype=t.dtype)
            wide[:, :t.shape[1]] = t
            t = wide
        out[key] = t
    return out


def warm_start(model, spec: str | None, model_config: dict, note) -> str | None:
    """Load the starting weights ``spec`` names into ``model``; returns where they came from
    (None: from scratch — ``note`` says why when 'pretrained' has nothing for this network)."""
    if not spec or spec == "none":
        return None
    state, said = warm_start_weights(spec, model_config)
    if state is None:
        note(said)
        return None
    model.load_state_dict(widen(state, model.state_dict()))
    return said


def _describe(cfg: dict) -> str:
    return (f"{cfg.get('arch')}, {cfg.get('in_channels')} channel(s), width {cfg.get('width')}, "
            f"depth {cfg.get('depth')}")
