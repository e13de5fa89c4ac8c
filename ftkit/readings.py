"""Plain-language readings of a training run: what its curves say and what it cost.

The live panel and a script read a run the same way:

>>> read_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.2}],
...             [{"step": 1, "eval_loss": 1.5}, {"step": 2, "eval_loss": 1.6},
...              {"step": 3, "eval_loss": 1.7}, {"step": 4, "eval_loss": 1.8}])
'evaluation loss has risen for 3 evaluations: likely overfitting; stop here, train fewer epochs or set early_stopping_patience'
"""

from __future__ import annotations

import math

__all__ = ["prompt_or_tune", "read_curves", "training_cost", "verdict"]

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
    ``eval`` events (``eval_loss``), oldest first: the payloads of :mod:`ftkit.events`.

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


def prompt_or_tune(result, metric: str, prompts: list[str], tuned: str, run=None) -> dict:
    """One scenario's answer to "prompt or fine-tune?", from an evaluation of prompt variants and
    a tuned variant on the same rows: the best prompt on ``metric``, the tuned score, their paired
    difference with its 95% interval, prompt tokens per request of both, and training minutes.

    >>> row = prompt_or_tune(result, "rouge_l", ["zero-shot", "2-shot"], "LoRA SFT", run)  # doctest: +SKIP
    >>> verdict(row)                                                                       # doctest: +SKIP
    ('fine-tuning pays', 'LoRA SFT beats 2-shot by +0.12 rouge_l (95% CI +0.05 to +0.19), ...')
    """
    summary = result.summary
    best = summary.loc[prompts, metric].idxmax()
    gain = result.compare(tuned, best, metric)
    seconds = training_cost(run)["seconds"] if run is not None else None
    return {"metric": metric, "zero-shot": summary.loc[prompts[0], metric], "best prompt": best,
            "best prompt score": summary.loc[best, metric], "tuned": summary.loc[tuned, metric],
            "tuned - best prompt": gain.mean_diff, "CI low": gain.ci_low, "CI high": gain.ci_high,
            "wins/ties/losses": f"{gain.wins}/{gain.ties}/{gain.losses}",
            "prompt tokens (best prompt)": summary.loc[best, "prompt_tokens"],
            "prompt tokens (tuned)": summary.loc[tuned, "prompt_tokens"],
            "training minutes": (seconds or 0.0) / 60, "eval rows": len(result.table)}


def verdict(row: dict) -> tuple[str, str]:
    """The verdict on one :func:`prompt_or_tune` row, and why, in words. The interval decides,
    not the two scores: above 0 fine-tuning pays; below 0 prompting is enough; spanning 0, the
    prompt tokens decide (a prompt no longer than the tuned model's needs no training). When
    nothing scores above 0, neither works yet.

    >>> row = {"metric": "pass_at_1", "best prompt": "2-shot", "best prompt score": 0.0, "tuned": 0.0,
    ...        "tuned - best prompt": 0.0, "CI low": 0.0, "CI high": 0.0, "prompt tokens (best prompt)": 520,
    ...        "prompt tokens (tuned)": 140, "training minutes": 3.7}
    >>> verdict(row)[0]
    'neither works yet'
    >>> better = {**row, "best prompt score": 0.1, "tuned": 0.3, "tuned - best prompt": 0.2, "CI low": 0.1,
    ...           "CI high": 0.3}
    >>> verdict(better)[1].split(", sending")[0]
    'the tuned model beats 2-shot by +0.20 pass_at_1 (95% CI +0.10 to +0.30)'
    """
    extra = row["prompt tokens (best prompt)"] - row["prompt tokens (tuned)"]
    interval = (f"{row['tuned - best prompt']:+.2f} {row['metric']} (95% CI {row['CI low']:+.2f} to "
                f"{row['CI high']:+.2f})")
    minutes = f"{row['training minutes']:.1f} minutes of training"
    if row["best prompt score"] == 0 and row["tuned"] == 0:
        return "neither works yet", (f"no answer scores above 0 on {row['metric']}, prompted or tuned: a larger "
                                     "model, or more training data and time, before choosing between them")
    if row["CI low"] > 0:
        tokens = (f", sending {row['prompt tokens (tuned)']:.0f} instead of {row['prompt tokens (best prompt)']:.0f} "
                  "prompt tokens per request" if round(extra) > 0 else "")
        return "fine-tuning pays", f"the tuned model beats {row['best prompt']} by {interval}{tokens}, for {minutes}"
    if row["CI high"] < 0:
        return "prompting is enough", f"{row['best prompt']} beats the tuned model: {interval}; no training needed"
    if extra <= 0:
        return "prompting is enough", (f"no difference these rows can see ({interval}), and {row['best prompt']} "
                                       "costs no more prompt tokens per request than the tuned model")
    return "a tie on quality; fine-tuning saves prompt tokens", (
        f"no difference these rows can see ({interval}); {row['best prompt']} sends {extra:.0f} more prompt "
        f"tokens per request, which {minutes} remove")
