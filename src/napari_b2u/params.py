"""Typed, self-describing settings: one :class:`Param` per value a user may set.

Methods declare their parameters with it and :mod:`napari_b2u.config` its training settings, so
that checking a value (type, range, choices), the CLI's options and the widget's form all come
from one description. A leaf module: numpy only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Param:
    """One setting: its type, default, allowed values and a line of help.

    ``kind`` is ``int``, ``float``, ``bool`` or ``str``; ``low``/``high`` bound numbers
    (inclusive; ``low_open`` makes the lower bound exclusive, e.g. a learning rate > 0);
    ``choices`` lists the allowed strings; ``optional`` admits None (meaning "the default
    chosen elsewhere", e.g. the device preset). ``user``: offered in the widget and the CLI.
    """

    name: str
    kind: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""
    label: str = ""
    optional: bool = False
    low_open: bool = False
    user: bool = True
    pattern: str | None = None  # a regular expression a text value must match

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")

    def allowed(self) -> str:
        """The allowed values in words, for messages and tooltips."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {int: "an integer", float: "a number", bool: "true or false",
                str: "a text"}[self.kind]
        def num(v):
            return f"{int(v):,}" if self.kind is int else f"{v:g}"

        lo = None if self.low is None else f"{'>' if self.low_open else '>='} {num(self.low)}"
        hi = None if self.high is None else f"<= {num(self.high)}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return what + (f" {bounds}" if bounds else "")

    def check(self, value, owner: str = ""):
        """``value`` converted to this parameter's type, or an InputError naming the parameter
        and what it may be."""
        where = f"{owner} " if owner else ""
        if value is None:
            if self.optional:
                return None
            raise InputError(f"{where}{self.name} needs a value: {self.allowed()}")
        bad = InputError(f"{where}{self.name}={value!r} is not allowed: it must be "
                         f"{self.allowed()}")
        kind = self.kind
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on",
                                                            "off", "yes", "no"):
                return value.lower() in ("true", "1", "on", "yes")
            raise bad
        if kind is str:
            if not isinstance(value, str):
                raise bad
            if self.choices is not None and value not in self.choices:
                raise bad
            if self.pattern is not None and not re.fullmatch(self.pattern, value.strip()):
                raise InputError(f"{where}{self.name}={value!r} is not allowed: {self.help}")
            return value.strip() if self.pattern is not None else value
        if isinstance(value, bool):
            raise bad
        try:
            if kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise bad
                v = int(value) if not isinstance(value, str) else int(value.strip())
            else:
                v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if kind is float and not math.isfinite(v):
            raise bad
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            raise bad
        if self.high is not None and v > self.high:
            raise bad
        if self.choices is not None and v not in self.choices:
            raise bad
        return v


def check_all(specs: dict[str, Param], values: dict, owner: str = "") -> dict:
    """Every value of ``values`` checked by its spec (None means "the default" and is left
    out); a name without a spec is refused with the known ones."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        where = f" for {owner}" if owner else ""
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}{where}; known: "
                         f"{', '.join(sorted(specs)) or 'none'}")
    return {k: specs[k].check(v, f"{owner}:" if owner else "") for k, v in values.items()
            if v is not None}
