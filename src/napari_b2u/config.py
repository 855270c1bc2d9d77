"""What decides a training run: one validated, versioned :class:`TrainConfig`.

The API, the CLI and the napari widget all build it with :func:`build_config` from flat options
(``steps=300, cells=4, ...``): options that name a parameter of the chosen method go to the
method, the rest are checked here against :data:`FIELDS` (type and range) and against each
other. Model and checkpoint files store ``TrainConfig.to_dict()`` with a schema version;
:meth:`TrainConfig.from_dict` migrates older versions and refuses newer ones with a message.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .context import MAX_CONTEXT
from .errors import InputError
from .params import Param

#: schema version of TrainConfig.to_dict() (1: the unversioned dicts of napari-b2u 0.1)
CONFIG_VERSION = 4

#: every TrainConfig field a user may set, with its type and range. ``optional`` fields are
#: None until the device preset fills them.
FIELDS: dict[str, Param] = {p.name: p for p in (
    Param("method", str, "b2u", help="the denoising method (see napari_b2u.methods)"),
    Param("steps", int, None, 1, 100_000_000, optional=True,
          help="training steps (one batch of random patches each)"),
    Param("max_time", float, None, 0.0, 1e7, optional=True, low_open=True, label="time limit",
          help="time budget in seconds; the schedules then follow the fraction of time used"),
    Param("epochs", float, None, 0.0, 1e6, optional=True, low_open=True,
          help="training length in passes over the training pixels, instead of steps"),
    Param("patch_size", int, None, 8, 4096, optional=True, label="patch",
          help="side of the square training patches (a multiple of the network's 2^depth; "
               "reduced automatically to fit small images)"),
    Param("batch_size", int, None, 1, 1024, optional=True, label="batch",
          help="patches per step"),
    Param("lr", float, None, 0.0, 1.0, optional=True, low_open=True, label="learning rate",
          help="Adam learning rate, decayed over training"),
    Param("weight_decay", float, 1e-8, 0.0, 1.0, user=False, help="Adam weight decay"),
    Param("width", int, None, 4, 512, optional=True, label="network width",
          help="channels of the network's first level"),
    Param("depth", int, None, 1, 7, optional=True, label="network depth",
          help="U-Net levels (the patch must be a multiple of 2^depth)"),
    Param("context", str, "auto", choices=("auto",) + tuple(map(str, range(MAX_CONTEXT + 1))),
          label="stack context",
          help="neighbouring frames on each side (along the stack's Z or T axis) the network "
               "sees besides the frame it denoises: 'auto' measures whether neighbours show "
               "the same structure (z-stacks, static time-lapses) and uses them only then; 0: "
               "each frame alone"),
    Param("context_axis", str, "auto", choices=("auto", "T", "Z", "S", "I", "Q"),
          label="context axis",
          help="the stack axis neighbours are taken along: 'auto': Z when the stack has one, "
               "else T"),
    Param("val_fraction", float, 0.1, 0.0, 0.9, label="validation fraction",
          help="fraction of frames (or, for < 5 frames, of each frame's area) held out to "
               "choose the best model; 0 keeps the last model"),
    Param("val_every", int, None, 1, 1_000_000, optional=True, user=False,
          help="steps between validations"),
    Param("val_patches", int, None, 1, 4096, optional=True, user=False,
          help="held-out crops per validation"),
    Param("preview_every", int, None, 0, 1_000_000, optional=True, label="preview every",
          help="steps between live previews (0: off)"),
    Param("preview_seconds", float, 10.0, 0.0, 1e6, user=False,
          help="also preview when this many seconds passed since the last preview (0: off)"),
    Param("preview_size", int, 256, 16, 4096, user=False, help="side of the preview crop"),
    Param("augment", bool, True, user=False, help="random flips and rotations of the patches"),
    Param("warm_start", str, None, optional=True, label="warm start",
          help="start from trained weights instead of random ones: 'pretrained' (the generic "
               "fluorescence model shipped with napari-b2u, where one exists for the network) "
               "or the path of an earlier .b2u model of the same network (e.g. from the same "
               "microscope); 'none' or False: from scratch; None: the device preset"),
    Param("warm_lr", float, None, 0.0, 1.0, optional=True, low_open=True, user=False,
          label="fine-tuning learning rate",
          help="the learning rate when training starts from warm-start weights (None: the "
               "preset's; a learning rate given explicitly wins)"),
    Param("floor", str, "gauss", choices=("gauss", "bm3d", "none"), label="classical floor",
          help="after training, compare the network with this classical denoiser by the "
               "estimated error of their outputs and return the better one or, for 'gauss', "
               "the best blend of the two ('none': always the network)"),
    Param("keep", str, "auto", choices=("auto", "validation", "last"), user=False,
          label="weights kept",
          help="which weights training returns: 'validation': the lowest blind-spot validation "
               "error; 'last': the last; 'auto': of those two, the one whose output has the "
               "lower estimated error (SURE) on training crops"),
    Param("ema", float, None, 0.0, 0.99999, optional=True, user=False, label="weight average",
          help="decay of an exponential moving average of the weights, which is validated and "
               "kept instead of the last weights (0 or None: off)"),
    Param("seed", int, 0, 0, 2**63 - 1, help="random seed: same seed, data and device, same "
                                              "model"),
    Param("amp", bool, None, optional=True, label="mixed precision",
          help="bf16/fp16 mixed precision for training (CUDA, and CPUs with native bf16: "
               "AVX512-BF16 or AMX; elsewhere fp32)"),
    Param("channels_last", bool, None, optional=True, user=False,
          help="channels-last memory layout (CUDA and CPU)"),
    Param("compile", bool, None, optional=True, label="torch.compile",
          help="torch.compile the network for training (CUDA; off by default: compiling "
               "took 14-22 s of a 20 s budget and gained 3 % steps/s at the default batch on "
               "an H200)"),
    Param("normalization", str, "auto", choices=("auto", "percentile", "range"), user=False,
          help="auto: 8-bit / 255, else the 0.1/99.9 percentiles per channel to 0/1"),
    Param("log_every", int, None, 1, 1_000_000, optional=True, user=False,
          help="steps between reads of the loss (each read synchronizes a GPU)"),
    Param("max_nan_retries", int, 3, 0, 100, user=False,
          help="rollbacks after a NaN/Inf loss before training stops"),
    Param("autosave", str, None, optional=True,
          help="a checkpoint file rewritten during training (resumable)"),
    Param("autosave_every", float, 300.0, 0.0, 1e10, user=False,
          help="seconds between autosaves (0: after every step)"),
)}

#: Presets by device type. GPU values follow the reference recipe except where the benchmark
#: (docs/benchmarks.md) measured better: s = 2 and lr 4e-4; no torch.compile (on an H200 it
#: took 14-22 s of a 20 s budget for 3 % more steps/s). CPU trades width for steps.
PRESETS = {
    "cuda": dict(steps=3000, patch_size=128, batch_size=4, lr=4e-4, width=48, depth=5,
                 val_every=100, val_patches=16, preview_every=50, amp=True, channels_last=True,
                 compile=False, log_every=10),
    "mps": dict(steps=2000, patch_size=128, batch_size=4, lr=4e-4, width=48, depth=5,
                val_every=100, val_patches=8, preview_every=50, amp=False, channels_last=False,
                compile=False, log_every=10),
    "cpu": dict(steps=300, patch_size=64, batch_size=4, lr=1e-3, width=24, depth=4,
                val_every=25, val_patches=4, preview_every=25, amp=True, channels_last=True,
                compile=False, log_every=1, warm_start="pretrained", warm_lr=3e-4),
}


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` fields are filled from the device preset
    (:func:`resolve_config`). Build it with :func:`build_config`, which checks every value."""

    method: str = "b2u"
    steps: int | None = None
    max_time: float | None = None  # seconds; schedules then follow the fraction of time used
    # instead of steps: passes over the training pixels (steps = epochs × training pixels /
    # (batch × patch²), computed once the data and the usable patch size are known)
    epochs: float | None = None
    patch_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-8
    width: int | None = None
    depth: int | None = None
    method_params: dict = field(default_factory=dict)
    context: str = "auto"  # neighbouring frames on each side ("auto": measured)
    context_axis: str = "auto"
    val_fraction: float = 0.1
    val_every: int | None = None
    val_patches: int | None = None
    preview_every: int | None = None
    preview_seconds: float = 10.0
    preview_size: int = 256
    augment: bool = True
    warm_start: str | None = None
    warm_lr: float | None = None
    floor: str = "gauss"
    keep: str = "auto"
    ema: float | None = None
    seed: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    normalization: object = "auto"  # a mode, or a Normalization to reuse (resume)
    log_every: int | None = None
    max_nan_retries: int = 3
    autosave: str | None = None  # path of a checkpoint rewritten during training (resumable)
    autosave_every: float = 300.0  # seconds between autosaves

    def validate(self) -> TrainConfig:
        """Check every value and the combinations; return self (InputError otherwise)."""
        for name, spec in FIELDS.items():
            value = getattr(self, name)
            if name == "normalization" and not isinstance(value, str):
                continue  # a fitted Normalization, reused on resume
            if name == "autosave" and value is not None:
                value = _path_or_word(value)
            if name == "warm_start" and value is not None:  # "none": off (None: the preset)
                value = _path_or_word(value) or "none"
            if name == "context" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # the API takes context=2; the setting is a choice
            if name == "floor" and value is not None:
                value = "none" if _path_or_word(value) is None else value
            if value is None and not spec.optional:
                value = spec.default  # None means "the default" everywhere
            setattr(self, name, spec.check(value, "training setting"))
        if self.steps is not None and self.epochs is not None:
            raise InputError("give the training length as steps or as epochs, not both")
        from .methods import get_method

        if not isinstance(self.method_params, dict):
            raise InputError("method_params must be a dict of method parameters")
        self.method_params = dict(get_method(self.method, **self.method_params).params)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        if not isinstance(self.normalization, str):
            d["normalization"] = "auto"  # the fitted map is stored in the model itself
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "the file") -> TrainConfig:
        """A config from a model or checkpoint file, migrated from older schema versions."""
        if not isinstance(d, dict):
            raise InputError(f"{source} holds no readable training settings")
        d = dict(d)
        version = d.pop("version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise InputError(f"{source} has a training-settings version {version!r} that is not "
                             "a whole number: the file is damaged")
        if version > CONFIG_VERSION:
            raise InputError(f"{source} was written by a newer napari-b2u (settings version "
                             f"{version}, this version reads up to {CONFIG_VERSION}); upgrade "
                             "napari-b2u")
        for v in range(version, CONFIG_VERSION):
            d = MIGRATIONS[v](d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"{source} has unknown training settings {', '.join(unknown)}: "
                             "the file is damaged or from another program")
        return cls(**d).validate()


