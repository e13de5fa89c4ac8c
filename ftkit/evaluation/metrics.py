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

import ast
import json
import re
import string
import unicodedata
from collections.abc import Callable
from functools import partial
from typing import Protocol

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

    >>> round(corpus_score("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"], n_boot=1)[0], 3)
    1.0
    """
    score = _corpus_metric(name).corpus_score(list(predictions), [list(references)],
                                              n_bootstrap=n_boot if len(predictions) > 1 else 1)
    if n_boot <= 1 or len(predictions) < 2:
        return score.score / 100, score.score / 100, score.score / 100
    return score.score / 100, (score._mean - score._ci) / 100, (score._mean + score._ci) / 100


def paired_corpus_difference(name: str, a: list[str], b: list[str], references: list[str],
                             n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Corpus score of ``a`` minus that of ``b`` on the same references, with the 95% interval of
    paired bootstrap resampling (the same resampled rows for both, as sacrebleu's paired test
    does): ``(difference, low, high)``."""
    import numpy as np

    metric = _corpus_metric(name)
    refs = [list(references)]
    # sacrebleu keeps sufficient statistics per sentence; a corpus score is computed from their sum.
    stats_a = np.array(metric._extract_corpus_statistics(list(a), refs), dtype="float64")
    stats_b = np.array(metric._extract_corpus_statistics(list(b), refs), dtype="float64")
    score = lambda stats: metric._compute_score_from_stats(list(stats.sum(0))).score / 100  # noqa: E731
    actual = score(stats_a) - score(stats_b)
    rows = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    diffs = [score(stats_a[i]) - score(stats_b[i]) for i in rows]
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


# --- code: the generated program runs against the row's tests, in a sandbox -------------------

class Scored(float):
    """A score that carries a note on why, shown beside the answer (a test's verdict).

    >>> s = Scored(0.0, "assert failed: assert f(2) == 4"); float(s), s.note
    (0.0, 'assert failed: assert f(2) == 4')
    """

    note: str

    def __new__(cls, value: float, note: str = ""):
        out = super().__new__(cls, value)
        out.note = note
        return out


# What a code row must hold, for the error messages.
_TESTS_FORMAT = ("a 'tests' (or HumanEval's 'test') column holding one program, as a string (e.g. a "
                 "'def check(candidate):' with an 'entry_point' column naming the function), or a list of "
                 "programs run in order (e.g. MBPP's assert lines; in a CSV cell, that list as JSON); "
                 "'test_setup', optional, runs after the code, before the tests")


def code_tests(row: dict | None) -> list[str]:
    """The programs that test a code row's answer, in the order :func:`pass_at_1` runs them.

    ``tests`` (or HumanEval's ``test``) holds either ONE program, as a string, never split into
    lines (a ``def check(candidate):`` or a ``for`` loop of asserts spans many), or a list of
    programs, each run after the one before, as MBPP's assert list is. A string that parses as a
    JSON list of strings (how a CSV cell holds a list) is that list. When the programs define
    ``check`` and never call it, ``check(<entry_point>)`` runs after them, as HumanEval's harness
    does: ``entry_point`` is the column that names the function.

    >>> code_tests({"tests": '["assert f(1) == 2", "assert f(2) == 3"]'})
    ['assert f(1) == 2', 'assert f(2) == 3']
    >>> code_tests({"test": "def check(candidate):\\n    assert candidate(1) == 2", "entry_point": "f"})[-1]
    'check(f)'
    """
    row = row or {}
    column = next((c for c in ("tests", "test") if _filled(row.get(c))), None)
    if column is None:
        raise ValueError(f"pass_at_1 needs the row's tests: {_TESTS_FORMAT}; this row has: "
                         f"{', '.join(map(str, row)) or 'no columns'}")
    value = row[column]
    value = value.tolist() if hasattr(value, "tolist") else value   # a numpy array from a data frame
    if isinstance(value, str):
        listed = _json_list(value)
        programs = [value] if listed is None else listed
    elif not isinstance(value, (list, tuple)):
        raise ValueError(f"the row's {column!r} is {type(value).__name__}; pass_at_1 needs {_TESTS_FORMAT}")
    else:
        programs = list(value)
        for i, program in enumerate(programs):
            if not isinstance(program, str):
                raise ValueError(f"item {i} of {column!r} is {type(program).__name__}, not a program: {program!r}; "
                                 "give each test as Python source text, e.g. 'assert f(2) == 4'")
    programs = [p for p in programs if p.strip()]   # a blank item tests nothing
    if not programs:   # else any answer would pass
        raise ValueError(f"the row's {column!r} column holds no test program; pass_at_1 needs {_TESTS_FORMAT}")
    if _defines_uncalled_check(programs):
        entry = row.get("entry_point")
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"the row's {column!r} defines check(candidate) but never calls it, so it would test "
                             "nothing: add an 'entry_point' column naming the function to test (check(<entry_point>) "
                             "then runs after it, as in HumanEval), or call check(...) in the tests")
        programs.append(f"check({entry.strip()})")   # its own item: a failure names the call
    return programs


def _filled(value) -> bool:
    """Whether a cell holds something: not missing, NaN (a data frame's empty cell), '' or []."""
    if value is None or isinstance(value, float):
        return False
    if isinstance(value, str):
        return bool(value.strip())
    return not hasattr(value, "__len__") or len(value) > 0


def _json_list(text: str) -> list[str] | None:
    """The list a JSON-list-of-strings cell holds; None for anything else (then it is Python)."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _defines_uncalled_check(programs: list[str]) -> bool:
    """Whether a top-level ``def check`` is in the programs and no call ``check(...)`` is."""
    defines = calls = False
    for program in programs:
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError):   # the sandbox reports it, quoting the line
            continue
        defines |= any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "check" for n in tree.body)
        calls |= any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"
                     for n in ast.walk(tree))
    return defines and not calls


def pass_at_1(prediction: str, reference: str | None = None, row: dict | None = None) -> float:
    """1.0 when the code in ``prediction`` (fenced or bare) passes every test of the row, else 0.0.

    The row's tests are one program (HumanEval's ``check(candidate)``, called on the row's
    ``entry_point`` when it is not called) or a list of programs (MBPP's asserts); each runs after
    the code, in order, in the tests' own process; ``test_setup``, if any, runs before them (see
    :func:`code_tests`). The code runs in :mod:`ftkit.evaluation.sandbox`: another process, with limits on
    time, memory, processes and output, no network and no inherited environment; never in this
    process. The result is a :class:`Scored` whose note says what happened ("passed", which assert
    failed, "timed out after 5 s").

    >>> row = {"test": "def check(candidate):\\n    assert candidate(2) == 4", "entry_point": "double"}
    >>> pass_at_1("def double(x):\\n    return 2 * x", None, row).note
    'passed'
    """
    from ftkit.evaluation import sandbox

    programs = code_tests(row)
    setup = row.get("test_setup")
    code = sandbox.extract_code(prediction)
    outcome = sandbox.run_tests(code, programs, setup if isinstance(setup, str) else "")
    return Scored(1.0 if outcome.passed else 0.0, outcome.reason)


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
