"""The end of a run: the last validation, which weights are kept (:mod:`.keep`), the classical
floor (:mod:`.floor`) and the final preview — inside the time budget, each stage reported as an
event ("comparing with a Gaussian filter… 3/4"), and a stop there keeping the weights chosen so
far at once.

``max_time`` is the wall-clock of the whole run, setup and end phase included. The comparisons
measure networks on the risk's crops (:mod:`.sure`: 4 passes per batch of crops and dihedral
view): after a 1-minute CPU run that was 50 s (16 crops, 8 views). So a time-budgeted run
prepares the end phase before its first step (the risk's crops and the floor's calibrated filter
depend on the data only) and times one network pass; training then ends early enough for what
the end phase needs, at most :data:`END_SHARE` of the budget. When the full comparisons do not
fit, they measure fewer crops and views (the output the user gets averages more views than the
one measured then, so the floor's verdict is a cautious one), or are left out, which the
model's messages say. A run given in steps alone gets the full comparisons: no time was
promised.
"""

from __future__ import annotations

import math
import time

import torch

from ..denoise.predict import VIEW_COUNTS, ensemble_views, predict_view
from .events import build_event
from .floor import apply_floor, calibrate, floor_method
from .keep import Choice, finish, keep, measure_state, pick
from .runtime import StopNow
from .sure import BATCH, sure_risk

#: the most of a time budget the end phase may take: its comparisons are made smaller to fit
END_SHARE = 0.15
#: how far past the budget a stage may run before it is cut short (the promise is +5 %)
GRACE = 0.03
#: the risk's crop counts, the first whose measurements fit the comparisons' share is taken
CROP_COUNTS = (16, 8, 4)
#: passes per batch of crops and view in a measurement (:meth:`~.sure.Risk.output`)
PASSES = 4


