"""The one training engine: the loop, validation, previews, stopping.

``Trainer`` runs any :class:`~napari_b2u.methods.Method`. Iterating over it trains, yielding a
:class:`~.events.TrainEvent` after every step; ``stop()`` (from any thread) ends training
within the current step, and ``result()`` returns a
:class:`~napari_b2u.denoise.denoiser.Denoiser` holding the weights the end phase keeps
(:mod:`.endphase`; ``config.keep``: by default the best by self-supervised validation or the
last, whichever output has the lower estimated error). ``max_time`` is the wall-clock of the
whole run, setup and end phase included. The data is prepared by :mod:`.data`, a step run by
:class:`~.steps.Steps`, what the run has done kept in :class:`~.state.RunState`; autosave and
resume are :mod:`.checkpoint`'s.
"""

from __future__ import annotations

import threading
import time
import warnings

import torch

from ..config import PRESETS, TrainConfig, resolve_config
from ..device import amp_dtype, call_retrying, release_memory, resolve_device
from ..errors import OutputError, TrainingError
from ..losses import lr_factor
from ..methods import Method, get_method
from ..noise import resolve_auto_mask, training_messages
from . import checkpoint
from .averaging import WeightAverage
from .crops import crop_sampler, validation_crops
from .data import prepare_data, use_context
from .endphase import EndPlan, end_phase
from .events import Preview, PreviewControl, TrainEvent, build_event
from .keep import finish
from .plan import run_plan
from .runtime import Released, StopNow
from .state import RunState
from .steps import Steps
from .warm_start import warm_start

__all__ = ["Trainer", "TrainEvent", "Preview", "TrainConfig", "PRESETS"]


