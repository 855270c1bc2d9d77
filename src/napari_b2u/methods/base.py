"""What a method is: a small object the one training engine runs.

A method says how to build its network, its training loss for a batch of clean-less patches, an
honest validation error (one that needs no clean image), what it previews while training and how
it denoises. The engine owns everything else (sampling, optimizer, schedules, precision,
validation bookkeeping, stopping), so a new method never copies the training loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..errors import InputError
from ..models import build_model, pad_to_multiple
from ..params import Param, check_all


class Method(ABC):
    """A denoising method, described for the engine, the CLI and the widgets.

    Everything a user interface shows about a method comes from here: its outputs and previews
    with a line of help each (``texts``), which previews are spreads, which preview to show
    first, the scheduled weight's name and label, and the parameters a user may set (typed
    :class:`~napari_b2u.params.Param`, checked when the method is made).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: inference outputs, the first is the default
    outputs: ClassVar[tuple[str, ...]] = ("visible",)
    #: preview images produced while training, in display order
    preview_names: ClassVar[tuple[str, ...]] = ()
    #: one line describing each output and preview, for menus and tooltips
    texts: ClassVar[dict[str, str]] = {}
    #: the preview shown first (None: the default output if previewed, else the first preview)
    default_preview: ClassVar[str | None] = None
    #: the method's settings; ``user=True`` ones are offered by the CLI and the widget
    parameters: ClassVar[tuple[Param, ...]] = ()
    #: {name: default} of ``parameters`` (derived)
    defaults: ClassVar[dict] = {}
    #: loss terms reported in progress events (their help lines live in ``texts`` too)
    loss_terms: ClassVar[tuple[str, ...]] = ("loss",)
    #: the loss term a plot shows on its main axis: one that does not move with the schedule
    #: (B2U's total loss climbs as λ ramps 2 -> 20 and would look like failure)
    plot_term: ClassVar[str] = "loss"
    #: name of the scheduled weight reported in events as ``schedule`` (None: no schedule)
    schedule_name: ClassVar[str | None] = None
    #: how the scheduled weight is labelled in plots and progress lines
    schedule_label: ClassVar[str | None] = None
    #: previews that are spreads (std maps), converted to raw units by scale only (no offset)
    spread_previews: ClassVar[tuple[str, ...]] = ()
    #: gradient-norm clipping applied by the engine (None: off)
    clip_grad_norm: ClassVar[float | None] = None
    #: False for classical methods: no gradient steps, the engine calls :meth:`fit` instead
    trainable: ClassVar[bool] = True
    #: whether the network can also see the neighbouring frames of a stack (stack context, see
    #: :mod:`napari_b2u.context`): the method's blind spot must be a mask it applies to the
    #: centre frame's pixels, leaving the neighbours (whose noise is independent) unmasked
    takes_context: ClassVar[bool] = False
    #: why a method that cannot take context cannot (said when one is asked for)
    no_context_reason: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.defaults = {p.name: p.default for p in cls.parameters}

    def __init__(self, **params):
        given = check_all(self.param_specs(), params, f"method {self.name!r}")
        self.params = {**self.defaults, **given}
        self.channels_last = False
        #: frames on each side the network sees besides the centre frame (stack context)
        self.context = 0
        #: random numbers of the method's own (masks, sub-samplers); seeded by the engine
        self.generator: torch.Generator | None = None

    # ---- self-description -------------------------------------------------------------------
    @classmethod
    def param_specs(cls) -> dict[str, Param]:
        return {p.name: p for p in cls.parameters}

    @classmethod
    def user_params(cls) -> tuple[Param, ...]:
        """The parameters the CLI and the widget offer."""
        return tuple(p for p in cls.parameters if p.user)

    @classmethod
    def describe(cls, name: str) -> str:
        """The line of help of an output or preview (its name when the method has none)."""
        return cls.texts.get(name, name)

    @classmethod
    def first_preview(cls) -> str | None:
        """The preview shown first."""
        names = cls.preview_names
        if not names:
            return None
        for name in (cls.default_preview, cls.outputs[0]):
            if name in names:
                return name
        return names[0]

    @property
    def spot(self):
        """The blind spot of the ``mask`` parameter (methods that have one): 'auto' not yet
        resolved from the data counts as one pixel."""
        from ..masking import PIXEL, BlindSpot

        mask = self.params.get("mask", "pixel")
        return PIXEL if mask == "auto" else BlindSpot.parse(mask)

    def seed(self, seed: int, device) -> None:
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    def fixed_generator(self, device, seed: int = 1234) -> torch.Generator:
        """A freshly seeded generator, so validation draws the same masks every time."""
        g = torch.Generator(device=device)
        g.manual_seed(seed)
        return g

    # ---- network ------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Frames in the network's input: the centre and ``context`` on each side."""
        return 2 * self.context + 1

    def set_context(self, k: int) -> None:
        """See ``k`` neighbouring frames on each side (InputError where the method cannot)."""
        if k and not self.takes_context:
            raise InputError(f"method {self.name!r} cannot take stack context: "
                             f"{self.no_context_reason} Use context=0, or b2u, b2s or n2v")
        self.context = int(k)

    def split(self, y: torch.Tensor):
        """``(centre, neighbours)`` of a batch whose channels are the centre frame's, then its
        neighbours' (stack context); neighbours None without context. The blind spot masks
        the centre only, and the loss compares with it."""
        if not self.context:
            return y, None
        c = y.shape[1] // self.window
        return y[:, :c], y[:, c:]

    def model_config(self, channels: int, width: int = 48, depth: int = 5) -> dict:
        return {"arch": "unet", "in_channels": channels * self.window, "out_channels": channels,
                "width": width, "depth": depth}

    def build(self, config: dict) -> torch.nn.Module:
        return build_model(config)

    def set_channels_last(self, net: torch.nn.Module, on: bool) -> None:
        """Run ``net`` channels-last or not: its weights and the inputs :meth:`run` gives it
        (the two must agree, or every layer converts)."""
        if on:
            net.to(memory_format=torch.channels_last)
        self.channels_last = bool(on)

    def run(self, net: torch.nn.Module, x: torch.Tensor, context=None) -> torch.Tensor:
        """Apply ``net`` to any (B, C, H, W): pad to the net's multiple, crop back. ``context``:
        the neighbours' channels of the images ``x`` (masked copies of) came from, repeated
        for each of its copies (copy k of image b is row b·n + k, as the maskers make them)."""
        if context is not None:
            reps = x.shape[0] // context.shape[0]
            x = torch.cat([x, context.repeat_interleave(reps, 0) if reps > 1 else context], 1)
        xp, (h, w) = pad_to_multiple(x, getattr(net, "multiple", 1))
        if self.channels_last:
            xp = xp.contiguous(memory_format=torch.channels_last)
        return net(xp)[..., :h, :w]

    def modules_to_compile(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [model]

    def patch_multiple(self, config: dict) -> int:
        """Training patches must be multiples of this (the U-Net's 2**depth by default)."""
        return 2 ** int(config.get("depth", 0)) if config.get("arch") == "unet" else 1

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """Optimizer parameter groups; an optional ``lr_scale`` multiplies the scheduled lr."""
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]

    # ---- training -----------------------------------------------------------------------------
    def schedule(self, p: float) -> float | None:
        """The method's scheduled weight at progress p (e.g. B2U's λ), or None."""
        return None

    @abstractmethod
    def training_loss(self, model, y: torch.Tensor, sched: torch.Tensor | None):
        """Return ``(loss, {term: tensor})`` for a batch ``y`` of normalized patches."""

    @abstractmethod
    def validation_error(self, model, y: torch.Tensor) -> torch.Tensor:
        """Mean self-supervised error on held-out patches; lower is better."""

    def blind_prediction(self, model, y: torch.Tensor) -> torch.Tensor | None:
        """Every pixel predicted without its own value (and its blind spot's): the J-invariant
        prediction whose error :meth:`validation_error` measures, or None when the method has
        none per pixel. The classical floor blends with the network by it."""
        return None

    @abstractmethod
    def predict(self, model, y: torch.Tensor, output: str | None = None) -> torch.Tensor:
        """Denoise normalized (B, C, H, W) with the chosen output."""

    def fit(self, model, crops: torch.Tensor):
        """Classical methods (``trainable = False``): calibrate ``model`` on training crops,
        yielding ``(done, total)`` as it goes."""
        raise TypeError(f"method {self.name!r} is trained, not fitted")

    def previews(self, model, y: torch.Tensor, sched: float | None) -> dict[str, torch.Tensor]:
        return {"visible": self.predict(model, y, "visible")}

    def copies_per_image(self, output: str) -> int:
        """How many network inputs one image costs at inference for ``output`` (memory sizing)."""
        return 1

    def readout(self, model, y: torch.Tensor, offset: float, scale: float) -> dict:
        """Fitted quantities worth showing the user (e.g. noise parameters), in raw units.

        ``y`` is a batch of normalized training patches; ``offset``/``scale`` the first
        channel's normalization (raw = norm * scale + offset).
        """
        return {}

    @classmethod
    def check_output(cls, output: str | None) -> str:
        output = output or cls.outputs[0]
        if output not in cls.outputs:
            raise InputError(
                f"method {cls.name!r} has outputs {', '.join(cls.outputs)}, not {output!r}"
            )
        return output