def _path_or_word(value):
    """warm_start=True/False and paths as given by the API: the strings the config stores."""
    if value is True:
        return "pretrained"
    if value is False or (isinstance(value, str) and value.lower() in ("none", "off", "")):
        return None
    return str(value)


def _from_v1(d: dict) -> dict:
    """0.1 files: no version, no preview_seconds (previews only every N steps)."""
    d = dict(d)
    d.setdefault("preview_seconds", 0.0)
    return d


def _from_v2(d: dict) -> dict:
    """Before 0.2: no ``keep``; such runs kept the best by validation, a resumed one now
    compares it with the last weights (the default)."""
    return dict(d)


def _from_v3(d: dict) -> dict:
    """Before stack context: every frame alone (a resumed run must not start measuring)."""
    return {**d, "context": d.get("context", "0"), "context_axis": d.get("context_axis",
                                                                         "auto")}


MIGRATIONS = {1: _from_v1, 2: _from_v2, 3: _from_v3}


def build_config(method: str = "b2u", method_params: dict | None = None,
                 **options) -> TrainConfig:
    """The one mapping from user options to a validated :class:`TrainConfig`.

    ``options`` are TrainConfig fields or parameters of ``method`` (e.g. B2U's ``cells``); a
    None value means "the default" (the device preset or the method's default). Anything else
    is refused with the names that are known.
    """
    from .methods import get_method

    try:
        specs = get_method(method).param_specs()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    params = dict(method_params or {})
    conf = {}
    for key, value in options.items():
        if key in FIELDS:
            conf[key] = value
        elif key in specs:
            if value is not None:
                params[key] = value
        elif value is not None:
            known = sorted(set(FIELDS) | set(specs))
            raise InputError(f"unknown option {key!r} for method {method!r}; known: "
                             f"{', '.join(known)}")
    return TrainConfig(method=method, method_params=params, **conf).validate()


