"""Words for the user: error messages, times, napari notifications and the status line."""

from __future__ import annotations

import logging

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

from ._names import MODEL_SUFFIX
from ._words import panel_words

log = logging.getLogger(__name__.split(".")[0])  # the package's logger

MODEL_FILTER = f"model file (*{MODEL_SUFFIX});;All files (*)"


def plain_error(exc: BaseException, doing: str) -> str:
    """A message a biologist can act on, for an exception raised while ``doing`` something.
    The library's own errors (bad input, a file not written, no model) are already worded for
    people and are shown as they are, in the panels' words (:func:`~._words.panel_words`)."""
    from ..errors import B2UError

    if isinstance(exc, B2UError):
        return panel_words(str(exc))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = panel_words(text)
    low = text.lower()
    if isinstance(exc, MemoryError) or "out of memory" in low:
        return (f"{doing} ran out of memory ({text}). Lower the batch or patch size, use a "
                "smaller tile size, or choose the CPU as device.")
    if isinstance(exc, ValueError):
        return f"{doing} failed: {text}"
    return (f"{doing} failed unexpectedly ({type(exc).__name__}: {text}). The details are in "
            "the terminal / log; please report them.")


def sentence(text: str) -> str:
    """A core message in the panels' words (:func:`~._words.panel_words`: labels, not code
    names), with a capital first letter and a full stop (core messages are lower-case
    clauses); a first word that still names something in code keeps its spelling."""
    text = panel_words(text).strip()
    if not text:
        return text
    if "_" not in text.split(" ", 1)[0]:
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def notify(message: str, kind: str = "info") -> None:
    """A napari notification (``kind``: info, warning, error)."""
    from napari.utils import notifications

    {"info": notifications.show_info, "warning": notifications.show_warning,
     "error": notifications.show_error}[kind](message)


class StatusLabel(QLabel):
    """One or two lines saying what happens, or what is wrong and what to do. ``kind``: info,
    ok, warning or error (the colour)."""

    COLORS = {"info": None, "ok": "#5fbf5f", "warning": "#e0b050", "error": "#ff7070"}

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.kind = "info"

    def show_message(self, text: str, kind: str = "info") -> None:
        self.kind = kind
        color = self.COLORS.get(kind)
        self.setStyleSheet(f"color: {color};" if color else "")
        self.setText(text)
