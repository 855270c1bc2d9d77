"""The panels' words for the core's messages. The API and the CLI speak in code names (the
settings' names, ``floor='none'``, ``val_fraction=0``, the kept weights as ``info["chosen"]``,
a readout ``gauss_sigma [0.411]``); the panels show labels, so this layer rewrites what the
core says into the labels and plain sentences of the panels. Qt-free.

What it knows: a setting ``name=value`` or a ``snake_case`` setting name becomes the form's
label (:data:`~napari_b2u.config.FIELDS` and the methods' parameters), ``method 'x'`` the
method's title, and a few messages of the core are reworded (the stack-context gains, the
clipping note, which gets what to do). Anything else passes through unchanged, so new core
messages show as they are until they get words here.
"""

from __future__ import annotations

import functools
import re

from ..config import FIELDS
from ..methods import get_method, method_names


def _label(param) -> str:
    title = param.title
    return title[:1].upper() + title[1:]


@functools.lru_cache(maxsize=8)
def _known(names: tuple) -> tuple[dict, dict]:
    """({setting name: its label in the panels}, {method name: its title})."""
    labels = {p.name: _label(p) for p in FIELDS.values()}
    titles = {}
    for name in names:
        cls = type(get_method(name))
        titles[name] = cls.title
        labels.update({p.name: _label(p) for p in cls.user_params()})
    return labels, titles


def known() -> tuple[dict, dict]:
    return _known(tuple(method_names()))


_CONTEXT_GAINS = re.compile(r"predictor error change ((?:k=\d+ [+-][\d.]+ %(?:, )?)+)")
_CLIPPED = re.compile(r"(\d+ % of pixels are clipped at the (lower|upper) bound[^:]*): the "
                      r"noise model does not hold there")
_DO_ABOUT_CLIPPING = {
    "lower": "a camera offset above 0, and no background subtracted before denoising",
    "upper": "less exposure or gain, so that nothing saturates"}


def _gains(m: re.Match) -> str:
    """'k=1 +18.6 %, k=2 +27.5 %' (the error's reduction per number of neighbours)."""
    said = []
    for k, g in re.findall(r"k=(\d+) ([+-][\d.]+) %", m.group(1)):
        v = float(g)
        said.append(f"{abs(v):.1f} % {'lower' if v >= 0 else 'higher'} with {k} frame(s) on "
                    "each side")
    return "the predictor's error is " + ", ".join(said)


def _clipped(m: re.Match) -> str:
    return (f"{m.group(1)}: the noise model does not hold there. Nothing to change for this "
            "training (clipped pixels are denoised like the others); for better results, "
            f"acquire without clipping: {_DO_ABOUT_CLIPPING[m.group(2)]}")


def panel_words(text: str) -> str:
    """``text`` (a message of the core) in the panels' words; unknown parts unchanged."""
    labels, titles = known()
    text = _CONTEXT_GAINS.sub(_gains, text)
    text = _CLIPPED.sub(_clipped, text)
    text = re.sub(r"method '(\w+)'", lambda m: titles.get(m.group(1), m.group(0)), text)
    text = re.sub(r"\bunet\b", "U-Net", text)

    def setting(m: re.Match) -> str:
        value = m.group(2).strip("'\"")
        return f"{labels[m.group(1)]}: {value}"

    names = "|".join(sorted(map(re.escape, labels), key=len, reverse=True))
    text = re.sub(rf"\b({names})=('[^']*'|\"[^\"]*\"|[^\s,;)]+)", setting, text)
    snake = "|".join(re.escape(n) for n in sorted(labels, key=len, reverse=True) if "_" in n)
    return re.sub(rf"(?<![\w.]){'(' + snake + ')'}(?![\w=])",
                  lambda m: labels[m.group(1)], text)


# ---- the end of training: which weights were kept, and what the method fitted ---------------
_STEP = r"\(step (\d+)\)"
#: (the core's ``info["chosen"]``, the panels' words, the short form for the model's name)
_KEPT = (
    (rf"last, also best by validation {_STEP}",
     "kept the network's last weights (step {0}), also the best by validation", "last weights"),
    (rf"last: a lower estimated error \(SURE\) than the best by validation {_STEP}",
     "kept the network's last weights: their output's estimated error is lower than with the "
     "weights best by validation (step {0})", "last weights"),
    (rf"best by validation {_STEP}, confirmed by a lower estimated error \(SURE\) than the "
     r"last", "kept the network's weights of step {0}, the best by validation (their output's "
     "estimated error is lower than with the last weights too)", "weights of step {0}"),
    (rf"best by validation {_STEP}", "kept the network's weights of step {0}, the best by "
     "validation", "weights of step {0}"),
    (r"last", "kept the network's last weights", "last weights"),
)
_BLEND = re.compile(r"(.*), blended with a Gaussian filter \(weight ([\d.]+)\)")


def _sigma(values) -> str:
    return ", ".join(f"{float(s):.2g}" for s in values)


def kept_words(model) -> tuple[str, str] | None:
    """(what training kept, in a clause; the same in a few words) for the panels, from the
    model's info and blend; None when the core's words are not known here."""
    info, method = model.info, model.method
    title = method.title
    if not method.trainable:
        trained = info.get("trained_method")
        if trained:
            other = known()[1].get(trained, trained)
            return (f"kept the {title} instead of the {other} network: the filter's output "
                    "scored better. Train longer, or check the noise (correlated noise defeats "
                    "blind-spot training)", title)
        return f"calibrated the {title}", title
    chosen = str(info.get("chosen", ""))
    blend = _BLEND.fullmatch(chosen)
    core = blend.group(1) if blend else chosen
    for pattern, words, short in _KEPT:
        m = re.fullmatch(pattern, core)
        if m:
            long, short = words.format(*m.groups()), short.format(*m.groups())
            break
    else:
        return None
    if blend and model.blend:
        w = float(model.blend["weight"])
        sigma = _sigma(model.blend["gauss_sigma"])
        long += (f", blended with a Gaussian filter (σ {sigma} px): {100 * w:.0f} % network, "
                 f"{100 * (1 - w):.0f} % filter")
        short += f", blended {100 * w:.0f} % with a Gaussian filter"
    return long, short


def readout_words(model) -> str:
    """What the method fitted besides a network, as a sentence for the panels ("" if nothing):
    the Gaussian filter's σ, the fitted noise law; other quantities by their names."""
    r = model.readout()
    if not r:
        return ""
    if "gauss_sigma" in r:
        return f"Gaussian filter σ {_sigma(r['gauss_sigma'])} px."
    if "noise_gain" in r:
        return (f"Fitted noise (raw units): its variance is {r['noise_gain']:.3g} × (mean − "
                f"{r.get('offset', 0.0):.3g}) + {r['noise_sigma']:.3g}².")
    parts = []
    for k, v in r.items():
        v = ", ".join(f"{x:.3g}" for x in v) if isinstance(v, (list, tuple)) else (
            f"{v:.3g}" if isinstance(v, float) else str(v))
        parts.append(f"{k.replace('_', ' ')} {v}")
    return "; ".join(parts).capitalize() + "."
