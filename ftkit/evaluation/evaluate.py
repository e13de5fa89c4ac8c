"""Run prompt and model variants on the same rows and compare them with honest error bars.

A variant is a model (optionally with a PEFT adapter switched on or off) plus a prompt template.
:func:`evaluate` runs each on every row and returns plain data: a per-example table, a summary
with 95% bootstrap confidence intervals, and paired comparisons between variants.

>>> result = evaluate([zero, few], test, metrics=["exact_match"])  # doctest: +SKIP
>>> result.summary                                                # doctest: +SKIP
>>> print(result.compare("8-shot", "zero-shot"))                  # doctest: +SKIP
8-shot vs zero-shot on exact_match: +0.21 (95% CI +0.13 to +0.29); wins 21, ties 75, losses 0
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ftkit.data.canonical import as_rows, find_overlap
from ftkit.evaluation import metrics as M
from ftkit.evaluation.answering import answer_rows
from ftkit.evaluation.metrics import normalize
from ftkit.generation.generate import LocalModel, as_backend
from ftkit.generation.timing import INTERACTIVE_ROWS, Timing, rows_to_answer, time_variants

__all__ = ["Comparison", "EvalResult", "Template", "Variant", "bootstrap_ci", "constrained", "conversation_text",
           "evaluate", "pairs_from_ratings"]


class Template(Protocol):
    """Anything with a ``name`` and ``messages(row) -> list of {role, content}``."""

    name: str

    def messages(self, row: dict) -> list[dict]: ...


@dataclass
class Variant:
    """One thing to evaluate: a model and a template, and which adapter is on.

    ``adapter``: ``None`` uses the model as it is; ``False`` switches PEFT adapters off (the base
    model, without loading it again); a name enables that adapter. ``model`` may be any generation
    :class:`~ftkit.generation.backend.Backend`, such as a hosted
    :class:`~ftkit.generation.endpoint.Endpoint` (``tokenizer=None``); give it a ``name`` that says so.
    """

    model: Any
    tokenizer: Any
    template: Template
    name: str | None = None
    adapter: Any = None
    max_new_tokens: int = field(default=32, metadata={"help": "Longest answer, in tokens"})
    stop_strings: tuple[str, ...] = field(default=(), metadata={
        "help": "Generation ends at any of these strings, cut from the answer (a task's stop strings)"})
    answer_end: str | None = field(default=None, metadata={
        "help": "Generation ends where the answer does: 'code block' or 'first line' (a task's answer_end)"})

    def __post_init__(self):
        self.name = self.name or self.template.name


@dataclass
class Comparison:
    """A paired comparison of two variants on one metric, row by row."""

    a: str
    b: str
    metric: str
    mean_diff: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int

    @property
    def significant(self) -> bool:
        """True when the 95% interval of the difference excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0

    def __str__(self) -> str:
        return (f"{self.a} vs {self.b} on {self.metric}: {self.mean_diff:+.2f} (95% CI "
                f"{self.ci_low:+.2f} to {self.ci_high:+.2f}); wins {self.wins}, ties {self.ties}, "
                f"losses {self.losses}")


# The summary's latency columns (and their _low/_high bounds): they come from one timing phase.
_TIMED = ("latency_s", "latency_1_s")


