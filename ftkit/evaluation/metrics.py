"""Task metrics: plain functions ``(prediction, reference, row) -> float`` scored per example.

Per-example scores are what the evaluation averages and bootstraps. A corpus-level figure that
is not a mean of per-example scores (macro-F1) is computed from the parsed labels by
:func:`macro_f1`, which :func:`ftkit.evaluation.evaluate.evaluate` calls and bootstraps.

>>> exact_match("  Order_Status. ", "order_status")
1.0
>>> round(rouge_l("the cat sat on the mat", "the cat lay on the mat"), 3)
0.833
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Callable
from functools import partial
from typing import Protocol

from ftkit.evaluation.code_metrics import Scored, code_tests, pass_at_1

__all__ = [
    "BUILTIN", "CORPUS", "INVALID", "Metric", "bleu", "chrf", "code_tests", "corpus_score", "exact_match", "field_f1",
    "glossary_accuracy", "json_valid", "label_accuracy", "macro_f1", "make_label_accuracy", "matches", "normalize",
    "Scored", "paired_corpus_difference", "parse_label", "pass_at_1", "resolve", "rouge_l", "squad_exact_match",
    "token_f1", "within_words", "word_count",
]

INVALID = "(invalid)"
_EDGE = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002"


class Metric(Protocol):
    """Anything called as ``metric(prediction, reference, row) -> float``; ``__name__`` names it."""

    def __call__(self, prediction: str, reference: str, row: dict | None = None) -> float: ...


def normalize(text: str) -> str:
    """Case-folded, NFKC-normalized, inner whitespace collapsed, surrounding punctuation removed.

    Inner punctuation stays: ``order_status`` and ``order status`` are different strings.
    """
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.strip(_EDGE + " ")


def exact_match(prediction: str, reference: str, row: dict | None = None) -> float:
    """1.0 when the normalized strings are equal, else 0.0 (an empty prediction never matches)."""
    pred = normalize(prediction)
    return float(bool(pred) and pred == normalize(reference))


# --- classification ---------------------------------------------------------------------------

def _label_key(text: str) -> str:
    # "Order status", "order-status" and "ORDER_STATUS" name the same label.
    return re.sub(r"[\s_\-]+", "_", normalize(text))


def parse_label(prediction: str, labels: list[str]) -> str:
    """The label a prediction names, or ``INVALID``.

    The rule: the whole output, normalized and with spaces, hyphens and underscores treated
    alike, must equal one label. An output that merely mentions a label among other words
    ("It is order_status or billing_issue") is invalid, not guessed at.

    >>> parse_label("Order status.", ["order_status", "billing_issue"])
    'order_status'
    >>> parse_label("maybe billing_issue?", ["order_status", "billing_issue"])
    '(invalid)'
    """
    keys = {_label_key(label): label for label in labels}
    return keys.get(_label_key(prediction), INVALID)


def label_accuracy(prediction: str, reference: str, row: dict | None = None, *, labels: list[str]) -> float:
    """1.0 when the prediction parses to the reference label (see :func:`parse_label`)."""
    return float(parse_label(prediction, labels) == reference)


def make_label_accuracy(labels: list[str]) -> Metric:
    """``label_accuracy`` bound to a label set, named for the evaluation table."""
    metric = partial(label_accuracy, labels=sorted(labels))
    metric.__name__ = "label_accuracy"
    return metric


def macro_f1(parsed, references, labels: list[str]) -> float:
    """Macro-F1 of already parsed labels (see :func:`parse_label`) against the references.

    >>> macro_f1(["a", "a", INVALID, "b"], ["a", "b", "b", "b"], ["a", "b"])
    0.5833333333333333
    """
    f1s = []
    for label in labels:
        tp = sum(p == r == label for p, r in zip(parsed, references))
        n_pred = sum(p == label for p in parsed)
        n_ref = sum(r == label for r in references)
        if n_pred == n_ref == 0:
            continue
        f1s.append(2 * tp / (n_pred + n_ref))
    return sum(f1s) / len(f1s) if f1s else 0.0


# --- generation quality ---------------------------------------------------------------------

class _UnicodeTokenizer:
    """rouge-score's default tokenizer drops every non-ASCII letter; this one keeps them."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


_ROUGE = None


