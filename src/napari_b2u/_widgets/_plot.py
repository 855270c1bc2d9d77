"""Live training plot (pyqtgraph): the method's loss terms (smoothed, left axis: log scale, or
linear once a term goes negative, as the likelihood losses of B2S and D-BSN do), the
self-supervised validation error (points) and the scheduled weight, B2U's λ (right axis)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

_COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176"]
_SCHEDULE_LABELS = {"lambda": "λ"}


class LossPlot(QWidget):
    """Call :meth:`reset` with the method's terms, then :meth:`add` with (step, terms, sched,
    val_error) rows as they arrive."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.widget = pg.PlotWidget(background=None)
        self.widget.setMinimumHeight(200)
        lay.addWidget(self.widget)
        item = self.widget.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        self._log = None
        self._set_log(True)
        item.getAxis("left").enableAutoSIPrefix(False)
        item.showGrid(x=True, y=True, alpha=0.15)
        self.legend = item.addLegend(offset=(-5, 5), labelTextSize="8pt",
                                     brush=pg.mkBrush(0, 0, 0, 140))
        # a second view box for the schedule (λ), sharing the x axis, on the right axis
        self.sched_box = pg.ViewBox()
        item.showAxis("right")
        right = item.getAxis("right")
        right.setLogMode(False)  # λ is linear
        right.enableAutoSIPrefix(False)
        item.scene().addItem(self.sched_box)
        right.linkToView(self.sched_box)
        self.sched_box.setXLink(item)
        item.vb.sigResized.connect(self._sync_views)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.val_curve = None
        self.sched_curve = None
        self.reset(("loss",), None)

    def _set_log(self, on: bool) -> None:
        """Log y for positive losses; linear when a term is ≤ 0 (a negative log-likelihood),
        which a log axis cannot show."""
        if on == self._log:
            return
        self._log = on
        item = self.widget.getPlotItem()
        item.setLogMode(y=on)
        item.getAxis("left").setStyle(maxTextLevel=0 if on else 2)  # log: label decades only
        if item.getAxis("right").logMode:  # PlotItem sets every axis; λ stays linear
            item.getAxis("right").setLogMode(False)

    @property
    def log_scale(self) -> bool:
        return bool(self._log)

    def _sync_views(self) -> None:
        item = self.widget.getPlotItem()
        self.sched_box.setGeometry(item.vb.sceneBoundingRect())
        self.sched_box.linkedViewChanged(item.vb, self.sched_box.XAxis)

    def reset(self, terms, schedule_name: str | None) -> None:
        item = self.widget.getPlotItem()
        for c in list(self.curves.values()) + [self.val_curve]:
            if c is not None:
                item.removeItem(c)
        if self.sched_curve is not None:
            self.sched_box.removeItem(self.sched_curve)
            self.legend.removeItem(self.sched_curve)
        self.legend.clear()
        self._steps: list[int] = []
        self._raw: dict[str, list[float]] = {t: [] for t in terms}
        self._smooth: dict[str, list[float]] = {t: [] for t in terms}
        self._sched: list[float] = []
        self._val: list[tuple[int, float]] = []
        self._set_log(True)
        self.curves = {}
        for i, term in enumerate(terms):
            pen = pg.mkPen(_COLORS[i % len(_COLORS)], width=2 if term == "loss" else 1.3)
            self.curves[term] = item.plot([], [], pen=pen, name=term)
        self.val_curve = item.plot([], [], pen=None, symbol="o", symbolSize=6,
                                   symbolBrush="#ffffff", symbolPen=None,
                                   name="validation error")
        self.sched_curve = None
        label = _SCHEDULE_LABELS.get(schedule_name, schedule_name)
        item.getAxis("right").setLabel(label or "")
        item.getAxis("right").setVisible(schedule_name is not None)
        if schedule_name is not None:
            self.sched_curve = pg.PlotDataItem(
                [], [], pen=pg.mkPen("#bdbdbd", width=1.3, style=Qt.PenStyle.DashLine))
            self.sched_box.addItem(self.sched_curve)
            self.legend.addItem(self.sched_curve, f"{label} (right axis)")

    def add(self, rows) -> None:
        """rows: iterable of (step, terms dict, schedule value or None, val_error or None)."""
        changed = False
        for step, terms, sched, val in rows:
            if terms:
                self._steps.append(step)
                for t in self._raw:
                    v = float(terms.get(t, np.nan))
                    self._raw[t].append(v)
                    prev = self._smooth[t][-1] if self._smooth[t] else v
                    self._smooth[t].append(prev + 0.1 * (v - prev) if np.isfinite(prev) else v)
                self._sched.append(np.nan if sched is None else float(sched))
                changed = True
            if val is not None:
                self._val.append((step, float(val)))
                changed = True
        if changed:
            self._redraw()

    def _redraw(self) -> None:
        x = np.asarray(self._steps, float)
        shown = np.concatenate([np.asarray(v, float) for v in self._smooth.values()]
                               + [np.asarray(self._val, float).reshape(-1, 2)[:, 1]])
        shown = shown[np.isfinite(shown)]
        self._set_log(bool((shown > 0).all()))
        for t, c in self.curves.items():
            c.setData(x, np.asarray(self._smooth[t], float))
        if self._val:
            v = np.asarray(self._val, float)
            self.val_curve.setData(v[:, 0], v[:, 1])
        if self.sched_curve is not None:
            s = np.asarray(self._sched, float)
            ok = np.isfinite(s)
            self.sched_curve.setData(x[ok], s[ok])

    def n_points(self) -> int:
        return len(self._steps)
