"""One optimization step at a time: the batch, precision and gradient scaling, torch.compile
and its fallback, a stop within the step, and recovery from running out of memory (the batch
is halved) and from a non-finite loss (the last good weights, half the learning rate).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

from ..device import call_retrying
from .runtime import NoOptimizer, StopNow, abort_hooks, is_compile_error


class Steps:
    """The optimizer and everything a step needs; ``state`` is the run's
    :class:`~.state.RunState`, ``note`` how the user is told (a message and a warning)."""

    def __init__(self, model, method, sampler, average, config, device, amp, base_lr,
                 patch_size: int, state, note, should_stop):
        self.model, self.method, self.sampler, self.average = model, method, sampler, average
        self.config, self.device, self.amp, self.state = config, device, amp, state
        self.note, self.should_stop = note, should_stop
        self.batch_size, self.patch_size = config.batch_size, patch_size
        self.base_lr = base_lr
        self.optimizer = self.make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        self.compiled = False
        self.good_state = None  # the weights a non-finite loss rolls back to
        self._acc, self._acc_n = {}, 0
        self._rate_mark = (time.perf_counter(), 0)

    def make_optimizer(self):
        if not self.method.trainable:  # a classical method: nothing to optimize
            return NoOptimizer()
        kw = dict(lr=self.base_lr, weight_decay=self.config.weight_decay)
        if self.device.type == "cuda":
            kw["fused"] = True
        return torch.optim.Adam(self.method.param_groups(self.model), **kw)

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # ---- torch.compile --------------------------------------------------------------------
    def maybe_compile(self) -> None:
        if not self.config.compile or self.compiled:
            return
        try:
            for m in self.method.modules_to_compile(self.model):
                m.compile(dynamic=False)
                m._compiled_call_impl = _training_only(m, m._compiled_call_impl)
            self.compiled = True
        except Exception as exc:  # noqa: BLE001 - compile is an optimization only
            self._uncompile(exc)

    def _uncompile(self, exc: BaseException) -> None:
        for m in self.method.modules_to_compile(self.model):
            m._compiled_call_impl = None  # what Module.compile() set: back to eager
        self.compiled = False
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        self.note(f"torch.compile failed ({type(exc).__name__}: {first}); continuing "
                  "without it (pass compile=False to skip it)")

    def guarded(self, fn, *args):
        """Run ``fn``; if torch.compile fails (it does so lazily, at the first call of each
        shape: no Triton, no C compiler, ...), fall back to eager mode and run it again."""
        try:
            return fn(*args)
        except Exception as exc:
            if not (self.compiled and is_compile_error(exc)):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self._uncompile(exc)
        return fn(*args)

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self, sched_t, use_sched: bool) -> dict:
        """One optimization step; returns the loss terms as (unsynchronized) tensors."""
        batch = self.sampler.sample(self.batch_size, self.patch_size)
        with self.autocast():
            loss, terms = self.method.training_loss(
                self.model, batch, sched_t if use_sched else None)
        opt, clip = self.optimizer, self.method.clip_grad_norm
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.check_stop()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.check_stop()
            opt.step()
        self.average.update(self.model, self.state.step)
        return {k: v.detach().float() for k, v in terms.items()}

    def step(self, sched_t, use_sched: bool):
        """A guarded step: ``(terms, message)``; terms None when the step did not happen (a
        stop request drops it at its next layer). Out of memory: the batch is halved and the
        step run again (down to one crop), ``message`` says so."""
        said = []

        def shrink() -> bool:
            if self.batch_size == 1:
                return False
            self.optimizer.zero_grad(set_to_none=True)
            self.batch_size = max(1, self.batch_size // 2)
            said.append(self.note(f"out of GPU memory: continuing with batch size "
                                  f"{self.batch_size}"))
            return True

        try:
            with self.abortable():
                terms = call_retrying(self.device, lambda: self.guarded(
                    self.train_step, sched_t, use_sched), shrink)
        except StopNow:
            self.optimizer.zero_grad(set_to_none=True)
            terms = None
        return terms, (said[-1] if said else None)

    def check_stop(self) -> None:
        """A stop asked for during the backward pass drops the step before the weights change:
        no step is counted after the click."""
        if self.should_stop():
            raise StopNow

    @contextlib.contextmanager
    def abortable(self, deadline=None):
        """While a step, a validation, a preview or a measurement of the end phase runs, every
        convolution first checks the stop flag (and ``deadline()``, when given) and raises
        :class:`~.runtime.StopNow`, so a stop never waits for a whole pass (seconds on a CPU
        with a large network). Not with torch.compile: a compiled graph would freeze the check
        (and CUDA passes are short)."""
        check = self.should_stop if deadline is None else (
            lambda: self.should_stop() or deadline())
        hooks = [] if self.compiled else abort_hooks(self.model, check)
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def rollback(self) -> tuple[str, bool]:
        """Non-finite loss: restore the last good weights and halve the learning rate.
        ``(message, give up)``: after ``max_nan_retries`` rollbacks training should stop."""
        st = self.state
        st.nan_retries += 1
        self.model.load_state_dict(self.good_state)
        self.base_lr *= 0.5
        self.optimizer = self.make_optimizer()
        if st.nan_retries > self.config.max_nan_retries:
            return self.note(
                f"the loss became NaN/Inf {st.nan_retries} times even after lowering the "
                "learning rate; training stopped with the last good weights. Check the input "
                "for extreme values"), True
        return self.note(
            f"the loss became NaN/Inf at step {st.step}; rolled back to the last good "
            f"weights and lowered the learning rate to {self.base_lr:.2g}"), False

    def record(self, terms: dict) -> tuple[str | None, bool]:
        """Accumulate the step's loss terms; read them out every ``log_every`` steps (the only
        GPU synchronization), roll back on a non-finite loss, keep a good snapshot now and then,
        and update the steps/s rate. ``(message, give up)``."""
        st, cfg = self.state, self.config
        for k, v in terms.items():
            self._acc[k] = self._acc[k] + v if k in self._acc else v
        self._acc_n += 1
        message, give_up = None, False
        log_every = max(1, int(cfg.log_every or 1))
        if st.step % log_every == 0 or st.step == cfg.steps:
            vals = {k: float(v) / self._acc_n for k, v in self._acc.items()}
            self._acc, self._acc_n = {}, 0
            if all(math.isfinite(v) for v in vals.values()):
                st.terms, st.loss = vals, vals.get("loss")
                if st.step % (log_every * 10) == 0:
                    self.good_state = self.snapshot()
            else:
                message, give_up = self.rollback()
        now = time.perf_counter()
        mark_t, mark_step = self._rate_mark
        if now - mark_t >= 0.5 and st.step > mark_step:
            inst = (st.step - mark_step) / (now - mark_t)
            st.rate = inst if st.rate is None else 0.7 * st.rate + 0.3 * inst
            self._rate_mark = (now, st.step)
        return message, give_up

    def start(self) -> None:
        """Before the first step of this session (also after a resume)."""
        self.maybe_compile()
        self._acc, self._acc_n = {}, 0
        self._rate_mark = (time.perf_counter(), self.state.step)
        self.good_state = self.snapshot()

    def release(self) -> None:
        """Drop what the steps hold (the run ended)."""
        self.good_state = None
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()


def _training_only(module, compiled):
    """``module``'s compiled call for training passes only. Evaluation passes (validation,
    previews, the end phase's risk and floor) come in other shapes, each a recompile of
    seconds, and torch stops compiling after 8: on an H200 a 20 s run of a 20-frame stack
    spent its budget recompiling and made 1 step (docs/benchmarks.md, GPU)."""
    def call(*args, **kwargs):
        if module.training:
            return compiled(*args, **kwargs)
        return module._call_impl(*args, **kwargs)

    return call
