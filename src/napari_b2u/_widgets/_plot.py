"""Live training plot (pyqtgraph): the method's ``plot_term`` — the loss term that does not move
with the method's schedule — smoothed on the left axis (log scale, or linear once it goes
negative, as a negative log-likelihood does), the self-supervised validation error (points) on
the same axis, and the scheduled weight on its own right axis, labelled as the method labels
it."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

_TERM_COLOR = "#4fc3f7"
_SCHED_COLOR = "#bdbdbd"
#: vertical pixels per tick label on the left axis
_LABEL_PX = 28


def log_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Tick values (log10) for a log axis showing 10**lo .. 10**hi: at least 3 where the axis
    has room, at most ``most``, at round numbers: decades (every n-th when there are too many),
    then 1-2-5 and 1…9 in each decade; an axis spanning less than that (a loss that moves by
    a few percent) gets round steps in between, e.g. 0.012, 0.014, 0.016."""
    lo, hi = sorted((float(lo), float(hi)))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return []
    most, k0, k1 = max(2, int(most)), int(np.floor(lo)), int(np.ceil(hi))
    decades = [k for k in range(k0, k1 + 1) if lo <= k <= hi]
    if len(decades) > most:
        need = len(decades) / most
        e = int(np.floor(np.log10(need)))
        stride = int(next(m * 10**k for k in (e, e + 1) for m in (1, 2, 5) if m * 10**k >= need))
        return [float(k) for k in decades if k % stride == 0]
    best: list[float] = [float(k) for k in decades]
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        vals = [k + np.log10(m) for k in range(k0, k1 + 1) for m in mantissas]
        vals = [float(v) for v in vals if lo <= v <= hi]
        if len(vals) > most:
            return best
        best = vals
        if len(vals) >= 3:
            return best
    a, b = 10.0**lo, 10.0**hi  # within a decade: round steps in linear values
    if not b > a:
        return best
    e = int(np.floor(np.log10(b - a)))
    for step in (m * 10.0**k for k in range(e - 2, e + 2) for m in (1, 2, 5)):
        lin = np.arange(np.ceil(a / step), np.floor(b / step) + 1) * step
        if 2 <= len(lin) <= min(most, 6):
            return [float(np.log10(v)) for v in lin]
    return best


def tick_labels(values) -> list[str]:
    """Plain numbers with the fewest significant digits that tell them apart."""
    xs = [float(x) for x in values]

    def text(x: float, digits: int) -> str:
        if x == 0 or 1e-4 <= abs(x) < 1e6:  # 0.014, 10, 2000: no exponent
            return np.format_float_positional(x, precision=digits, fractional=False, trim="-")
        return f"{x:.{digits}g}"

    for digits in range(1, 8):
        texts = [text(x, digits) for x in xs]
        if len(set(texts)) == len(texts) and all(
                abs(float(t) - x) <= 1e-6 * abs(x) for t, x in zip(texts, xs)):
            return texts
    return texts


