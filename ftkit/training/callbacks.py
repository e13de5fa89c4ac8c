"""The TrainerCallback that feeds a run's :class:`~ftkit.training.events.EventBus`, and the trainer's
bar without its printed logs. They subclass transformers' callbacks, so this module imports
transformers; :mod:`ftkit.training.events` hands them out on first use.

>>> from ftkit.training.events import EventBus, StopFlag
>>> callback = EventCallback(EventBus(), StopFlag(), "run-1")
>>> callback.ended_by is None
True
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from transformers import ProgressCallback, TrainerCallback

from ftkit.runs import TIME_BUDGET, is_main_process

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["EventCallback", "LossBar", "SampleCallback"]


class EventCallback(TrainerCallback):
    """Translates the trainer's hooks into bus events and honours the stop flag, and, given the
    ``run``, a stop asked from another process (:meth:`ftkit.runs.Run.request_stop`).

    After training, ``ended_by`` is ``"time budget"`` when ``max_seconds`` ended the run before
    its planned last step (None otherwise), and ``summary`` holds the trainer's closing
    ``train_loss`` and ``train_runtime``: :func:`ftkit.training.trainer.train_and_record` puts both in
    the ``end`` event.
    """

    # ``bus`` is an ftkit.training.events.EventBus and ``stop`` a StopFlag; that module hands this
    # class out, so it is not imported back here, not even for the annotations.
    def __init__(self, bus, stop, run_id: str = "", max_seconds: float = 0,
                 run: Run | None = None):
        self.bus, self.stop, self.max_seconds, self.run = bus, stop, max_seconds, run
        self.run_id = run_id or (run.id if run is not None else "")
        self._t0 = self._tokens0 = self._last = None
        self._start_step, self._slowest = 0, 0.0
        self.ended_by: str | None = None
        self.summary: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last = time.perf_counter()
        self._start_step, self._tokens0 = state.global_step, state.num_input_tokens_seen
        self.ended_by, self.summary = None, {}
        self.bus.emit("start", {"run_id": self.run_id, "step": state.global_step, "max_steps": state.max_steps})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._slowest, self._last = max(self._slowest, now - self._last), now
        # A time limit ends the run before the step that would overrun it, judged by the
        # slowest step so far.
        over_time = bool(self.max_seconds) and now - self._t0 + self._slowest > self.max_seconds
        # A request file from another process: one stat per step, on the process that records.
        asked = self.run is not None and is_main_process() and self.run.stop_requested
        over_time, stop = _agree(args, over_time, bool(self.stop) or asked)
        if stop and not self.stop:
            self.stop.set()  # so train_and_record marks the run stopped, as for the flag
        if over_time:
            control.should_training_stop = True
            control.should_save = True
            # The budget ended it only if steps were left (and no stop asked, which names itself).
            if not stop and state.global_step < state.max_steps:
                self.ended_by = TIME_BUDGET
        if stop:
            control.should_training_stop = True
            control.should_save = True  # keep what the run has learned so far

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "train_loss" in logs:  # the closing summary: it goes out with "end"
            self.summary = {key: logs.get(key) for key in ("train_loss", "train_runtime")}
            return
        if any(k.startswith("eval_") for k in logs):
            return  # evaluation logs go out as "eval"
        elapsed = time.perf_counter() - self._t0
        done = state.global_step - self._start_step
        payload = {"step": state.global_step, "epoch": state.epoch, **logs}
        payload["learning_rate"] = logs.get("learning_rate")
        tokens = state.num_input_tokens_seen - (self._tokens0 or 0)
        payload["tokens_per_second"] = tokens / elapsed if elapsed > 0 and tokens else None
        left = state.max_steps - state.global_step
        payload["eta_s"] = elapsed / done * left if done > 0 else None
        self.bus.emit("log", payload)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.bus.emit("eval", {"step": state.global_step, **(metrics or {})})

    def on_save(self, args, state, control, **kwargs):
        folder = f"{args.output_dir}/checkpoint-{state.global_step}"
        self.bus.emit("checkpoint", {"step": state.global_step, "path": folder})


class SampleCallback(TrainerCallback):
    """Answers a few held-out rows before the first step and every ``every`` steps, and once more
    at the last step when it fell between two, and emits each sampling as a ``sample`` event (see
    :mod:`ftkit.training.samples`; :func:`ftkit.training.trainer.train_and_record` records it).

    A resumed run does not answer again at the step it resumes from: that sampling is recorded.
    After the run ``seconds`` holds the time its samplings took.
    """

    # The model is the trainer's (it hands it to every hook): the PEFT model it built, adapter on.
    def __init__(self, bus, tokenizer, samples, every: int):
        self.bus, self.tokenizer, self.samples, self.every = bus, tokenizer, samples, every
        self.seconds, self._last = 0.0, None

    def _sample(self, model, step: int) -> None:
        from ftkit.training.samples import sample_answers

        payload = sample_answers(model, self.tokenizer, self.samples, step)
        self.seconds += payload["seconds"]
        self._last = step
        self.bus.emit("sample", payload)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = state.global_step
        if state.global_step == 0:  # the base model's answers, for the table to show the change
            self._sample(kwargs["model"], 0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self._sample(kwargs["model"], state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        # The last answers, unless they were just sampled. Not after load_best_model_at_end: the
        # model then holds the best checkpoint's weights, not the last step's.
        if state.global_step != self._last and not args.load_best_model_at_end:
            self._sample(kwargs["model"], state.global_step)


class LossBar(ProgressCallback):
    """transformers' training bar with the last loss in its postfix, and nothing printed under it.

    transformers' own ``ProgressCallback.on_log`` writes every log dict under the bar
    (``training_bar.write(str(logs))``: ``{'loss': '0.3362', 'grad_norm': ...}`` at every logged
    step, and the closing ``train_runtime ... train_loss`` one); those numbers already go to the
    run's events (``log``, ``end``). :func:`ftkit.training.trainer.train_and_record` puts this bar in its
    place. It keeps the rest of ``ProgressCallback``: one tqdm.auto bar of ``max_steps``
    (a widget in a notebook), the evaluation's bar while it runs.
    """

    def __init__(self, max_str_len: int = 100):
        super().__init__(max_str_len)
        self._postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._postfix = {}
        super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None:
            return
        shown = {name: (logs or {}).get(key) for name, key in (("loss", "loss"), ("eval loss", "eval_loss"))}
        self._postfix.update({name: f"{v:.4g}" for name, v in shown.items() if isinstance(v, (int, float))})
        if self._postfix:
            self.training_bar.set_postfix(self._postfix)


def _agree(args, *decisions: bool) -> list[bool]:
    """Each decision as any process took it. Under a distributed launch, processes that stopped
    at different steps would wait forever for each other at the next gradient exchange (a stop
    file seen by one process a step before another, clocks apart); one tiny all-reduce per step
    makes them stop together. A single process returns its own decisions."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(decisions)
    import torch

    votes = torch.tensor([float(d) for d in decisions], device=args.device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]