def resolve_config(config: TrainConfig, device) -> TrainConfig:
    """``config`` with every None field taken from the device's preset, checked again."""
    from .device import amp_dtype

    preset = PRESETS.get(device.type, PRESETS["cpu"])
    filled = {k: (v if getattr(config, k) is None else getattr(config, k)) for k, v in
              preset.items()}
    cfg = replace(config, **filled, method_params=dict(config.method_params))
    if config.lr is not None and config.warm_lr is None:
        cfg.warm_lr = None  # an explicit learning rate is used for fine-tuning too
    if config.epochs is not None or (config.max_time is not None and config.steps is None):
        cfg.steps = None  # from the epochs once the data is known, or a time budget only
    cfg.validate()
    if cfg.amp and amp_dtype(device) is None:
        cfg.amp = False  # no fast half precision here (MPS; CPUs that emulate bf16)
    return cfg


def steps_for_epochs(epochs: float, train_shape, batch_size: int, patch_size: int) -> int:
    """Steps for ``epochs`` passes over the training pixels: an epoch samples, in random
    crops, as many pixels as the training frames hold."""
    n, _, h, w = train_shape
    steps = math.ceil(epochs * n * h * w / (batch_size * patch_size**2))
    limit = int(FIELDS["steps"].high)
    if steps > limit:
        raise InputError(f"{epochs:g} epochs are {steps:,} steps, more than the {limit:,} "
                         "allowed; ask for fewer epochs")
    return max(1, steps)