class EndPlan:
    """What the end phase will do and the time it may take; ``seconds`` holds the last
    validation's and preview's durations (measured by the run)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.t0: float | None = None  # the run's clock origin (time.perf_counter)
        self.prepared = False
        self.risk = self.floor = self.filt = None
        self.crops, self.views, self.full_views = CROP_COUNTS[0], 1, 1
        self.measures = 0  # networks the comparisons measure: 2 (best and last) or 1 (floor)
        self.pass_time = 0.0  # seconds of one network pass over a batch of the risk's crops
        self.seconds: dict[str, float] = {}
        self.remaining: float | None = None  # estimated seconds left, for the events' ETA

    # ---- time ------------------------------------------------------------------------------
    def budget(self) -> float | None:
        return self.trainer.config.max_time

    def left(self) -> float:
        """Seconds until the time budget ends (inf without one)."""
        if not self.budget() or self.t0 is None:
            return math.inf
        return self.t0 + self.budget() - time.perf_counter()

    def past_deadline(self) -> bool:
        return self.left() < -GRACE * self.budget() if self.budget() else False

    def cost(self, views: int, crops: int | None = None) -> float:
        """Seconds to measure one network on ``crops`` risk crops with ``views`` views."""
        return math.ceil((crops or self.crops) / BATCH) * PASSES * views * self.pass_time

    def need(self) -> float:
        """Seconds the end phase needs after the last step (0 without a time budget): a
        validation, the comparisons at inference's views, a preview, at most END_SHARE."""
        if not self.budget():
            return 0.0
        s, previews = self.seconds, self.trainer.preview.enabled
        need = (s.get("validation", 0.0) + (s.get("preview", 0.0) if previews else 0.0)
                + self.measures * self.cost(self.full_views) + 2 * self.pass_time)
        return min(END_SHARE * self.budget(), need)

    def train_time(self) -> float:
        """Seconds of the budget training may use: what the end phase and the next step need
        are left out, so the last step ends before the end phase's share begins."""
        rate = self.trainer.state.rate
        return self.budget() - self.need() - (1.0 / rate if rate else 0.0)

    # ---- preparing ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """What the comparisons need from the data alone: the risk's crops (fewer under a short
        time budget), the floor's calibrated filter, the time of one network pass. Nothing when
        no comparison can happen; left unfinished when a stop comes first."""
        tr, cfg = self.trainer, self.trainer.config
        self.prepared = True
        keep_auto = cfg.keep == "auto" and tr.val is not None
        wants_floor = cfg.floor != "none" and tr.val is not None
        if not tr.method.trainable or not (keep_auto or wants_floor):
            return
        output = tr.method.check_output(None)
        self.views = self.full_views = ensemble_views(
            tr.method, tuple(tr.data.frames.shape), output, tr.device)
        if keep_auto or cfg.floor == "gauss":
            self.measures = 2 if keep_auto else 1
            self.pass_time = self._time_pass(output)
            if self.budget():
                share = 0.6 * END_SHARE * self.budget()  # the rest: validation, preview
                self.crops = next((n for n in CROP_COUNTS
                                   if self.measures * self.cost(1, n) <= share), CROP_COUNTS[-1])
            self.risk = sure_risk(tr, self.crops)
            if self.risk is None:
                self.measures = 0
            elif self.risk.measured < 1.0:
                tr.note(f"clipped pixels: the estimated error is measured on the "
                        f"{100 * self.risk.measured:.0f} % of its crops' pixels away from them")
        if wants_floor and not tr.stopping:
            floor = floor_method(tr)
            t = time.perf_counter()
            self.filt = calibrate(tr, floor, self.risk)
            self.floor = floor if self.filt is not None else None
            self.seconds["floor"] = time.perf_counter() - t

    @torch.no_grad()
    def _time_pass(self, output: str) -> float:
        """Seconds of one pass of the network over a batch of crops the risk's size."""
        tr = self.trainer
        _, c, h, w = tr.data.train_inputs.shape
        size = max(tr.patch_size, 128)
        y = torch.randn(BATCH, c, min(size, h), min(size, w), device=tr.device)
        tr.model.eval()
        try:
            t = time.perf_counter()
            float(predict_view(tr.method, tr.model, y, output, 0).sum())  # waits for the device
            return time.perf_counter() - t
        finally:
            tr.model.train()

    def choose_views(self, measures: int, spare: float) -> int:
        """The most views (up to inference's) whose ``measures`` measurements fit ``spare``
        seconds; 0 when not even one view fits."""
        views = [v for v in VIEW_COUNTS if v <= self.full_views]  # most first
        return next((v for v in views if measures * self.cost(v) <= spare), 0)

    # ---- running a stage ---------------------------------------------------------------------
    def attempt(self, fn):
        """``(fn(), None)``, or ``(None, "stop")`` / ``(None, "time")`` when a stop or the end
        of the time budget cut it short (at the network's next layer)."""
        try:
            with self.trainer.steps.abortable(self.past_deadline):
                return fn(), None
        except StopNow:
            return None, ("stop" if self.trainer.stopping else "time")

    def event(self, phase: str, estimate: float):
        self.trainer.state.elapsed = time.perf_counter() - self.t0
        self.remaining = min(estimate, max(0.0, self.left()))
        return build_event(self.trainer, phase=phase)


