"""Plain-language readings of a training run: what its curves say and what it cost.

The live panel and a script read a run the same way:

>>> read_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.2}],
...             [{"step": 1, "eval_loss": 1.5}, {"step": 2, "eval_loss": 1.6},
...              {"step": 3, "eval_loss": 1.7}, {"step": 4, "eval_loss": 1.8}])
'evaluation loss has risen for 3 evaluations: likely overfitting; stop here, train fewer epochs or set early_stopping_patience'
"""

from __future__ import annotations

import math

__all__ = ["read_curves", "training_cost"]

# Rules of thumb behind the readings; each number was chosen to keep a noisy short run from
# triggering a reading on one unlucky batch.
RISING_EVALS = 2  # consecutive rises of the evaluation loss before calling it overfitting
WINDOW = 5  # logged steps averaged at each end of the training curve
FLAT = 0.02  # relative change of the windowed loss below which the curve counts as flat


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def read_curves(logs: list[dict], evals: list[dict] = ()) -> str:
    """One sentence for a learner about the curves so far.

    ``logs`` are ``log`` events (``loss``, and for DPO ``rewards/accuracies``), ``evals`` are
    ``eval`` events (``eval_loss``), oldest first: the payloads of :mod:`ftkit.training.events`.

    >>> read_curves([{"step": s, "loss": 3.0 - 0.2 * s} for s in range(1, 11)])
    'training loss is falling (2.80 -> 1.00)'
    """
    losses = [e["loss"] for e in logs if e.get("loss") is not None]
    if not losses:
        return "no loss logged yet"
    if not all(math.isfinite(x) for x in losses):
        return "the loss is not a number: the learning rate is probably too high; lower it and start again"
    eval_losses = [e["eval_loss"] for e in evals if e.get("eval_loss") is not None]
    rises = 0
    for before, after in zip(eval_losses[::-1][1:], eval_losses[::-1]):
        if after <= before:
            break
        rises += 1
    if rises >= RISING_EVALS:
        return (f"evaluation loss has risen for {rises} evaluations: likely overfitting; stop here, "
                "train fewer epochs or set early_stopping_patience")
    accuracies = [e["rewards/accuracies"] for e in logs if e.get("rewards/accuracies") is not None]
    preference = (f"; the model prefers the chosen answer in {accuracies[-1]:.0%} of the last pairs"
                  if accuracies else "")
    if len(losses) < 2:
        return f"training loss {losses[0]:.2f} after the first logged step{preference}"
    window = min(WINDOW, len(losses) // 2) or 1
    first, last = _mean(losses[:window]), _mean(losses[-window:])
    change = (last - first) / abs(first) if first else 0.0
    if change > FLAT:
        return (f"training loss is rising ({first:.2f} -> {last:.2f}): the learning rate may be too "
                f"high{preference}")
    if change > -FLAT:
        return f"training loss has flattened near {last:.2f}: more steps will change little{preference}"
    if eval_losses and rises == 1:
        return f"training loss is falling, but the last evaluation loss rose: watch the next one{preference}"
    return f"training loss is falling ({losses[0]:.2f} -> {losses[-1]:.2f}){preference}"


def training_cost(run) -> dict:
    """What a run cost: optimizer ``steps``, wall ``seconds`` from start to end, and ``tokens``
    seen (when the trainer counted them), read from the run's record.

    >>> training_cost(run)  # doctest: +SKIP
    {'steps': 40, 'seconds': 183.2, 'tokens': 51230}
    """
    seconds, started, last, tokens = None, None, None, None
    for event in run.events():
        kind = event.get("event")
        if kind == "start":
            if started is not None and last is not None:  # a stretch cut off: count it to its last event
                seconds = (seconds or 0.0) + last - started
            started = event["time"]
        elif kind == "end" and started is not None:  # a resumed run adds each stretch it trained
            seconds, started = (seconds or 0.0) + event["time"] - started, None
        elif kind == "log" and event.get("num_input_tokens_seen"):
            tokens = event["num_input_tokens_seen"]
        if kind not in ("resume", "preflight"):  # written by the next stretch, before its start
            last = event.get("time", last)
    return {"steps": run.status.get("step"), "seconds": seconds, "tokens": tokens}