class Trainer:
    def __init__(self, stack, axes: str | None = None, config: TrainConfig | None = None,
                 device="auto", val_stack=None, preview_frame: int = 0,
                 preview_region: tuple[int, int, int, int] | None = None):
        started = time.perf_counter()  # the time budget counts the setup too
        self.device = resolve_device(device)
        self.messages: list[str] = []
        self.config = cfg = resolve_config(config or TrainConfig(), self.device)
        self.method: Method = get_method(cfg.method, **cfg.method_params)
        # The network's size multiple decides the usable patch; probe the config first.
        multiple = self.method.patch_multiple(self.method.model_config(1, cfg.width, cfg.depth))
        self.data, split = prepare_data(stack, axes, cfg.patch_size, multiple, cfg.val_fraction,
                                        val_stack, cfg.normalization)
        #: what the run will do (steps, patch, batch, hold-out): the widgets show it
        self.plan = run_plan(split, cfg)
        self.patch_size = self.plan.patch_size
        if cfg.epochs is not None and cfg.steps is None:
            cfg.steps = self.plan.steps
        #: the neighbouring frames the network sees (stack context) and why
        self.context = use_context(cfg, self.data, self.method)
        if self.context.axis is not None:
            self.messages.append(self.context.describe())
        #: the noise measured for mask='auto' (None when the mask was given)
        self.noise = resolve_auto_mask(self.method, self.data.train)
        self.messages.extend(training_messages(self.noise))
        self.model_config = self.method.model_config(
            self.data.layout.n_channels, cfg.width, cfg.depth)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = self.method.build(self.model_config)
        #: where the starting weights came from (None: random)
        asked = config is not None and config.warm_start not in (None, "none")
        self.warm_start = (warm_start(self.model, cfg.warm_start, self.model_config,
                                      self.note if asked else self.messages.append)
                           if self.method.trainable else None)
        self.model.to(self.device)
        self.method.seed(cfg.seed + 1, self.device)
        self.method.set_channels_last(self.model, cfg.channels_last)
        self.sampler = crop_sampler(self.data.train_inputs, self.device, cfg.seed, cfg.augment)
        self.val = None
        if self.data.val is not None:
            vsize = max(self.patch_size, min(128, self.patch_size * 2))
            self.val = torch.from_numpy(validation_crops(self.data.val_inputs, vsize,
                                                         cfg.val_patches)).to(self.device)
        self._stop = threading.Event()
        #: what the run has done so far (step, clock, validation history, kept weights, ...)
        self.state = RunState(lr=cfg.lr)
        #: moving average of the weights (config.ema): what is validated and kept when on
        self.average = WeightAverage(self.model, cfg.ema if self.method.trainable else None)
        self.steps = Steps(self.model, self.method, self.sampler, self.average, cfg, self.device,
                           amp_dtype(self.device) if cfg.amp else None,
                           cfg.warm_lr if (self.warm_start and cfg.warm_lr) else cfg.lr,
                           self.patch_size, self.state, self.note, self._stop.is_set)
        self.state.lr = self.steps.base_lr
        self.state.schedule = self.method.schedule(0.0)
        #: the crop previews show and when (``preview.on``: api.train_stack turns previews off
        #: when no callback receives the events)
        self.preview = PreviewControl(cfg, preview_frame, preview_region)
        #: what the end phase will do and the time it needs (it ends training early enough)
        self.end = EndPlan(self)
        self._gen = None
        self.state.elapsed = time.perf_counter() - started

    # ---- public control (thread-safe) and what the run has done --------------------------------
    def stop(self) -> None:
        """Ask training to end; the step in progress is dropped at its next layer (so a stop
        takes a fraction of a step on CPU) and the best/last model is kept."""
        self._stop.set()

    stopping = property(lambda self: self._stop.is_set(), doc="A stop was requested.")
    step = property(lambda self: self.state.step, doc="Steps trained so far.")
    elapsed = property(lambda self: self.state.elapsed, doc="Seconds trained so far.")
    history = property(lambda self: self.state.history, doc="Validation records.")
    batch_size = property(lambda self: self.steps.batch_size, doc="The batch size now.")
    base_lr = property(lambda self: self.steps.base_lr, doc="The learning rate schedule's top.")
    optimizer = property(lambda self: self.steps.optimizer, doc="The optimizer.")
    amp = property(lambda self: self.steps.amp, doc="The autocast dtype (None: fp32).")

    def set_preview(self, frame: int | None = None, region=None, now: bool = True) -> None:
        """Choose the frame (index over all frames) and region (y, x, h, w) shown in previews."""
        self.preview.set(frame, region, now)

    def result(self):
        """The trained :class:`Denoiser`: trains to the end first if iteration has not run.
        Raises :class:`TrainingError` when training ended before its first step (stopped at
        once, or a time budget too short for one step): there is no model to return."""
        if self.state.result is None and not self.state.finished:
            for _ in self:
                pass
        if self.state.result is None:
            if self.state.finished:
                raise TrainingError(
                    "training ended before its first step (stopped, or the time budget was too "
                    "short for one step): there is no trained model. Train longer")
            raise TrainingError("training ended with an error; no model was produced")
        return self.state.result

    def best_record(self) -> dict | None:
        """The validation record (step, val_error) with the lowest error so far."""
        return self.state.best_record()

    def note(self, msg: str) -> str:
        """Tell the user: kept in :attr:`messages` (the model's info) and warned."""
        self.messages.append(msg)
        warnings.warn(msg, stacklevel=2)
        return msg

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return checkpoint.make_checkpoint(self)

    def save_checkpoint(self, path) -> None:
        checkpoint.save_checkpoint(self, path)

    @classmethod
    def resume(cls, ckpt, stack, axes: str | None = None, device="auto", val_stack=None,
               steps: int | None = None, max_time: float | None = None,
               autosave: str | None = None, **changes) -> Trainer:
        """Continue training from an autosaved checkpoint (a path or a loaded dict) on the same
        stack. ``steps``/``max_time`` may extend the budget; other settings come from the file.
        ``autosave``: where to keep autosaving this time (None: nowhere — the path stored in
        the checkpoint is never written unless given again)."""
        return checkpoint.resume_trainer(cls, ckpt, stack, axes, device, val_stack, steps,
                                         max_time, autosave, **changes)

    def _autosave(self) -> str | None:
        """Write the autosave; a failure (disk full, ...) is said and training goes on."""
        try:
            self.save_checkpoint(self.config.autosave)
        except OutputError as exc:
            return self.note(f"autosave failed ({exc}); training goes on without it")
        return None

    # ---- validation and previews ---------------------------------------------------------------
    def validate(self) -> float:
        """The method's self-supervised error on the held-out crops (of the weights in the
        model now), in fp32 even when training autocasts: checkpoints differ by fractions of a
        per cent in it and bf16 moved it by 3 %. Out of GPU memory: fewer crops at a time for
        the rest of the run, said once per change."""
        st = self.state
        vb = [max(1, min(self.steps.batch_size, st.val_batch or self.steps.batch_size))]

        @torch.no_grad()
        def run() -> float:
            self.model.eval()
            try:
                tot, b = 0.0, vb[0]
                for i in range(0, self.val.shape[0], b):
                    part = self.val[i:i + b]
                    tot += float(self.method.validation_error(self.model, part)) * part.shape[0]
                return tot / self.val.shape[0]
            finally:
                self.model.train()

        def shrink() -> bool:
            if vb[0] == 1:
                return False
            vb[0] = max(1, vb[0] // 2)
            self.note(f"out of GPU memory in validation: validating {vb[0]} crops at a time")
            return True

        err = call_retrying(self.device, lambda: self.steps.guarded(run), shrink)
        st.val_batch = vb[0]
        return err

    # ---- the loop: step -> record -> maybe validate -> maybe save -> maybe preview -----------
    def __iter__(self):
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def _run(self):
        t0 = time.perf_counter() - self.state.elapsed  # a resumed run continues its clock
        loop = self._train_loop(t0) if self.method.trainable else self._fit_loop(t0)
        self.end.t0 = t0
        try:
            yield from loop
            yield from self._end(t0)
        except BaseException as exc:
            # Ctrl-C or a closed generator keep what was learned; real errors propagate. The
            # GPU memory is released in every case.
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) and self.state.result is None:
                finish(self, stopped=True)
            self._cleanup()
            raise

    def _train_loop(self, t0: float):
        cfg, method, st = self.config, self.method, self.state
        self.model.train()
        self.steps.start()
        if cfg.max_time and not self.end.prepared and not self._stop.is_set():
            self.end.prepare()  # before the first step: training ends early enough for it
        last_save = last_preview = time.perf_counter()
        sched_t = torch.zeros((), device=self.device)
        while True:
            st.elapsed = time.perf_counter() - t0
            p = self.progress()
            if p >= 1.0 or self._stop.is_set():
                return
            st.schedule = sched = method.schedule(p)
            if sched is not None:
                sched_t.fill_(sched)  # a 0-d tensor: no recompiles as λ ramps
            st.lr = self.steps.base_lr * lr_factor(p)
            for g in self.steps.optimizer.param_groups:
                g["lr"] = st.lr * g.get("lr_scale", 1.0)
            terms, message = self.steps.step(sched_t, sched is not None)
            if terms is None:
                continue
            st.step += 1
            said, give_up = self.steps.record(terms)
            if give_up:
                self._stop.set()
            message = said or message
            now = time.perf_counter()
            st.elapsed = now - t0
            validated = self._maybe_validate()
            if cfg.autosave and now - last_save >= cfg.autosave_every:
                message = self._autosave() or message
                last_save = time.perf_counter()
            previews = None
            if self.preview.due(st.step, now - last_preview):
                with self.average.applied(self.model):
                    previews = self.preview.compute(self, sched)
                last_preview = time.perf_counter()
            yield self._event(validated=validated, previews=previews, message=message)

    def _fit_loop(self, t0: float):
        """A classical method calibrates on training crops (one event per candidate)."""
        crops = validation_crops(self.data.train, max(self.patch_size, 128), 16)
        for done, total in self.method.fit(self.model, torch.from_numpy(crops).to(
                self.device)):
            self.config.steps = total
            self.state.step = done
            self.state.elapsed = time.perf_counter() - t0
            yield self._event()

    def progress(self) -> float:
        """The fraction of the step or time budget used (0..1)."""
        cfg, st = self.config, self.state
        ps = st.step / cfg.steps if cfg.steps else 0.0
        budget = self.end.train_time() if cfg.max_time else 0.0
        pt = (st.elapsed / budget if budget > 0 else 1.0) if cfg.max_time else 0.0
        return min(1.0, max(ps, pt))

    def _maybe_validate(self) -> bool:
        if self.val is None or self.step % self.config.val_every != 0:
            return False
        t = time.perf_counter()
        try:
            with self.average.applied(self.model), self.steps.abortable():
                err = self.validate()
        except StopNow:  # a stop during validation: the step stays unvalidated
            return False
        self.end.seconds["validation"] = time.perf_counter() - t
        self.state.record_validation(err, lambda: self.average.kept(self.model))
        return True

    def _end(self, t0: float):
        """The end phase (:func:`~.endphase.end_phase`: its stages' events), then the last event."""
        cfg, st = self.config, self.state
        st.elapsed = time.perf_counter() - t0
        stopped = self._stop.is_set() and (cfg.steps is None or st.step < cfg.steps)
        if cfg.autosave and st.step > 0:
            self._autosave()
        st.schedule = self.method.schedule(self.progress())
        last = yield from end_phase(self, stopped)
        self._cleanup()
        yield self._event(done=True, **last)

    def _cleanup(self) -> None:
        """Free the GPU: whatever ended the run (done, stop, error), nothing stays held."""
        self.steps.release()
        self.sampler = self.steps.sampler = Released(self.sampler)
        self.val = None
        self.state.best_state = None
        self.average.release()
        if self.device.type != "cpu":  # the Denoiser holds its own CPU copy of the weights
            self.model.to("cpu")
        release_memory(self.device)

    def _event(self, **kw) -> TrainEvent:
        return build_event(self, **kw)