def end_phase(trainer, stopped: bool):
    """The end of a run, a generator: yields an event before each stage, sets
    ``trainer.state.result`` and returns what the last event says (``previews``, ``stopped``,
    ``message``)."""
    st, plan = trainer.state, trainer.end
    ran = not stopped and st.step > 0
    full = ran and trainer.method.trainable  # the comparisons are for trained networks
    cut = None
    if ran and trainer.val is not None and not (st.history and
                                                 st.history[-1]["step"] == st.step):
        estimate = plan.seconds.get("validation", 0.0)
        if estimate <= plan.left():
            yield plan.event("validating the last weights…", estimate)
            err, cut = plan.attempt(lambda: _validate(trainer))
            if err is not None:
                st.history.append({"step": st.step, "val_error": err})
    choice = finish(trainer, stopped or cut is not None)
    if full and cut is None:
        if not plan.prepared:
            yield plan.event("preparing to choose the model…", plan.seconds.get("floor", 0.0))
            plan.prepare()
        cut = yield from _compare(trainer, choice)
    previews = None
    if ran and cut is None and trainer.preview.enabled:  # classical methods' too
        estimate = plan.seconds.get("preview", 0.0)
        if estimate <= plan.left():
            yield plan.event("drawing the final preview…", estimate)
            previews = trainer.preview.compute(trainer, st.schedule, plan.past_deadline)
    st.elapsed = time.perf_counter() - plan.t0
    if st.result is None:
        return {"stopped": stopped, "message": "stopped before the first step: there is no model"}
    st.result.info.update(seconds=round(st.elapsed, 2), messages=list(trainer.messages))
    chosen = st.result.info["chosen"]
    if cut == "stop":
        message = f"stopped while choosing the model: kept the {chosen} model"
    else:
        message = f"kept the {chosen} model after {st.step} steps"
    return {"previews": previews, "stopped": stopped or cut == "stop", "message": message}


def _validate(trainer) -> float:
    with trainer.average.applied(trainer.model):
        return trainer.validate()


def _compare(trainer, choice: Choice):
    """The weights by their estimated error, then the floor: stages the time left pays for
    (generator: yields their events; returns what cut one short, or None)."""
    st, plan, cfg = trainer.state, trainer.end, trainer.config
    measures = plan.measures if (plan.risk is not None and cfg.keep == "auto"
                                 and choice.best_state is not None) else 0
    floor = plan.floor if st.history else None
    if floor is not None and floor.name == "gauss" and plan.risk is not None:
        measures = max(measures, 1)
    spare = plan.left() - (plan.seconds.get("preview", 0.0) if trainer.preview.enabled else 0.0)
    plan.views = plan.choose_views(measures, spare)
    while measures and not plan.views:  # keep the floor's measurement over the choice's
        measures -= 1
        plan.views = plan.choose_views(measures, spare)
        trainer.messages.append(
            "the time limit left no time to compare the best and the last weights: kept the "
            "best by validation" if measures else
            "the time limit left no time to compare the network with a Gaussian filter")
    if not measures and floor is not None and floor.name == "gauss":
        floor = None
    stages = (measures == 2) * 2 + (floor is not None)
    done, measured, kept_best = 0, None, choice.best_state is not None
    if measures == 2:
        ons = []
        for which, state in (("the best weights by validation", choice.best_state),
                             ("the last weights", choice.last)):
            done += 1
            yield plan.event(f"measuring {which}… {done}/{stages}",
                             (stages - done + 1) * plan.cost(plan.views))
            on, cut = plan.attempt(lambda s=state: measure_state(trainer, plan.risk, s))
            if cut:
                keep(trainer, choice.state, choice.chosen)  # the quick choice's weights
                return cut
            ons.append(on)
        which, chosen, record = pick(plan.risk, *ons, choice.best["step"])
        if which is None:  # not finite: the quick choice stands
            keep(trainer, choice.state, choice.chosen)
        else:
            kept_best = which == "best"
            measured = ons[0] if kept_best else ons[1]
            keep(trainer, choice.best_state if kept_best else choice.last, chosen, record)
    if floor is None:
        return None
    done += 1
    yield plan.event(f"comparing with a {floor.title.split(' (')[0]}… {done}/{stages}",
                     plan.cost(plan.views) if measured is None else 0.0)
    net_error = choice.best["val_error"] if kept_best else st.history[-1]["val_error"]

    def run():
        m = measured
        if m is None and floor.name == "gauss":
            m = measure_state(trainer, plan.risk, trainer.model.state_dict())
        trainer.steps.check_stop()  # a stop keeps the network chosen so far, not a blend
        apply_floor(trainer, net_error, floor, plan.filt, plan.risk, m)

    _, cut = plan.attempt(run)
    return cut
