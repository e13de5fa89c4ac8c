"""A tiny event bus and the stop flag; the one TrainerCallback that feeds the bus, and the trainer's
bar without its printed logs, are in :mod:`ftkit.training.callbacks` (they need transformers, which
this module does not import: a panel or a script subscribes without loading it).

Events are named after trainer hooks and carry plain dicts:

=============  ==============================================================================
``start``      run id, total steps, number of training examples
``log``        step, loss, learning rate, grad norm, tokens per second, ETA, and any other
               number the trainer logged (DPO's rewards, margins and accuracies)
``eval``       step and the evaluation metrics
``checkpoint`` step and the checkpoint folder
``end``        step, ``max_steps`` (the planned steps), the final status (completed, stopped),
               ``ended_by`` (why it ended before its planned last step: ``"time budget"``,
               ``"stop requested"``, ``"interrupted"``; None when it ran its course or stopped
               early by the trainer's own rule, such as early stopping), and the trainer's
               closing ``train_loss`` and ``train_runtime`` (None when it never got there).
               A time budget ends the run with status completed: see ``ended_by``
``error``      the error message and, for out-of-memory errors, what to reduce
``sample``     a few held-out rows answered during training (SFT with ``sample_every``): step,
               ``seconds`` it took, ``max_new_tokens``, and ``rows``, each with the row's
               ``index``, ``prompt``, ``reference``, the model's ``answer`` and ``match`` (True
               or False for a short reference, None for a long one); see
               :mod:`ftkit.training.samples`
``curve``      a learning curve's point: training rows, run id, score with its interval, minutes
               (:func:`ftkit.evaluation.experiments.learning_curve`, after each size)
=============  ==============================================================================

Panels and the CLI subscribe with ``bus.on("log", fn)``; nothing else is needed to draw a live
chart. A run stops after its current step when its :class:`StopFlag` is set (a button in the same
kernel) or when any other process asks with :meth:`ftkit.runs.Run.request_stop`.

>>> bus = EventBus()
>>> seen = []
>>> _ = bus.on("log", seen.append)
>>> bus.emit("log", {"step": 1, "loss": 2.5})
>>> seen
[{'step': 1, 'loss': 2.5}]
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

__all__ = ["EVENTS", "EventBus", "EventCallback", "LossBar", "StopFlag"]

EVENTS = ("start", "log", "eval", "checkpoint", "end", "error", "curve", "sample")


class EventBus:
    """``on(name, fn)`` subscribes, ``emit(name, payload)`` calls every subscriber in order.

    A subscriber that raises is reported on stderr and unsubscribed: a broken chart must not stop
    a training run.
    """

    def __init__(self):
        self._subscribers: dict[str, list[Callable[[dict], None]]] = defaultdict(list)

    def on(self, name: str, fn: Callable[[dict], None]) -> Callable[[dict], None]:
        if name not in EVENTS:
            raise ValueError(f"unknown event {name!r}; events are: {', '.join(EVENTS)}")
        self._subscribers[name].append(fn)
        return fn

    def off(self, name: str, fn: Callable[[dict], None]) -> None:
        if fn in self._subscribers[name]:
            self._subscribers[name].remove(fn)

    def emit(self, name: str, payload: dict) -> None:
        for fn in list(self._subscribers[name]):
            try:
                fn(payload)
            except Exception as err:  # noqa: BLE001 - any subscriber bug is contained
                import sys

                print(f"ftkit: a subscriber to {name!r} failed and was removed: {err!r}", file=sys.stderr)
                self.off(name, fn)


class StopFlag:
    """A cooperative stop: set it from another thread (a button) and training ends after the
    current step, saving what it has."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def __bool__(self) -> bool:
        return self._event.is_set()


def __getattr__(name: str):
    """``EventCallback`` and ``LossBar``, from :mod:`ftkit.training.callbacks`, loaded on first use."""
    if name in ("EventCallback", "LossBar"):
        from ftkit.training.callbacks import EventCallback, LossBar

        return {"EventCallback": EventCallback, "LossBar": LossBar}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