def _column(variant: str, name: str) -> str:
    return f"{variant}: {name}"


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: all plain data, for panels and reports to display.

    ``table`` has one row per example (``input``, ``reference``, and per variant its output,
    scores, latency and tokens); read a variant's column with :meth:`column` rather than by its
    name. ``summary`` has one row per variant: metric means with 95% intervals, latency, tokens.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    scores: dict[str, dict[str, np.ndarray]]  # variant -> metric -> per-example scores
    n_boot: int = 1000
    seed: int = 0
    # Metrics whose summary is the corpus score (BLEU, chrF), not the mean of the per-example
    # (sentence) scores; their paired comparisons resample rows for a corpus difference.
    corpus_metrics: tuple[str, ...] = ()
    # Variants answered by a hosted endpoint: their token counts come from another tokenizer.
    hosted: tuple[str, ...] = ()
    # The latency of every variant, from one interleaved phase (None: not timed together; see
    # with_timing). The summary's latency columns are its medians.
    timing: Timing | None = None

    @property
    def variants(self) -> list[str]:
        """The variant names, in the order they were evaluated."""
        return list(self.scores)

    @property
    def metrics(self) -> list[str]:
        """The per-example metrics, in the order they were given (the first is the headline)."""
        return list(next(iter(self.scores.values()), {}))

    def column(self, variant: str, name: str) -> pd.Series:
        """One variant's column of the table: ``"output"``, a metric, ``"prompt_tokens"`` or
        ``"new_tokens"`` (latency is per variant, not per row: see :attr:`timing`)."""
        if variant not in self.scores:
            raise KeyError(f"no variant {variant!r}; variants are: {', '.join(self.scores)}")
        key = _column(variant, name)
        if key not in self.table.columns:
            known = [c.split(": ", 1)[1] for c in self.table.columns if c.startswith(f"{variant}: ")]
            raise KeyError(f"variant {variant!r} has no column {name!r}; it has: {', '.join(known)}")
        return self.table[key]

    def outputs(self, variant: str) -> list[str]:
        """What ``variant`` answered, row by row."""
        return [str(o) for o in self.column(variant, "output")]

    def notes(self, variant: str, metric: str) -> list[str]:
        """Why each of ``variant``'s ``metric`` scores is what it is, where the metric says so
        (``pass_at_1``: "passed", the failed assert, "timed out ..."); empty strings otherwise."""
        key = _column(variant, f"{metric}_note")
        if key in self.table.columns:
            return [str(n) for n in self.table[key]]
        return [""] * len(self.table)

    def merge(self, other: EvalResult) -> EvalResult:
        """One result from this and another evaluation of different variants on the same rows.

        The paired comparisons stay valid: both scored the same rows in the same order. Latency
        does not: two evaluations were timed at different moments, under different loads. The
        merged result has no latency until :meth:`with_timing` gives it the timing of all its
        variants together (:func:`ftkit.generation.timing.time_variants`).
        """
        if list(self.table["input"]) != list(other.table["input"]):
            raise ValueError("the two evaluations did not score the same rows")
        clash = set(self.scores) & set(other.scores)
        if clash:
            raise ValueError(f"both evaluations have a variant named {min(clash)!r}; rename one")
        shared = [c for c in other.table.columns if c in self.table.columns]
        summary = pd.concat([self.summary, other.summary])
        return EvalResult(table=pd.concat([self.table, other.table.drop(columns=shared)], axis=1),
                          summary=summary.drop(columns=[c for c in summary.columns if c.startswith(_TIMED)]),
                          scores={**self.scores, **other.scores}, n_boot=self.n_boot, seed=self.seed,
                          corpus_metrics=tuple(dict.fromkeys(self.corpus_metrics + other.corpus_metrics)),
                          hosted=self.hosted + other.hosted)

    def with_timing(self, timing: Timing) -> EvalResult:
        """This result with every variant's latency from ``timing`` (one interleaved phase of all of
        them): the summary's ``latency_s``/``latency_1_s`` become its medians, with ``_low``/``_high``.

        >>> result = prompts.merge(tuned).with_timing(time_variants(variants, test))  # doctest: +SKIP
        """
        missing = [v for v in self.scores if v not in timing.batched]
        if missing:
            raise ValueError(f"the timing has no {', '.join(map(repr, missing))}: time every variant of the "
                             "result together, in one time_variants call")
        summary = self.summary.drop(columns=[c for c in self.summary.columns if c.startswith(_TIMED)])
        summary = summary.join(timing.summary())
        return replace(self, summary=summary, timing=timing)

    def compare(self, a: str, b: str, metric: str | None = None) -> Comparison:
        """Paired bootstrap of the difference ``a - b`` on the same rows: of the mean score, or of
        the corpus score for a corpus metric (BLEU, chrF). Wins, ties and losses count rows."""
        metric = metric or next(iter(self.scores[a]))
        for name in (a, b):
            if name not in self.scores:
                raise KeyError(f"no variant {name!r}; variants are: {', '.join(self.scores)}")
        diff = self.scores[a][metric] - self.scores[b][metric]
        if metric in self.corpus_metrics:
            mean, low, high = M.paired_corpus_difference(metric, self.outputs(a), self.outputs(b),
                                                         [str(r) for r in self.table["reference"]],
                                                         self.n_boot, self.seed)
        else:
            mean, low, high = bootstrap_ci(diff, self.n_boot, self.seed)
        return Comparison(a=a, b=b, metric=metric, mean_diff=mean, ci_low=low,
                          ci_high=high, wins=int((diff > 0).sum()), ties=int((diff == 0).sum()),
                          losses=int((diff < 0).sum()))


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` bootstrap resamples of ``n`` row indices (the same for a given seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(samples) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap samples of a statistic."""
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% percentile-bootstrap interval: ``(mean, low, high)``.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    values = np.asarray(values, dtype=float)
    return (float(values.mean()), *_interval(values[_resamples(len(values), n_boot, seed)].mean(axis=1)))


def _macro_f1_ci(parsed, refs, labels, n_boot, seed) -> tuple[float, float, float]:
    parsed, refs = np.asarray(parsed, dtype=object), np.asarray(refs, dtype=object)
    boots = [M.macro_f1(parsed[i], refs[i], labels) for i in _resamples(len(refs), n_boot, seed)]
    return M.macro_f1(parsed, refs, labels), *_interval(boots)


def constrained(variant: Variant, labels) -> Variant:
    """``variant`` answering only with one of ``labels``, where it can: a local model becomes a
    :class:`~ftkit.generation.generate.LocalModel` with that label set (:mod:`ftkit.generation.labels`).
    A hosted endpoint is returned as it is: its server takes no token-level constraint.

    >>> constrained(Variant(model, tok, template), ["billing", "refund"]).model.labels   # doctest: +SKIP
    ('billing', 'refund')
    """
    backend = as_backend(variant.model, variant.tokenizer)
    if not labels or backend.hosted or not isinstance(backend, LocalModel):
        return variant
    return replace(variant, model=replace(backend, labels=tuple(str(x) for x in labels)))


def evaluate(variants: list[Variant], dataset, metrics=("exact_match",), *, labels=None, batch_size: int = 16,
             n_boot: int = 1000, seed: int = 0, progress: bool = True, turns: str = "all", timing_rounds: int = 3,
             interactive_rows: int = INTERACTIVE_ROWS, constrain_labels: bool = True,
             max_seconds: float | None = None, max_rows: int | None = None) -> EvalResult:
    """Run every variant on the same rows; score each output with each metric.

    ``metrics``: names (``exact_match``, ``squad_exact_match``, ``token_f1``, ``rouge_l``, ``chrf``,
    ``bleu``, ``glossary_accuracy``, ``json_valid``, ``field_f1``) or callables
    ``(prediction, reference, row) -> float``. BLEU and chrF are summarized at corpus level with
    sacrebleu's bootstrap interval; the table keeps their sentence scores. ``labels``: the label
    set of a classification task; it adds ``label_accuracy`` per example and macro-F1 and the
    share of invalid outputs to the summary. The reference is each row's ``completion``. With
    ``labels``, a local variant's answers are constrained to them (``constrain_labels=False``: asked
    freely, as before), so none is invalid; a hosted endpoint cannot be constrained (:func:`constrained`).

    Conversations (``messages`` rows) are scored turn by turn: each assistant turn is answered
    given the true turns before it (``turns="last"``: only each conversation's last answer; see
    :func:`ftkit.data.canonical.chat_turns`), and the table holds those earlier turns as ``history``.

    Latency is timed after scoring, in one phase of its own where the variants take turns batch by
    batch, ``timing_rounds`` times over (:func:`ftkit.generation.timing.time_variants`): a load that comes and
    goes hits them all alike. ``latency_s`` is the median per request when served ``batch_size`` at
    a time (throughput), ``latency_1_s`` one at a time (interactive, on ``interactive_rows`` rows;
    0: not measured), each with a 95% interval; :attr:`EvalResult.timing` holds the samples and
    the paired differences. ``timing_rounds=0`` leaves latency out, for a caller that times this
    result's variants together with others' (``merge``, then ``with_timing``).

    A template that retrieves its shots per request (:mod:`ftkit.retrieval`) adds ``retrieval_s``, the
    seconds per request its prompts took to build, retrieval included (``latency_s`` is generation
    alone). A hosted backend (an :class:`~ftkit.generation.endpoint.Endpoint`) warms up on one row, and with
    prices adds ``usd_per_request`` to the summary (its token counts are the server's). ``max_seconds``
    and ``max_rows``: a random sample of the rows, as many as fit (:mod:`ftkit.evaluation.answering`).
    """
    rows = rows_to_answer(dataset, turns)
    answer_in = list(labels) if labels and constrain_labels else None  # a hosted backend ignores it
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ; got {names}. Pass name=... to Variant")
    for v in variants:
        shots = getattr(v.template, "shots", None)
        if shots and find_overlap(shots, rows):
            raise ValueError(f"variant {v.name!r} shows few-shot examples that are in the evaluation "
                             "rows; pick shots from the training split")
        pool = getattr(getattr(v.template, "retriever", None), "pool", None)  # shots retrieved per request
        if pool and find_overlap(pool, rows):
            raise ValueError(f"variant {v.name!r} retrieves its examples from rows that include evaluation "
                             "rows; build it from the training split only (retrieved_shots(train, k))")
    rows, answers, built = answer_rows(variants, rows, batch_size=batch_size, progress=progress, labels=answer_in,
                                       max_seconds=max_seconds, max_rows=max_rows, seed=seed)
    scorers = M.resolve(metrics)
    corpus = tuple(name for name, fn in scorers.items() if name in M.CORPUS and fn is M.BUILTIN[name])
    if labels:
        scorers["label_accuracy"] = M.make_label_accuracy(list(labels))
    references = [r["completion"] for r in rows]

    table = pd.DataFrame({"input": [r["prompt"] for r in rows], "reference": references})
    if "id" in rows[0]:
        table.insert(0, "id", [r["id"] for r in rows])
    if "history" in rows[0]:  # a conversation's turn: the turns before the answered user turn
        table.insert(table.columns.get_loc("input"), "history", [conversation_text(r["history"][:-1]) for r in rows])
    scores: dict[str, dict[str, np.ndarray]] = {}
    summary = []
    backends = {v.name: as_backend(v.model, v.tokenizer) for v in variants}
    hosted_names = tuple(name for name, backend in backends.items() if backend.hosted)
    for v in variants:
        outs = answers[v.name]
        texts = [o.text for o in outs]
        table[_column(v.name, "output")] = texts
        scores[v.name] = {}
        line = {"variant": v.name, "n": len(rows)}
        for mname, fn in scorers.items():
            values = [fn(t, ref, r) for t, ref, r in zip(texts, references, rows)]
            s = np.array(values, dtype=float)
            scores[v.name][mname] = s
            table[_column(v.name, mname)] = s
            notes = [getattr(x, "note", None) for x in values]  # why a score is what it is (M.Scored)
            if any(n is not None for n in notes):
                table[_column(v.name, f"{mname}_note")] = [n or "" for n in notes]
            if mname in corpus:  # the corpus score, with sacrebleu's bootstrap interval
                line[mname], line[f"{mname}_low"], line[f"{mname}_high"] = M.corpus_score(
                    mname, texts, [str(r) for r in references], n_boot)
            else:
                line[mname], line[f"{mname}_low"], line[f"{mname}_high"] = bootstrap_ci(s, n_boot, seed)
        if labels:
            parsed = [M.parse_label(t, labels) for t in texts]  # once; the bootstrap resamples these
            line["macro_f1"], line["macro_f1_low"], line["macro_f1_high"] = _macro_f1_ci(
                parsed, references, list(labels), n_boot, seed)
            line["invalid_rate"] = parsed.count(M.INVALID) / len(parsed)
        for key in ("prompt_tokens", "new_tokens"):
            values = [getattr(o, key) for o in outs]
            table[_column(v.name, key)] = values
            line[key] = float(np.mean(values))
        if getattr(v.template, "retriever", None) is not None:  # not in latency_s: time_variants builds prompts untimed
            line["retrieval_s"] = built[v.name]
        costs = [backends[v.name].cost_usd(o.prompt_tokens, o.new_tokens) for o in outs]
        if costs and None not in costs:  # money beside the tokens, where the backend has a price
            line["usd_per_request"] = float(np.mean(costs))
        summary.append(line)
    result = EvalResult(table=table, summary=pd.DataFrame(summary).set_index("variant"), scores=scores,
                        n_boot=n_boot, seed=seed, corpus_metrics=corpus, hosted=hosted_names)
    if timing_rounds > 0:
        timed = [constrained(v, answer_in) for v in variants]  # timed as scored, under the same constraint
        result = result.with_timing(time_variants(timed, rows, batch_size=batch_size, rounds=timing_rounds,
                                                  interactive_rows=interactive_rows, progress=progress,
                                                  n_boot=n_boot, seed=seed))
    return result


def conversation_text(messages: list[dict]) -> str:
    """Turns as plain text, one ``role: content`` paragraph each.

    >>> conversation_text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    'user: Hi\\n\\nassistant: Hello'
    """
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def pairs_from_ratings(result: EvalResult, rows, ratings: dict[tuple[int, str], bool]) -> list[dict]:
    """Preference pairs for DPO from thumbs up/down on outputs.

    ``ratings`` maps ``(row index, variant name)`` to True (good answer) or False (bad). In each
    row, every output rated up is ``chosen`` against every output rated down; a row with only
    downs uses its reference as ``chosen``. Empty answers and answers that are the same after
    normalization make no pair (load_data refuses empty cells, and DPO learns nothing from a tie).

    >>> import pandas as pd
    >>> result = EvalResult(table=pd.DataFrame({"input": ["q"], "reference": ["a"], "x: output": ["b"],
    ...                                         "y: output": ["a!"]}), summary=pd.DataFrame(),
    ...                     scores={"x": {}, "y": {}})
    >>> pairs_from_ratings(result, [{"prompt": "q", "completion": "a"}], {(0, "x"): False, (0, "y"): True})
    [{'prompt': 'q', 'chosen': 'a!', 'rejected': 'b'}]
    """
    rows = as_rows(rows)
    out, seen = [], set()
    for i in sorted({i for i, _ in ratings}):
        rated = {name: up for (j, name), up in ratings.items() if j == i}
        outputs = {name: result.outputs(name)[i] for name in rated}
        ups = [outputs[name] for name, up in rated.items() if up]
        downs = [outputs[name] for name, up in rated.items() if not up]
        row = rows[i]
        for chosen in ups or ([row["completion"]] if downs else []):
            for rejected in downs:
                key = (i, normalize(chosen), normalize(rejected))
                if chosen.strip() and rejected.strip() and key[1] != key[2] and key not in seen:
                    seen.add(key)
                    pair = {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected}
                    if row.get("label") is not None:
                        pair["label"] = row["label"]
                    if row.get("history"):  # a conversation's turn: DPO sees the turns before it
                        pair["history"] = row["history"]
                    out.append(pair)
    return out
