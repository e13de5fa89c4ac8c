"""The verdict floor: per headline metric, the score below which a variant "does not work yet".

Why a floor: on a code set where every variant passed 5% of the tasks or fewer, the verdict
compared two failures and said "prompting is enough" (issue 30). The lesson there is that neither
works, and what to try next is a larger model, more rows or more steps, not a choice between the
two. :func:`ftkit.evaluation.verdict.advise` says *neither works yet* when every variant it
compares (the best prompt and the best tuned variant) scores below the floor of its metric.

The basis of each floor is what a variant that has not learned the task scores: chance, where a
closed label set makes chance a number; otherwise what a degenerate answer scores (a copy of the
input, or a fluent answer that belongs to another row), rounded up to a round figure. The numbers
are not fitted to one dataset. Where the built-in examples were checked, the check is said
(:mod:`ftkit.data.examples`, each answer scored against its own row's reference; "another row's
answer": the references shuffled with seed 0): the floor sits at or a little above it.

Every built-in metric is higher-is-better (``ftkit/evaluation/metrics.py``; the verdict picks the
best variant with ``idxmax``, and ``Task.higher_is_better`` is never read by it), so every floor
is a lower bound. A lower-is-better metric would need a ceiling, not a floor: it has none here,
and :func:`floor` returns None for it as for any metric not in the table, so the verdict behaves
as without a floor (only an exact 0 everywhere is "neither works yet").

>>> floor("pass_at_1"), floor("exact_match"), floor("exact_match", labels=4), floor("json_valid")
(0.1, 0.1, 0.25, None)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["FLOORS", "LABELLED", "Floor", "basis", "floor"]


@dataclass(frozen=True)
class Floor:
    """One metric's floor and why it is there."""

    value: float
    basis: str  # in a few words, shown beside the verdict
    reason: str  # the argument in full


# Metrics scored as "the one right label" over a closed set: with the label set known, chance is
# the floor (see `floor`); the fixed value below is for when it is not known.
LABELLED = ("exact_match", "label_accuracy")

FLOORS: dict[str, Floor] = {
    "pass_at_1": Floor(0.10, "fewer than 1 task in 10 solved", (
        "chance is 0 (an answer passes only when it passes every test of its task); the floor is where code "
        "starts to work: below 1 task in 10 solved, the few tasks solved are the easiest ones, and two "
        "variants differ by a handful of them")),
    "exact_match": Floor(0.10, "labels unknown: fewer than 1 row in 10 exactly right", (
        "with a closed label set of k labels, chance (a uniform guess) is 1/k; with the labels unknown, 0.10: "
        "chance for a 10-label set, and for open answers (where chance is near 0) fewer than 1 row in 10 "
        "exactly right. With fewer labels chance is higher than 0.10: pass labels")),
    "label_accuracy": Floor(0.10, "labels unknown: fewer than 1 row in 10 right", (
        "as exact_match: 1/k for k known labels, else 0.10")),
    "squad_exact_match": Floor(0.10, "fewer than 1 answer in 10 exactly right", (
        "as exact_match on open answers: chance is near 0, and fewer than 1 answer in 10 exactly right is not "
        "working yet")),
    "token_f1": Floor(0.10, "about what a copy of the question scores", (
        "a copy of the question shares a few words with a short answer, an unrelated answer fewer (0.057 and "
        "0.016 on shop_qa); below 0.10 an answer holds less than a tenth of the reference's words")),
    "rouge_l": Floor(0.15, "about what a fluent answer written for another row scores", (
        "two unrelated sentences in the same language share function words (the, to, of): a fluent answer "
        "written for another row scores about 0.1 to 0.15 (0.151 on shop_summaries, whose house format shares "
        "more). Copying the input scores more where references are extractive (0.251 there), so it is no floor")),
    "chrf": Floor(0.20, "about what an untranslated copy or unrelated text scores", (
        "unrelated text in the same language shares character n-grams, and an untranslated copy shares names, "
        "numbers and cognates: both score about 0.15 to 0.2 (0.183 and 0.176 on shop_translation)")),
    "bleu": Floor(0.05, "about what an untranslated copy or unrelated text scores", (
        "a copy of the source or a sentence about something else matches few 4-grams: about 0.01 to 0.04 "
        "(0.011 to 0.036 on shop_translation, corpus and sentence)")),
}


def _label_count(labels) -> int | None:
    """How many labels ``labels`` names: an int is the count, a collection its distinct members."""
    if labels is None:
        return None
    if isinstance(labels, int):
        return labels
    if isinstance(labels, Collection) and not isinstance(labels, str):
        return len(set(labels))
    raise TypeError(f"labels= takes the label set or its size, not {type(labels).__name__}")


def floor(metric: str, labels: int | Collection[str] | None = None) -> float | None:
    """The score below which a variant does not work yet on ``metric``: 1/k for a labelled metric
    (exact match, label accuracy) when ``labels`` (the label set, or its size k, 2 or more) is known,
    else the fixed floor of the table; None for a metric the table does not know.

    >>> floor("exact_match", labels=["refund", "shipping", "order_status", "other"])
    0.25
    >>> round(floor("exact_match", labels=77), 4), floor("exact_match", labels=1), floor("bleu", labels=4)
    (0.013, 0.1, 0.05)
    """
    k = _label_count(labels)
    if metric in LABELLED and k is not None and k >= 2:  # one label: "chance" would be 1, no floor to say
        return 1 / k
    known = FLOORS.get(metric)
    return known.value if known is not None else None


def basis(metric: str, labels: int | Collection[str] | None = None) -> str | None:
    """Why :func:`floor` is what it is for ``metric``, in a few words (None where it is None); the
    full argument is the table's ``reason``.

    >>> basis("exact_match", labels=4)
    'chance for 4 labels, 1/4'
    """
    k = _label_count(labels)
    if metric in LABELLED and k is not None and k >= 2:
        return f"chance for {k} labels, 1/{k}"
    known = FLOORS.get(metric)
    return known.basis if known is not None else None
