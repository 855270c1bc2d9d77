"""A trained model: the method, its network's settings and weights, and the normalization fitted
on the training stack — what a model file holds, what a bioimage.io package is read back into,
and what an out-of-core worker rebuilds. Denoising and writing outputs are the
:class:`~.denoiser.Denoiser`'s (a TrainedModel that also denoises).
"""

from __future__ import annotations

import copy

import torch

from ..config import PRESETS
from ..context import context_index
from ..data import Layout, Normalization, parse_axes
from ..device import resolve_device
from ..errors import InputError
from ..methods import get_method
from ..modelfile import MODEL_FORMAT, check_checkpoint, jsonable, weights_checksum


class TrainedModel:
    """The method, network config and weights, normalization, the run's info and the classical
    floor's blend; rebuilds its network on a device (:meth:`model`)."""

    def __init__(self, method: str, method_params: dict, model_config: dict, state_dict: dict,
                 normalization: Normalization, info: dict | None = None,
                 blend: dict | None = None, context: dict | None = None):
        self.method_name = method
        self.method_params = dict(method_params)
        self.model_config = dict(model_config)
        self.state_dict = state_dict
        self.normalization = normalization
        self.info = dict(info or {})
        #: {"weight": w, "gauss_sigma": [σ per channel]}: the output is w × the network's +
        #: (1 − w) × a Gaussian filter's (the classical floor's blend, train.floor)
        self.blend = dict(blend) if blend else None
        #: {"frames": k, "axis": "Z"}: stack context — each frame is denoised with its k
        #: neighbours on each side along that axis (None: each frame alone)
        self.context = dict(context) if context else None
        self._method = get_method(method, **self.method_params)
        self._method.set_context(self.context["frames"] if self.context else 0)
        self._model = None
        self._device = None

    # ---- properties ------------------------------------------------------------------------
    @property
    def method(self):
        return self._method

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._method.outputs

    @property
    def n_channels(self) -> int:
        return len(self.normalization.offset)

    def readout(self) -> dict:
        """Quantities the method fitted besides the network, in raw units (Blind2Sound and
        D-BSN: the Poisson–Gaussian noise ``noise_gain``, ``noise_sigma``, ``offset``)."""
        return dict(self.info.get("readout", {}))

    def describe_readout(self) -> str:
        """The readout as one line for people ("" when the method fits nothing extra)."""
        r = self.readout()
        if "noise_gain" in r:
            return (f"fitted noise (raw units): variance = {r['noise_gain']:.3g} × (mean − "
                    f"{r.get('offset', 0.0):.3g}) + {r['noise_sigma']:.3g}²")
        return ", ".join(f"{k} {v}" for k, v in r.items())

    def __repr__(self) -> str:
        steps = self.info.get("steps")
        return (f"{type(self).__name__}(method={self.method_name!r}, channels={self.n_channels}, "
                f"steps={steps}, chosen={self.info.get('chosen')!r})")

    def with_normalization(self, normalization: Normalization) -> TrainedModel:
        """This model scaling its inputs by ``normalization`` instead of its own (same network
        and weights: ``normalize="image"``)."""
        if normalization is self.normalization:
            return self
        other = copy.copy(self)
        other.normalization = normalization
        return other

    def model(self, device="auto") -> torch.nn.Module:
        dev = resolve_device(device)
        if self._model is None or self._device != dev:
            m = self._method.build(self.model_config)
            m.load_state_dict(self.state_dict)
            m.eval().to(dev)
            # the layout the device's preset trains in; on 2 CPU cores it halved inference
            # time with identical outputs (docs/benchmarks.md)
            self._method.set_channels_last(
                m, PRESETS.get(dev.type, PRESETS["cpu"])["channels_last"])
            self._model, self._device = m, dev
        return self._model

    # ---- checks and files -------------------------------------------------------------------
    def check_stack(self, shape, axes: str | None) -> Layout:
        """The layout of a stack of ``shape``/``axes`` if this model can denoise it (the
        channel count matches), else the InputError — without touching data or the network,
        so a GUI can check every layer before denoising any."""
        ax = parse_axes(axes, len(shape))
        layout = Layout(ax, tuple(int(v) for v in shape))
        if layout.n_channels != self.n_channels:
            raise InputError(
                f"this model was trained on {self.n_channels} channel(s) but the stack has "
                f"{layout.n_channels} (axes {ax!r}); check the axes string (C is the channel "
                "axis) or use a model trained on matching data"
            )
        if self.context:
            self.context_rows(layout)  # checks the stack has what the neighbours need
        return layout

    def context_rows(self, layout: Layout):
        """(N, 2k + 1) frame indices of each frame and its neighbours for a stack of
        ``layout`` (:func:`~napari_b2u.context.context_index`), None without context; an
        InputError when the stack cannot give the neighbours this model was trained with."""
        if not self.context:
            return None
        k, axis = int(self.context["frames"]), self.context["axis"]
        if axis not in layout.axes:
            raise InputError(
                f"this model denoises a frame together with its {k} neighbouring frame(s) on "
                f"each side along {axis} (stack context), but the image (axes "
                f"{layout.axes!r}) has no {axis} axis: give the whole stack with its {axis} "
                "axis (check the axes string), or use a model trained with context=0")
        return context_index(layout, axis, k)


    def to_checkpoint(self) -> dict:
        from .. import __version__

        state = {k: v.detach().cpu() for k, v in self.state_dict.items()}
        ckpt = {
            "format": MODEL_FORMAT,
            # the oldest format that holds it, so that older readers load what they can
            "version": 4 if self.context else 3 if self.blend else 2,
            "package_version": __version__,
            "method": self.method_name,
            "method_params": dict(self.method_params),  # copies: the file is not the model
            "model_config": dict(self.model_config),
            "normalization": self.normalization.to_dict(),
            "info": jsonable(self.info),
            "state_dict": state,
            "weights_sha256": weights_checksum(state),
        }
        if self.blend:
            ckpt["blend"] = dict(self.blend)
        if self.context:
            ckpt["context"] = dict(self.context)
        return ckpt

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "the model") -> TrainedModel:
        """A Denoiser from a loaded model file, every field checked first (InputError)."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
            raise InputError(f"{source} is not a napari-b2u model file")
        check_checkpoint(ckpt, source)
        return cls(
            method=ckpt["method"],
            method_params=ckpt["method_params"],
            model_config=ckpt["model_config"],
            state_dict=ckpt["state_dict"],
            normalization=Normalization.from_dict(ckpt["normalization"]),
            info=ckpt.get("info", {}),
            blend=ckpt.get("blend"),
            context=ckpt.get("context"),
        )
