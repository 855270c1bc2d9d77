"""The end phase of a run (weights' choice, classical floor, final preview) keeps the time budget,
reports its stages and stops at once; a stop during a step's backward pass drops that step.

Time here is a *network clock*: every call of the trainer's network advances the engine's clock
by a fixed amount, so the checks are logical (what the end phase spends is network passes), not
a measure of this machine's speed."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from napari_b2u import api

from .conftest import TINY_T

#: seconds of the network clock per network call (a training step is ~3 calls: the masked
#: copies, the visible pass and the validation's)
PASS = 0.02
#: a tiny network, each frame alone, the Gaussian floor on
KW = {**TINY_T, "floor": "gauss", "context": 0}


@pytest.fixture
def network_clock(monkeypatch):
    """A clock for the engine that advances only when the network runs: ``clock.tie(trainer)``
    hooks it to a trainer's network; ``clock.now`` is the time, ``clock.passes`` the calls."""
    from napari_b2u.train import endphase, events, steps, trainer

    clock = types.SimpleNamespace(now=0.0, passes=0, after_stop=0, stopper=None)
    fake = types.SimpleNamespace(perf_counter=lambda: clock.now)
    for module in (trainer, steps, endphase, events):
        monkeypatch.setattr(module, "time", fake)

    def tie(tr):
        def tick(module, args):
            clock.now += PASS
            clock.passes += 1
            if tr.stopping:
                clock.after_stop += 1
        tr.model.register_forward_pre_hook(tick)
        return tr
    clock.tie = tie
    return clock


def _stack(n=6, size=96, seed=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    clean = 60 + 100 * (0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 9.0))
    return np.stack([clean + rng.normal(0, 12, clean.shape) for _ in range(n)]).astype(
        np.float32)


def _worsening(trainer):
    """Validation errors that grow with the step: the best validated weights are never the
    last, so the end phase compares the two."""
    validate = trainer.validate
    trainer.validate = lambda: validate() * (1.0 + trainer.state.step) ** 2
    return trainer


def _run(trainer, callback=None):
    events = []
    for ev in trainer:
        events.append(ev)
        if callback is not None:
            callback(trainer, ev)
    return events


def test_the_whole_run_keeps_the_time_budget_and_reports_the_end_phase(network_clock):
    """max_time bounds the whole call — training, the last validation, the weights' choice, the
    comparison with a Gaussian filter, the final preview — within 5 %; training ends early
    enough for the end phase, whose stages are events with their own ETA."""
    budget = 6.0
    tr = network_clock.tie(api.make_trainer(_stack(), max_time=budget,
                                            val_every=5, preview_every=10**6,
                                            preview_seconds=0, **KW))
    events = _run(tr)
    train = [e for e in events if e.phase is None and not e.done]
    phases = [e.phase for e in events if e.phase]
    assert len(train) == tr.state.step >= 20
    assert train[-1].elapsed < budget  # the last step ends before the budget
    assert events[-1].done and events[-1].elapsed <= 1.05 * budget
    assert tr.result().info["seconds"] == pytest.approx(events[-1].elapsed, abs=0.01)
    # the comparison happened, reported as a numbered stage, with ETAs inside the budget
    numbered = [p for p in phases if "/" in p]
    assert numbered and numbered[-1].startswith("comparing with a Gaussian filter"), phases
    assert numbered[-1].endswith(f"{len(numbered)}/{len(numbered)}")
    assert all(0.0 <= e.eta <= budget for e in events if e.phase)
    info = tr.result().info
    assert "floor" in info and info["chosen"]
    # the end phase took a bounded share of the run (it is planned at ≤ 15 % of the budget)
    end_start = train[-1].elapsed
    assert events[-1].elapsed - end_start <= 0.15 * budget + 0.05 * budget


def test_a_short_budget_measures_less_and_says_what_it_left_out(network_clock):
    """When the full comparisons do not fit the end phase's share, they are made smaller
    (fewer views) or left out — and the model's messages say so; the budget holds either way."""
    budget = 1.2  # ~20 steps of this clock: the full comparisons (8 views) cannot fit
    tr = network_clock.tie(api.make_trainer(_stack(), max_time=budget, val_every=4,
                                            preview_every=10**6, preview_seconds=0,
                                            **KW))
    events = _run(tr)
    assert events[-1].elapsed <= 1.05 * budget
    plan = tr.end
    info = tr.result().info
    assert plan.views < plan.full_views or any("time limit left no time" in m
                                              for m in info["messages"])


def test_without_a_time_budget_the_comparisons_are_complete(network_clock):
    """A run given in steps alone promised no time: the comparisons measure inference's views
    on all the risk's crops."""
    tr = network_clock.tie(api.make_trainer(_stack(), steps=12, val_every=4, **KW))
    _run(tr)
    assert tr.end.views == tr.end.full_views > 1
    assert tr.end.crops == 16
    assert not any("time limit" in m for m in tr.result().info["messages"])


@pytest.mark.parametrize("stage", ["measuring", "comparing"])
def test_stop_in_the_end_phase_keeps_the_weights_at_once(network_clock, stage):
    """Stop pressed while the end phase measures or compares keeps the quick choice's weights at
    once: at most the network call under way finishes, and the last event says so."""
    tr = network_clock.tie(_worsening(api.make_trainer(_stack(), steps=30, val_every=7,
                                                       **KW)))

    def stop_at(trainer, ev):
        if ev.phase and ev.phase.startswith(stage) and not trainer.stopping:
            trainer.stop()
    events = _run(tr, stop_at)
    phases = [e.phase for e in events if e.phase]
    assert any(p.startswith(stage) for p in phases), phases
    assert network_clock.after_stop <= 1
    last = events[-1]
    assert last.done and last.stopped and "stopped while choosing the model" in last.message
    result = tr.result()
    assert result is not None and result.info["steps"] == 30
    out = result.denoise(_stack(1, seed=9)[0])
    assert np.isfinite(out).all()


def test_stop_during_the_backward_pass_drops_that_step():
    """A stop that arrives while a step's gradients are computed ends the step before the
    weights change: no step is counted after the click and the kept weights are those after
    the step before."""
    tr = api.make_trainer(_stack(), steps=50, val_every=10**6, **TINY_T)
    convs = [m for m in tr.model.modules() if isinstance(m, torch.nn.Conv2d)]
    seen = {}

    def on_grad(grad):
        if tr.state.step == 4 and not tr.stopping:  # the 5th step's backward pass
            tr.stop()
        return grad
    # the last layer's weight gradient is among the first computed in the backward pass
    convs[-1].weight.register_hook(on_grad)

    def after(trainer, ev):
        if ev.step == 4 and not ev.done:
            seen["weights"] = trainer.average.kept(trainer.model)
    events = _run(tr, after)
    assert tr.state.step == 4 and events[-1].stopped
    assert [e.step for e in events if not e.done] == [1, 2, 3, 4]
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(v, seen["weights"][k])