def rouge_l(prediction: str, reference: str, row: dict | None = None) -> float:
    """ROUGE-L F-measure (rouge-score's implementation, with a Unicode-aware tokenizer)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())
    return _ROUGE.score(reference, prediction)["rougeL"].fmeasure


def chrf(prediction: str, reference: str, row: dict | None = None) -> float:
    """Sentence chrF from sacrebleu, scaled to 0..1."""
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score / 100


def bleu(prediction: str, reference: str, row: dict | None = None) -> float:
    """Sentence BLEU from sacrebleu (exponential smoothing), scaled to 0..1.

    The mean of sentence BLEU is not corpus BLEU; it is used here because it has a per-example
    value to bootstrap and to compare pairwise.
    """
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score / 100


# BLEU and chrF are corpus statistics: a corpus score is not the mean of sentence scores. The
# per-example (sentence) scores above fill the table and decide wins and ties; summaries and
# paired comparisons use the corpus score, through sacrebleu.
CORPUS = ("bleu", "chrf")


def _corpus_metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    if name not in CORPUS:
        raise ValueError(f"{name!r} has no corpus-level form; corpus metrics are: {', '.join(CORPUS)}")
    return BLEU() if name == "bleu" else CHRF()


def corpus_score(name: str, predictions: list[str], references: list[str],
                 n_boot: int = 1000) -> tuple[float, float, float]:
    """Corpus BLEU or chrF (0..1) with sacrebleu's own 95% bootstrap interval: ``(score, low, high)``.

    The interval is sacrebleu's (its bootstrap mean plus and minus half the 95% range), read
    through its public ``format``.

    >>> round(corpus_score("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"], n_boot=1)[0], 3)
    1.0
    """
    metric = _corpus_metric(name)
    score = metric.corpus_score(list(predictions), [list(references)],
                                n_bootstrap=n_boot if len(predictions) > 1 else 1)
    value = score.score / 100
    if n_boot <= 1 or len(predictions) < 2:
        return value, value, value
    shown = json.loads(score.format(width=12, signature=metric.get_signature().format(), is_json=True))
    if "confidence_mean" not in shown:  # every resample scored 0: sacrebleu shows no interval
        return value, value, value
    mean, half = shown["confidence_mean"], shown["confidence_var"]
    return value, (mean - half) / 100, (mean + half) / 100


def paired_corpus_difference(name: str, a: list[str], b: list[str], references: list[str],
                             n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Corpus score of ``a`` minus that of ``b`` on the same references, with the 95% interval of
    paired bootstrap resampling (the same resampled rows for both, as sacrebleu's paired test
    does): ``(difference, low, high)``.

    A resample's corpus score comes from the per-sentence statistics summed over its rows
    (:mod:`ftkit.fastpath.bleu`) where the fast paths are on; otherwise sacrebleu scores each
    resampled corpus again (the same figures, slower)."""
    import numpy as np

    from ftkit import fastpath

    metric = _corpus_metric(name)
    rows = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    if fastpath.enabled("sacrebleu"):
        from ftkit.fastpath.bleu import corpus_statistics, score_from_statistics

        refs = [list(references)]
        stats_a, stats_b = corpus_statistics(metric, list(a), refs), corpus_statistics(metric, list(b), refs)
        score = lambda stats: score_from_statistics(metric, stats.sum(0)) / 100  # noqa: E731
        actual = score(stats_a) - score(stats_b)
        diffs = [score(stats_a[i]) - score(stats_b[i]) for i in rows]
    else:
        def score(hyps, picked):
            return metric.corpus_score([hyps[j] for j in picked], [[references[j] for j in picked]]).score / 100

        everything = range(len(a))
        actual = score(a, everything) - score(b, everything)
        diffs = [score(a, i) - score(b, i) for i in rows]
    return actual, float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


# --- question answering ---------------------------------------------------------------------

def _squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _answers(reference: str, row: dict | None) -> list[str]:
    answers = (row or {}).get("answers")
    return [str(a) for a in answers] if isinstance(answers, (list, tuple)) and answers else [reference]


def squad_exact_match(prediction: str, reference: str, row: dict | None = None) -> float:
    """1.0 when the prediction equals an accepted answer after SQuAD normalization (a row's
    ``answers`` list, else the reference).

    >>> squad_exact_match("The 30 days.", "30 days")
    1.0
    """
    pred = _squad_normalize(prediction)
    return float(any(pred == _squad_normalize(a) for a in _answers(reference, row)))


def token_f1(prediction: str, reference: str, row: dict | None = None) -> float:
    """SQuAD's token F1: overlap of normalized tokens, the best over the accepted answers.

    >>> round(token_f1("within 30 days of delivery", "30 days"), 3)  # P 2/5, R 2/2
    0.571
    """
    from collections import Counter

    pred = _squad_normalize(prediction).split()
    best = 0.0
    for answer in _answers(reference, row):
        gold = _squad_normalize(answer).split()
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# --- house rules: length, format, terminology -----------------------------------------------

