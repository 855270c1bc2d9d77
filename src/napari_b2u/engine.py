"""The one training engine: optimization, schedules, validation, previews, stopping.

``Trainer`` runs any :class:`~napari_b2u.methods.Method`. Iterating over it trains, yielding a
:class:`TrainEvent` after every step; ``stop()`` (from any thread) ends training within the
current step, and ``result()`` returns a :class:`~napari_b2u.denoise.denoiser.Denoiser` holding the
weights :func:`~napari_b2u.results.finish` keeps (``config.keep``: by default the best by
self-supervised validation or the last, whichever output has the lower estimated error).
Data preparation lives in :mod:`~napari_b2u.sampling`, the settings in :mod:`~napari_b2u.config`,
autosave/resume in :mod:`~napari_b2u.checkpoint`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings

import torch

from . import checkpoint as _ckpt
from ._runtime import NoOptimizer, Released, StopNow, abort_hooks, is_compile_error
from .averaging import WeightAverage
from .config import PRESETS, TrainConfig, resolve_config, steps_for_epochs
from .device import amp_dtype, is_oom, release_memory, resolve_device
from .errors import OutputError, TrainingError
from .events import Preview, TrainEvent, build_event, compute_preview
from .losses import lr_factor
from .methods import Method, get_method
from .noise import resolve_auto_mask, training_messages
from .pretrained import warm_start
from .results import finish
from .sampling import crop_sampler, prepare_data, validation_crops
from .validation import validate_safe

__all__ = ["Trainer", "TrainEvent", "Preview", "TrainConfig", "PRESETS"]


class Trainer:
    def __init__(
        self,
        stack,
        axes: str | None = None,
        config: TrainConfig | None = None,
        device="auto",
        val_stack=None,
        preview_frame: int = 0,
        preview_region: tuple[int, int, int, int] | None = None,
    ):
        self.device = resolve_device(device)
        self.messages: list[str] = []
        self.config = cfg = resolve_config(config or TrainConfig(), self.device)
        self.method: Method = get_method(cfg.method, **cfg.method_params)
        # The network's size multiple decides the usable patch; probe the config first.
        multiple = self.method.patch_multiple(self.method.model_config(1, cfg.width, cfg.depth))
        self.data, self.patch_size = prepare_data(
            stack, axes, cfg.patch_size, multiple, cfg.val_fraction, val_stack,
            cfg.normalization)
        #: the noise measured for mask='auto' (None when the mask was given)
        self.noise = resolve_auto_mask(self.method, self.data.train)
        self.messages.extend(training_messages(self.noise))
        self.model_config = self.method.model_config(
            self.data.layout.n_channels, cfg.width, cfg.depth)
        if cfg.epochs is not None and cfg.steps is None:
            cfg.steps = steps_for_epochs(cfg.epochs, self.data.train.shape, cfg.batch_size,
                                         self.patch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = self.method.build(self.model_config)
        #: where the starting weights came from (None: random)
        asked = config is not None and config.warm_start not in (None, "none")
        self.warm_start = (warm_start(self.model, cfg.warm_start, self.model_config,
                                      self._note if asked else self.messages.append)
                           if self.method.trainable else None)
        self.model.to(self.device)
        self.method.seed(cfg.seed + 1, self.device)
        self.method.set_channels_last(self.model, cfg.channels_last)
        self.batch_size = cfg.batch_size
        self.sampler = crop_sampler(self.data.train, self.device, cfg.seed, cfg.augment)
        self.val = None
        if self.data.val is not None:
            vsize = max(self.patch_size, min(128, self.patch_size * 2))
            self.val = torch.from_numpy(validation_crops(self.data.val, vsize,
                                                         cfg.val_patches)).to(self.device)
        self.amp = amp_dtype(self.device) if cfg.amp else None
        self.base_lr = cfg.warm_lr if (self.warm_start and cfg.warm_lr) else cfg.lr
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._preview = (int(preview_frame), preview_region)
        self._preview_now = False
        #: compute previews at all (``preview_every`` says how often): api.train_stack turns
        #: them off when no callback receives the events
        self.previews = True
        self._result = None
        self._finished = False  # _finish ran (with or without a model)
        self._best_state = None
        self._good_state = None
        self.history: list[dict] = []  # validation history: step, val_error
        self._compiled = False
        self._gen = None
        self.step = 0
        self.elapsed = 0.0
        self._nan_retries = 0
        self._preview_oom_said = False
        self._val_batch = None
        self._best_val = math.inf
        self._loss, self._terms, self._rate = None, {}, None
        self._sched = self.method.schedule(0.0)
        self._lr = self.base_lr
        self._abort_hooks: list = []
        #: moving average of the weights (config.ema): what is validated and kept when on
        self.average = WeightAverage(self.model, cfg.ema if self.method.trainable else None)

    # ---- public control (thread-safe) --------------------------------------------------------
    def stop(self) -> None:
        """Ask training to end; the step in progress is dropped at its next layer (so a stop
        takes a fraction of a step on CPU) and the best/last model is kept."""
        self._stop.set()

    stopping = property(lambda self: self._stop.is_set(), doc="A stop was requested.")

    def set_preview(self, frame: int | None = None, region=None, now: bool = True) -> None:
        """Choose the frame (index over all frames) and region (y, x, h, w) shown in previews."""
        with self._lock:
            f = self._preview[0] if frame is None else int(frame)
            self._preview = (f, region)
            self._preview_now = now

    def result(self):
        """The trained :class:`Denoiser`: trains to the end first if iteration has not run.
        Raises :class:`TrainingError` when training ended before its first step (stopped at
        once, or a time budget too short for one step): there is no model to return."""
        if self._result is None and not self._finished:
            for _ in self:
                pass
        if self._result is None:
            if self._finished:
                raise TrainingError(
                    "training ended before its first step (stopped, or the time budget was too "
                    "short for one step): there is no trained model. Train longer")
            raise TrainingError("training ended with an error; no model was produced")
        return self._result

    def best_record(self) -> dict | None:
        """The validation record (step, val_error) with the lowest error so far."""
        return min(self.history, key=lambda r: r["val_error"]) if self.history else None

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return _ckpt.make_checkpoint(self)

    def save_checkpoint(self, path) -> None:
        _ckpt.save_checkpoint(self, path)

    @classmethod
    def resume(cls, checkpoint, stack, axes: str | None = None, device="auto", val_stack=None,
               steps: int | None = None, max_time: float | None = None,
               autosave: str | None = None, **changes) -> Trainer:
        """Continue training from an autosaved checkpoint (a path or a loaded dict) on the same
        stack. ``steps``/``max_time`` may extend the budget; other settings come from the file.
        ``autosave``: where to keep autosaving this time (None: nowhere — the path stored in
        the checkpoint is never written unless given again)."""
        return _ckpt.resume_trainer(cls, checkpoint, stack, axes, device, val_stack, steps,
                                    max_time, autosave, **changes)

    def _autosave(self) -> str | None:
        """Write the autosave; a failure (disk full, ...) is said and training goes on."""
        try:
            self.save_checkpoint(self.config.autosave)
        except OutputError as exc:
            return self._note(f"autosave failed ({exc}); training goes on without it")
        return None

    # ---- internals ---------------------------------------------------------------------------
    def _make_optimizer(self):
        if not self.method.trainable:  # a classical method: nothing to optimize
            return NoOptimizer()
        kw = dict(lr=self.base_lr, weight_decay=self.config.weight_decay)
        if self.device.type == "cuda":
            kw["fused"] = True
        return torch.optim.Adam(self.method.param_groups(self.model), **kw)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _maybe_compile(self):
        if not self.config.compile or self._compiled:
            return
        try:
            for m in self.method.modules_to_compile(self.model):
                m.compile(dynamic=False)
            self._compiled = True
        except Exception as exc:  # noqa: BLE001 - compile is an optimization only
            self._uncompile(exc)

    def _uncompile(self, exc: BaseException) -> None:
        for m in self.method.modules_to_compile(self.model):
            m._compiled_call_impl = None  # what Module.compile() set: back to eager
        self._compiled = False
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        self._note(f"torch.compile failed ({type(exc).__name__}: {first}); continuing "
                   "without it (pass compile=False to skip it)")

    def _guarded(self, fn, *args):
        """Run ``fn``; if torch.compile fails (it does so lazily, at the first call of each
        shape: no Triton, no C compiler, ...), fall back to eager mode and run it again."""
        try:
            return fn(*args)
        except Exception as exc:
            if not (self._compiled and is_compile_error(exc)):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self._uncompile(exc)
        return fn(*args)

    def _note(self, msg: str) -> str:
        self.messages.append(msg)
        warnings.warn(msg, stacklevel=2)
        return msg

    def _snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _progress(self, step: int, elapsed: float) -> float:
        cfg = self.config
        ps = step / cfg.steps if cfg.steps else 0.0
        pt = elapsed / cfg.max_time if cfg.max_time else 0.0
        return min(1.0, max(ps, pt))

    def _set_abortable(self, on: bool) -> None:
        """While a training step runs, every convolution first checks the stop flag, so a stop
        never waits for a whole step (seconds on a CPU with a large network). Not with
        torch.compile: a compiled graph would freeze the check (and CUDA steps are short)."""
        if on and not self._abort_hooks and not self._compiled:
            self._abort_hooks = abort_hooks(self.model, self._stop.is_set)
        elif not on:
            for h in self._abort_hooks:
                h.remove()
            self._abort_hooks = []

    # ---- validation and previews -------------------------------------------------------------
    def _validate_safe(self) -> float:
        return validate_safe(self)

    @torch.no_grad()
    def _validate(self, vb: int | None = None) -> float:
        self.model.eval()
        tot, n = 0.0, 0
        vb = max(1, vb or self.batch_size)
        # in fp32 even when training autocasts: checkpoints differ by fractions of a per cent
        # in this error, and bf16 moved it by 3 % (the run of tests/test_training.py's
        # test_validation_keeps_best_model, re-measured in fp32)
        for i in range(0, self.val.shape[0], vb):
            part = self.val[i:i + vb]
            tot += float(self.method.validation_error(self.model, part)) * part.shape[0]
            n += part.shape[0]
        self.model.train()
        return tot / n

    def _previews(self, sched) -> Preview:
        with self._lock:
            frame, region = self._preview
            self._preview_now = False
        return compute_preview(self.method, self.model, self.data.frames,
                               self.data.normalization, frame, region,
                               self.config.preview_size, sched, self._autocast, self.device)

    def _previews_safe(self, sched) -> Preview | None:
        """Previews are optional: out of GPU memory skips this one (said once) and goes on."""
        oom = False
        try:
            return self._guarded(self._previews, sched)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        if oom:
            release_memory(self.device)
            if not self._preview_oom_said:
                self._preview_oom_said = True
                self._note("out of GPU memory while computing a preview: previews are skipped "
                           "when memory is short; training goes on")
            return None

    # ---- one step ----------------------------------------------------------------------------
    def _train_step(self, sched_t, use_sched: bool) -> dict:
        """One optimization step; returns the loss terms as (unsynchronized) tensors."""
        batch = self.sampler.sample(self.batch_size, self.patch_size)
        with self._autocast():
            loss, terms = self.method.training_loss(
                self.model, batch, sched_t if use_sched else None)
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.method.clip_grad_norm:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.method.clip_grad_norm)
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            if self.method.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.method.clip_grad_norm)
            opt.step()
        self.average.update(self.model, self.step)
        return {k: v.detach().float() for k, v in terms.items()}

    def _step(self, sched_t, use_sched: bool):
        """A guarded step: returns its loss terms, or a message when the step did not happen
        (out of memory: the batch is halved; a stop request: the step is dropped)."""
        oom = False
        self._set_abortable(True)
        try:
            return self._guarded(self._train_step, sched_t, use_sched), None
        except StopNow:
            self.optimizer.zero_grad(set_to_none=True)
            return None, None
        except Exception as exc:
            if not is_oom(exc) or self.batch_size == 1:
                raise
            oom = True
        finally:
            self._set_abortable(False)
        if oom:  # handled outside the except block so the traceback frees its tensors
            self.optimizer.zero_grad(set_to_none=True)
            release_memory(self.device)
            self.batch_size = max(1, self.batch_size // 2)
            return None, self._note(
                f"out of GPU memory: continuing with batch size {self.batch_size}")

    def _rollback(self) -> str:
        """Non-finite loss: restore the last good weights and halve the learning rate."""
        self._nan_retries += 1
        self.model.load_state_dict(self._good_state)
        self.base_lr *= 0.5
        self.optimizer = self._make_optimizer()
        if self._nan_retries > self.config.max_nan_retries:
            self._stop.set()
            return self._note(
                f"the loss became NaN/Inf {self._nan_retries} times even after lowering the "
                "learning rate; training stopped with the last good weights. Check the input "
                "for extreme values")
        return self._note(
            f"the loss became NaN/Inf at step {self.step}; rolled back to the last good "
            f"weights and lowered the learning rate to {self.base_lr:.2g}")

    # ---- the loop: step -> record -> maybe validate -> maybe save -> maybe preview -----------
    def __iter__(self):
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def _run(self):
        t0 = time.perf_counter() - self.elapsed  # a resumed run continues its clock
        loop = self._train_loop(t0) if self.method.trainable else self._fit_loop(t0)
        try:
            yield from loop
        except BaseException as exc:
            # Ctrl-C or a closed generator keep what was learned; real errors propagate. The
            # GPU memory is released in every case.
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) and self._result is None:
                finish(self, stopped=True)
            self._cleanup()
            raise
        yield self._end(t0)

    def _train_loop(self, t0: float):
        cfg, method = self.config, self.method
        self.model.train()
        self._maybe_compile()
        self._acc, self._acc_n = {}, 0
        self._rate_mark = (time.perf_counter(), self.step)
        last_save = last_preview = time.perf_counter()
        self._good_state = self._snapshot()
        sched_t = torch.zeros((), device=self.device)
        while True:
            self.elapsed = time.perf_counter() - t0
            p = self._progress(self.step, self.elapsed)
            if p >= 1.0 or self._stop.is_set():
                return
            self._sched = sched = method.schedule(p)
            if sched is not None:
                sched_t.fill_(sched)  # a 0-d tensor: no recompiles as λ ramps
            self._lr = self.base_lr * lr_factor(p)
            for g in self.optimizer.param_groups:
                g["lr"] = self._lr * g.get("lr_scale", 1.0)
            terms, message = self._step(sched_t, sched is not None)
            if terms is None:
                if message:
                    yield self._event(message=message)
                continue
            self.step += 1
            message = self._record(terms)
            now = time.perf_counter()
            self.elapsed = now - t0
            validated = self._maybe_validate()
            if cfg.autosave and now - last_save >= cfg.autosave_every:
                message = self._autosave() or message
                last_save = time.perf_counter()
            previews = None
            if self._preview_due(now - last_preview):
                with self.average.applied(self.model):
                    previews = self._previews_safe(sched)
                last_preview = time.perf_counter()
            yield self._event(validated=validated, previews=previews, message=message)

    def _fit_loop(self, t0: float):
        """A classical method calibrates on training crops (one event per candidate)."""
        crops = validation_crops(self.data.train, max(self.patch_size, 128), 16)
        for done, total in self.method.fit(self.model, torch.from_numpy(crops).to(
                self.device)):
            self.config.steps = total
            self.step = done
            self.elapsed = time.perf_counter() - t0
            yield self._event()

    def _record(self, terms: dict) -> str | None:
        """Accumulate the step's loss terms; read them out every ``log_every`` steps (the only
        GPU synchronization), roll back on a non-finite loss, keep a good snapshot now and then,
        and update the steps/s rate."""
        cfg, step = self.config, self.step
        for k, v in terms.items():
            self._acc[k] = self._acc[k] + v if k in self._acc else v
        self._acc_n += 1
        message = None
        log_every = max(1, int(cfg.log_every or 1))
        if step % log_every == 0 or step == cfg.steps:
            vals = {k: float(v) / self._acc_n for k, v in self._acc.items()}
            self._acc, self._acc_n = {}, 0
            if all(math.isfinite(v) for v in vals.values()):
                self._terms, self._loss = vals, vals.get("loss")
                if step % (log_every * 10) == 0:
                    self._good_state = self._snapshot()
            else:
                message = self._rollback()
        now = time.perf_counter()
        mark_t, mark_step = self._rate_mark
        if now - mark_t >= 0.5 and step > mark_step:
            inst = (step - mark_step) / (now - mark_t)
            self._rate = inst if self._rate is None else 0.7 * self._rate + 0.3 * inst
            self._rate_mark = (now, step)
        return message

    def _maybe_validate(self) -> bool:
        if self.val is None or self.step % self.config.val_every != 0:
            return False
        with self.average.applied(self.model):
            err = self._validate_safe()
        self.history.append({"step": self.step, "val_error": err})
        if err < self._best_val:
            self._best_state = self.average.kept(self.model)
            self._best_val = err
        return True

    @property
    def _previews_on(self) -> bool:
        """Previews are computed at all: an interval is set and someone receives them."""
        return bool(self.config.preview_every) and self.previews

    def _preview_due(self, since_last: float) -> bool:
        """Every ``preview_every`` steps, when the view moved, or — so that slow steps on a
        large frame still show progress — every ``preview_seconds``."""
        cfg = self.config
        if not self._previews_on:
            return False
        return (self.step % cfg.preview_every == 0 or self._preview_now
                or bool(cfg.preview_seconds and since_last >= cfg.preview_seconds))

    def _end(self, t0: float) -> TrainEvent:
        cfg = self.config
        self.elapsed = time.perf_counter() - t0
        stopped = self._stop.is_set() and (cfg.steps is None or self.step < cfg.steps)
        if cfg.autosave and self.step > 0:
            self._autosave()
        finish(self, stopped)
        p = self._progress(self.step, self.elapsed)
        self._sched = self.method.schedule(p)
        previews = None
        if self._previews_on and self._result is not None and not stopped:
            previews = self._previews_safe(self._sched)
        self._cleanup()
        msg = (f"kept the {self._result.info['chosen']} model after {self.step} steps"
               if self._result is not None else "stopped before the first step: there is no model")
        return self._event(previews=previews, done=True, stopped=stopped, message=msg)

    def _cleanup(self) -> None:
        """Free the GPU: whatever ended the run (done, stop, error), nothing stays held."""
        self._set_abortable(False)
        self.sampler = Released(self.sampler)
        self.val = None
        self._best_state = None
        self._good_state = None
        self.average.release()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        if self.device.type != "cpu":  # the Denoiser holds its own CPU copy of the weights
            self.model.to("cpu")
        release_memory(self.device)

    def _event(self, **kw) -> TrainEvent:
        return build_event(self, **kw)