class LogAxis(pg.AxisItem):
    """pyqtgraph's axis, with readable ticks in log mode: its own labels only decades (none on
    a loss that stays within one) or every 1…9 at one digit (0.01, 0.01, 0.02, …)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph's names
        if not self.logMode:
            return super().tickValues(minVal, maxVal, size)
        return [(None, log_ticks(minVal, maxVal, size / _LABEL_PX))]

    def logTickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        return tick_labels(10.0 ** np.asarray(values, float) * scale)


class LossPlot(QWidget):
    """Call :meth:`reset` with the term to plot, its legend text and the schedule's label (None:
    no schedule), then :meth:`add` with (step, terms, schedule, val_error) rows as they
    arrive."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.widget = pg.PlotWidget(background=None, axisItems={"left": LogAxis("left")})
        self.widget.setMinimumHeight(200)
        lay.addWidget(self.widget)
        item = self.widget.getPlotItem()
        item.setLabel("bottom", "step")
        self._log = None
        self._set_log(True)
        item.getAxis("left").enableAutoSIPrefix(False)
        item.showGrid(x=True, y=True, alpha=0.15)
        self.legend = item.addLegend(offset=(-5, 5), labelTextSize="8pt",
                                     brush=pg.mkBrush(0, 0, 0, 140))
        # a second view box for the schedule, sharing the x axis, on the right axis
        self.sched_box = pg.ViewBox()
        item.showAxis("right")
        right = item.getAxis("right")
        right.setLogMode(False)  # the schedule is linear
        right.enableAutoSIPrefix(False)
        item.scene().addItem(self.sched_box)
        right.linkToView(self.sched_box)
        self.sched_box.setXLink(item)
        item.vb.sigResized.connect(self._sync_views)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.val_curve = None
        self.sched_curve = None
        self.term = "loss"
        self.schedule_label = None
        self.reset("loss", "loss", None)

    def _set_log(self, on: bool) -> None:
        """Log y for positive values; linear when the term is ≤ 0 (a negative log-likelihood),
        which a log axis cannot show."""
        if on == self._log:
            return
        self._log = on
        item = self.widget.getPlotItem()
        item.setLogMode(y=on)
        if item.getAxis("right").logMode:  # PlotItem sets every axis; the schedule stays linear
            item.getAxis("right").setLogMode(False)

    @property
    def log_scale(self) -> bool:
        return bool(self._log)

    def _sync_views(self) -> None:
        item = self.widget.getPlotItem()
        self.sched_box.setGeometry(item.vb.sceneBoundingRect())
        self.sched_box.linkedViewChanged(item.vb, self.sched_box.XAxis)

    def reset(self, term: str, legend: str, schedule_label: str | None) -> None:
        """Start a new run: plot ``term`` (shown in the legend as ``legend``) and, when
        ``schedule_label`` is given, the schedule on the right axis under that label."""
        item = self.widget.getPlotItem()
        for c in list(self.curves.values()) + [self.val_curve]:
            if c is not None:
                item.removeItem(c)
        if self.sched_curve is not None:
            self.sched_box.removeItem(self.sched_curve)
            self.legend.removeItem(self.sched_curve)
        self.legend.clear()
        self.term = term
        self.schedule_label = schedule_label
        self._steps: list[int] = []
        self._raw: list[float] = []
        self._smooth: list[float] = []
        self._sched: list[float] = []
        self._val: list[tuple[int, float]] = []
        self._set_log(True)
        item.setLabel("left", term)
        self.curves = {term: item.plot([], [], pen=pg.mkPen(_TERM_COLOR, width=2), name=legend)}
        self.val_curve = item.plot([], [], pen=None, symbol="o", symbolSize=6,
                                   symbolBrush="#ffffff", symbolPen=None,
                                   name="validation error")
        self.sched_curve = None
        right = item.getAxis("right")
        right.setLabel(schedule_label or "")
        right.setVisible(schedule_label is not None)
        if schedule_label is not None:
            self.sched_curve = pg.PlotDataItem(
                [], [], pen=pg.mkPen(_SCHED_COLOR, width=1.3, style=Qt.PenStyle.DashLine))
            self.sched_box.addItem(self.sched_curve)
            self.legend.addItem(self.sched_curve, f"{schedule_label} (right axis)")

    def legend_texts(self) -> list[str]:
        return [label.text for _, label in self.legend.items]

    def add(self, rows) -> None:
        """rows: iterable of (step, terms dict or None, schedule value or None, val_error or
        None)."""
        changed = False
        for step, terms, sched, val in rows:
            if terms and self.term in terms:
                v = float(terms[self.term])
                self._steps.append(step)
                self._raw.append(v)
                prev = self._smooth[-1] if self._smooth else v
                self._smooth.append(prev + 0.1 * (v - prev) if np.isfinite(prev) else v)
                self._sched.append(np.nan if sched is None else float(sched))
                changed = True
            if val is not None:
                self._val.append((step, float(val)))
                changed = True
        if changed:
            self._redraw()

    def _redraw(self) -> None:
        x = np.asarray(self._steps, float)
        shown = np.concatenate([np.asarray(self._smooth, float),
                                np.asarray(self._val, float).reshape(-1, 2)[:, 1]])
        shown = shown[np.isfinite(shown)]
        self._set_log(bool((shown > 0).all()))
        self.curves[self.term].setData(x, np.asarray(self._smooth, float))
        if self._val:
            v = np.asarray(self._val, float)
            self.val_curve.setData(v[:, 0], v[:, 1])
        if self.sched_curve is not None:
            s = np.asarray(self._sched, float)
            ok = np.isfinite(s)
            self.sched_curve.setData(x[ok], s[ok])

    def n_points(self) -> int:
        return len(self._steps)