def word_count(text: str) -> int:
    return len(text.split())


def within_words(limit: int) -> Metric:
    """1.0 when the prediction has at most ``limit`` words (named ``within_<limit>_words``).

    >>> within_words(3)("one two three", ""), within_words(3)("one two three four", "")
    (1.0, 0.0)
    """
    def metric(prediction: str, reference: str, row: dict | None = None) -> float:
        return float(0 < word_count(prediction) <= limit)

    metric.__name__ = f"within_{limit}_words"
    return metric


def matches(pattern: str, name: str) -> Metric:
    """1.0 when the whole prediction (stripped) matches the regular expression ``pattern``."""
    compiled = re.compile(pattern, flags=re.S)

    def metric(prediction: str, reference: str, row: dict | None = None) -> float:
        return float(compiled.fullmatch(prediction.strip()) is not None)

    metric.__name__ = name
    return metric


def glossary_accuracy(prediction: str, reference: str, row: dict | None = None) -> float:
    """The share of the row's required glossary terms (``row["terms"]``: ``{"en", "de"}`` dicts)
    whose target form the prediction uses, case-insensitively; 1.0 for a row with no terms.

    >>> glossary_accuracy("Ihr Geschenkgutschein", "", {"terms": [{"en": "gift card", "de": "Geschenkgutschein"}]})
    1.0
    """
    terms = (row or {}).get("terms") or []
    if not terms:
        return 1.0
    text = prediction.casefold()
    return sum(t["de"].casefold() in text for t in terms) / len(terms)


# --- structured output ----------------------------------------------------------------------

def _parse_json(text: str):
    """Parse JSON, also from inside a ```json fenced block; None when it is not JSON."""
    text = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def json_valid(prediction: str, reference: str | None = None, row: dict | None = None) -> float:
    """1.0 when the output parses as a JSON object or array."""
    return float(isinstance(_parse_json(prediction), (dict, list)))


def _fields(obj, prefix: str = "") -> set[tuple[str, str]]:
    if isinstance(obj, dict):
        out = set()
        for key, value in obj.items():
            out |= _fields(value, f"{prefix}{key}.")
        return out
    if isinstance(obj, list):
        return {(prefix.rstrip("."), json.dumps(v, sort_keys=True, ensure_ascii=False)) for v in obj}
    return {(prefix.rstrip("."), normalize(str(obj)))}


def field_f1(prediction: str, reference: str, row: dict | None = None) -> float:
    """F1 over (field path, value) pairs of two JSON objects; values compared normalized.

    Both empty: 1.0. A prediction that is not a JSON object: 0.0.

    >>> field_f1('{"time": "7pm", "people": 2}', '{"people": "2", "time": "7 pm"}')
    0.5
    """
    pred, ref = _parse_json(prediction), _parse_json(reference)
    if not isinstance(pred, dict):
        return 0.0
    if not isinstance(ref, dict):
        raise ValueError(f"the reference is not a JSON object: {reference[:80]!r}")
    p, r = _fields(pred), _fields(ref)
    if not p and not r:
        return 1.0
    return 2 * len(p & r) / (len(p) + len(r))


BUILTIN: dict[str, Callable] = {
    "exact_match": exact_match,
    "squad_exact_match": squad_exact_match,
    "token_f1": token_f1,
    "glossary_accuracy": glossary_accuracy,
    "rouge_l": rouge_l,
    "chrf": chrf,
    "bleu": bleu,
    "json_valid": json_valid,
    "field_f1": field_f1,
    "pass_at_1": pass_at_1,
}


def resolve(metrics) -> dict[str, Callable]:
    """Metric names or callables (or a dict of them) as ``{name: callable}``."""
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        items = []
        for m in [metrics] if isinstance(metrics, str) or callable(metrics) else metrics:
            if isinstance(m, str):
                if m not in BUILTIN:
                    raise ValueError(f"unknown metric {m!r}; built-in metrics are: {', '.join(BUILTIN)}, "
                                     "or pass any callable (prediction, reference, row) -> float")
                items.append((m, BUILTIN[m]))
            elif callable(m):
                items.append((getattr(m, "__name__", type(m).__name__), m))
            else:
                raise TypeError(f"a metric must be a name or a callable, not {type(m).__name__}")
    return dict(items)
