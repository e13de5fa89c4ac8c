"""The whole run's time budget: how long training may take so that ``ftkit run`` ends on time.

A run is prompt baselines, then training, then the tuned variants scored on the same rows, then
every variant timed. Only training can be made shorter without losing a figure, so it is what gives
way: once the baselines are scored (their minutes measured, not guessed), training gets the budget
less what has been spent and what is kept for the rest, judged from the baselines themselves (a
tuned variant answers the same rows as a baseline did; the timing phase has its own cap).

``PipelineConfig.max_minutes`` sets the budget; left unset it is 10 minutes on a CPU (a step there
takes seconds, and a first try should end in one sitting) and none on a GPU. 0 turns it off.

>>> share = training_share(600, spent_s=200, scoring_s=40, tuned=1, timed=4, timing_cap_s=120)
>>> round(share.seconds), share.over
(175, False)
>>> print(share.line)
Budget: 10m00s for the whole run; 3m20s spent, about 3m45s kept to score and time the tuned variant: training gets 2m55s
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BASELINE_SHARE", "MIN_TRAINING_S", "RUN_MINUTES_CPU", "Share", "duration", "run_budget_s",
           "training_share", "tuned_scoring_s"]

RUN_MINUTES_CPU = 10.0
# Training is never boxed below a minute: a run that trains for seconds teaches nothing, so a budget
# the baselines already spent is passed (and said so) rather than wasted on a token run.
MIN_TRAINING_S = 60.0
# The prompt baselines may take this share of the budget: with more held-out rows than they can
# answer in it, they answer a random sample (the same for every variant, tuned ones too; at least
# 32 rows, ftkit.evaluation.answering), so training keeps its share.
BASELINE_SHARE = 0.3
# Merging a run's adapter into the weights for scoring (served_model), per tuned variant.
MERGE_S = 20.0
# Kept besides, as a share of the budget: the end of training (its last sampling and save), the
# timing phase's last unit, which may pass its own cap, and the report. The built-in code example
# ended 23 s past a 10-minute budget without it.
SLACK_SHARE = 0.075


def run_budget_s(max_minutes: float | None, device_type: str) -> float:
    """The budget in seconds, 0 for none: ``max_minutes`` as set, else 10 minutes on a CPU.

    >>> run_budget_s(None, "cpu"), run_budget_s(None, "cuda"), run_budget_s(0, "cpu"), run_budget_s(4, "cuda")
    (600.0, 0.0, 0.0, 240.0)
    """
    if max_minutes is None:
        max_minutes = RUN_MINUTES_CPU if device_type == "cpu" else 0.0
    return float(max_minutes) * 60


def tuned_scoring_s(baseline_s: float, made_tokens: float, expected_tokens: float) -> float:
    """Seconds a tuned variant should take to answer the rows one baseline answered in ``baseline_s``.

    A tuned model answers about as long as the references (``expected_tokens``, their median),
    where a prompted one often runs on (``made_tokens``, the baselines' mean). Answering is mostly
    that, so the time is scaled by the ratio, but never below half: reading the prompts stays.
    SGD dialogues: the zero-shot prompt made 33 tokens a turn in 3 minutes; the tuned model, 11
    in 1m24s.

    >>> tuned_scoring_s(180, made_tokens=33.3, expected_tokens=12), tuned_scoring_s(60, 8, 9)
    (90.0, 60.0)
    """
    if made_tokens <= 0:
        return baseline_s
    return baseline_s * min(1.0, max(0.5, expected_tokens / made_tokens))


def duration(seconds: float) -> str:
    """``1m30s`` or ``45s``."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass(frozen=True)
class Share:
    """Training's share of the budget: ``seconds`` (at least :data:`MIN_TRAINING_S`), whether the
    run will pass its budget (``over``), and the console line that says how it was reckoned."""

    seconds: float
    over: bool
    line: str


def training_share(budget_s: float, spent_s: float, scoring_s: float, tuned: int, timed: int,
                   timing_cap_s: float) -> Share:
    """Seconds training may take within ``budget_s``, after ``spent_s`` already spent.

    ``scoring_s``: seconds one baseline variant took to answer the held-out rows (what a tuned
    variant will take, about); ``tuned``: tuned variants to come; ``timed``: variants the timing
    phase will time, within ``timing_cap_s``.

    >>> s = training_share(600, spent_s=590, scoring_s=60, tuned=1, timed=4, timing_cap_s=120)
    >>> s.seconds, s.over
    (60.0, True)
    >>> s.line.split("training gets ")[1][:60]
    'the minimum, 1m00s, so the run will pass its 10m00s by about'
    >>> s.line.split("by about ")[1][:5]
    '4m55s'
    """
    timing = min(timing_cap_s, timed * scoring_s)
    kept = tuned * (scoring_s + MERGE_S) + timing + SLACK_SHARE * budget_s
    left = budget_s - spent_s - kept
    seconds = max(MIN_TRAINING_S, left)
    variants = "the tuned variant" if tuned == 1 else f"the {tuned} tuned variants"
    head = (f"Budget: {duration(budget_s)} for the whole run; {duration(spent_s)} spent, about {duration(kept)} "
            f"kept to score and time {variants}")
    if left >= MIN_TRAINING_S:
        return Share(seconds, False, f"{head}: training gets {duration(seconds)}")
    return Share(seconds, True, f"{head}: training gets the minimum, {duration(seconds)}, so the run will pass its "
                 f"{duration(budget_s)} by about {duration(seconds - left)} (fewer held-out rows, data.test_size, "
                 "or a larger max_minutes; max_minutes: 0 for no budget)")
