"""The answer to "prompting or fine-tuning?", computed from one evaluation: one object that the
notebooks, the ComparePanel, the HTML report and ``ftkit run`` all show. It runs over 400 lines because
the conclusion, the lines that show it and what it makes of a judge are one argument read top to
bottom (the general-skills probes behind its flexibility line are :mod:`ftkit.evaluation.flexibility`,
the floor below which a variant does not work yet is :mod:`ftkit.evaluation.floor`).

    advice = advise(result, prompts=["zero-shot", "8-shot"], tuned={"LoRA SFT": sft_run})
    print(advice)            # the conclusion, with the numbers behind it
    advice.conclusion        # 'fine-tuning pays' | 'prompting is enough' | 'no evidence either way' | ...

The best prompt variant (named with the prompts it was chosen from) and the best tuned variant are
compared on the headline metric, row by row on the same rows (paired bootstrap; corpus metrics
resampled as a corpus). The interval decides, not the two scores. Every verdict says the smallest
difference its rows can detect, and when the interval spans 0, how many rows would detect the
observed one (:mod:`ftkit.evaluation.power`). A judge's pairwise win rate, checked against the
learner's own ratings, is shown beside it and decides only where the headline cannot (see
:func:`advise`). Beside it: control (invalid answers, answer length), cost per request (prompt
tokens, latency) and once (training minutes), and when training is repaid at a request volume.
Latency is compared from the evaluation's one timing phase (:mod:`ftkit.generation.timing`), and a difference
is said only where its paired interval excludes 0; load seen while timing is said too.
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import asdict, dataclass, field, fields, is_dataclass

import pandas as pd

from ftkit.evaluation.flexibility import Flexibility
from ftkit.evaluation.floor import basis as floor_basis
from ftkit.evaluation.floor import floor as metric_floor
from ftkit.evaluation.metrics import normalize
from ftkit.evaluation.power import ALPHA, POWER, detectable_difference, detectable_from_interval, rows_needed

__all__ = ["Advice", "advise"]

CONCLUSIONS = ("fine-tuning pays", "prompting is enough", "no evidence either way", "neither works yet")


@dataclass
class Advice:
    """The verdict on one evaluation, and every number it rests on (see :func:`advise`)."""

    metric: str
    best_prompt: str
    tuned: str
    prompt_score: float
    tuned_score: float
    difference: float  # tuned - best prompt, on the metric
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    conclusion: str  # one of CONCLUSIONS
    reason: str
    rows: int
    prompt_tokens: dict[str, float] = field(default_factory=dict)  # per request, best prompt and tuned
    new_tokens: dict[str, float] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)  # per request served in batches (throughput)
    latency_1_s: dict[str, float] = field(default_factory=dict)  # per request one at a time (interactive)
    invalid_rate: dict[str, float] = field(default_factory=dict)  # answers naming no label (classification)
    training_minutes: float | None = None
    requests: int = 100_000  # the request volume the cost lines are put in proportion to
    break_even_requests: float | None = None  # requests after which training is repaid in machine time
    flexibility: Flexibility | None = None  # skills outside the task, before and after tuning (measured)
    hosted: bool = False  # the best prompt runs on a hosted endpoint: its tokens are another tokenizer's
    usd_per_request: dict[str, float] = field(default_factory=dict)  # hosted variants with a price
    # tuned - best prompt in seconds per request, paired, from the one timing phase of the evaluation
    # (ftkit.generation.timing.LatencyDifference; None: the two were not timed together, and no latency is claimed)
    latency_difference: object = None  # batched
    latency_1_difference: object = None  # one at a time
    timing_notes: list[str] = field(default_factory=list)  # how the timing was done, and the load it saw
    prompts_tried: list[str] = field(default_factory=list)  # the prompt variants best_prompt was chosen from
    prompt_scores: dict[str, float] = field(default_factory=dict)  # each of them on the metric
    # The smallest true difference these rows detect (80% power, two-sided 5% level; None: their
    # differences do not vary), and when the interval spans 0 the rows that would detect the
    # observed difference (None: it is 0, or the interval excludes 0). See ftkit.evaluation.power.
    detectable: float | None = None
    rows_needed: int | None = None
    judge: object = None  # a judge's pairwise result (ftkit.evaluation.judge), shown in the verdict
    judge_decides: bool = False  # the conclusion follows the judge (the headline's interval spans 0)
    judge_note: str = ""  # what the verdict made of the judge, in words
    # The score below which a variant does not work yet on the metric (ftkit.evaluation.floor; None:
    # none known, and only an exact 0 everywhere is "neither works yet"), and why, in a few words.
    floor: float | None = None
    floor_basis: str = ""

    @property
    def below_floor(self) -> bool:
        """True when both compared variants score below the floor: neither works yet."""
        return self.floor is not None and max(self.prompt_score, self.tuned_score) < self.floor

    def floor_line(self) -> str | None:
        """The floor the verdict held the scores against, and why it is there."""
        if self.floor is None:
            return None
        why = f" ({self.floor_basis})" if self.floor_basis else ""
        return f"floor: below {self.floor:.3f} {self.metric} a variant does not work yet{why}"

    @property
    def tokens_saved(self) -> float:
        """Prompt tokens per request the tuned model saves against the best prompt (0 against a
        hosted prompt: two tokenizers' counts do not subtract)."""
        if self.hosted or not self.prompt_tokens:
            return 0.0
        return self.prompt_tokens[self.best_prompt] - self.prompt_tokens[self.tuned]

    @property
    def seconds_saved(self) -> float:
        """Seconds per request (batched) the tuned model saves, as far as the timing can tell: the
        median paired difference when its 95% interval excludes 0 (negative: slower), else 0."""
        d = self.latency_difference
        return -d.median if d is not None and d.significant else 0.0

    def latency_line(self) -> str | None:
        """What the timing says about the two, in words: a difference only where its interval
        excludes 0."""
        said = []
        for d in (self.latency_difference, self.latency_1_difference):
            if d is None:
                continue
            how = "batched" if d.kind == "batched" else "one at a time"
            said.append(f"{how} {d.median:+.3f} s (95% CI {d.low:+.3f} to {d.high:+.3f}): {d.verdict()}")
        if not said:
            return None
        return f"latency, {self.tuned} - {self.best_prompt} per request: " + "; ".join(said)

    @property
    def spans_zero(self) -> bool:
        """True when the 95% interval of tuned - best prompt includes 0: the rows cannot tell them apart."""
        return self.ci_low <= 0 <= self.ci_high

    def prompts_line(self) -> str:
        """Which prompt was strongest, of which ones tried."""
        if len(self.prompts_tried) <= 1:
            return f"best prompt: {self.best_prompt}" + (", the only prompt tried" if self.prompts_tried else "")
        tried = ", ".join(f"{name} {self.prompt_scores[name]:.3f}" if name in self.prompt_scores else name
                          for name in self.prompts_tried)
        return f"best prompt: {self.best_prompt}, of {tried} ({self.metric})"

    def power_line(self) -> str:
        """The smallest difference these rows can detect, and the rows the observed one would need."""
        if self.detectable is None:
            return (f"power: the {self.rows} rows' differences do not vary, so the smallest difference they can "
                    "detect cannot be estimated from them")
        out = (f"power: these {self.rows} rows detect a true difference of {self.detectable:.3f} {self.metric} or "
               f"more, either way ({POWER:.0%} power, two-sided {ALPHA:.0%} level)")
        if not self.spans_zero:
            return out
        if self.rows_needed is None:
            return out + "; the observed difference is 0, and no number of rows would detect it"
        if self.rows_needed <= self.rows:  # only where a skewed bootstrap interval and the normal rule disagree
            return out + f"; the observed {self.difference:+.3f} is at the edge of what they detect"
        return (out + f"; the observed {self.difference:+.3f} would need about {self.rows_needed:,} rows "
                f"({self.rows_needed - self.rows:,} more than these)")

    def lines(self) -> list[str]:
        """The verdict and the numbers behind it, a line each."""
        out = [f"Verdict: {self.conclusion}: {self.reason}.",
               f"{self.metric}: {self.tuned} {self.tuned_score:.3f} vs {self.best_prompt} {self.prompt_score:.3f}, "
               f"difference {self.difference:+.3f} (95% CI {self.ci_low:+.3f} to {self.ci_high:+.3f}) on "
               f"{self.rows} rows; wins {self.wins}, ties {self.ties}, losses {self.losses}",
               self.prompts_line(), self.power_line()]
        if self.floor is not None:
            out.append(self.floor_line())
        if self.invalid_rate:
            out.append("control: invalid answers " + ", ".join(f"{k} {v:.0%}" for k, v in self.invalid_rate.items()))
        alone = (f", {self.latency_1_s[self.tuned]:.2f} vs {self.latency_1_s[self.best_prompt]:.2f} s one at a time"
                 if len(self.latency_1_s) == 2 else "")
        counted = " (each model's own tokenizer)" if self.hosted else ""
        money = "".join(f", ${usd:.6f} per request for {name}" for name, usd in self.usd_per_request.items())
        timed = (f", {self.latency_s[self.tuned]:.2f} vs {self.latency_s[self.best_prompt]:.2f} s batched{alone}"
                 if len(self.latency_s) == 2 else "")
        out.append(f"cost per request: {self.prompt_tokens[self.tuned]:.0f} vs {self.prompt_tokens[self.best_prompt]:.0f}"
                   f" prompt tokens{counted}{timed}{money}")
        latency = self.latency_line()
        if latency:
            out.append(latency)
        out += [f"timing: {note}" for note in self.timing_notes]
        if self.training_minutes is not None:
            d = self.latency_difference
            repaid = (f"repaid in machine time after {self.break_even_requests:,.0f} requests"
                      if self.break_even_requests is not None else
                      "not repaid by latency (the tuned model is slower per request here)"
                      if d is not None and d.significant else
                      "not repaid by latency (no latency difference the timing can see)" if d is not None else
                      "latency not timed together, so no repayment is claimed")
            volume = (f"{self.best_prompt} costs ${self.usd_per_request[self.best_prompt] * self.requests:,.2f}"
                      if self.best_prompt in self.usd_per_request else
                      f"{self.best_prompt} is hosted (no price given; pass one to the Endpoint to compare money)"
                      if self.hosted else
                      f"the tuned model sends {abs(self.tokens_saved) * self.requests / 1e6:.1f} million "
                      f"{'fewer' if self.tokens_saved >= 0 else 'more'} prompt tokens")
            out.append(f"cost once: {self.training_minutes:.1f} minutes of training, {repaid}; at "
                       f"{self.requests:,} requests {volume}")
        if self.flexibility is not None:
            out.append(self.flexibility.line(self.tuned))
        if self.judge is not None:
            out += [self.judge.line(), self.judge_note]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        head, *rest = self.lines()
        return ("<div class='ftkit-advice'><b>" + html.escape(head) + "</b><br>"
                + "<br>".join(html.escape(line) for line in rest) + "</div>")

    def as_dict(self) -> dict:
        """The advice as plain data ready for ``json.dumps``: its fields, the judge's and the
        flexibility's numbers with their lines, and the lines as printed."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("latency_difference", "latency_1_difference"):
            out[key] = asdict(out[key]) if is_dataclass(out[key]) else out[key]
        flex = self.flexibility
        out["flexibility"] = None if flex is None else {
            "base": flex.base, "differences": {k: list(v) for k, v in flex.differences.items()},
            "line": flex.line(self.tuned) if self.tuned in flex.differences else None}
        if self.judge is not None:
            out["judge"] = {**{key: getattr(self.judge, key, None) for key in _JUDGE_FIELDS},
                            "usable": bool(self.judge.usable), "line": self.judge.line()}
        out["lines"] = self.lines()
        return _plain(out)

    def row(self) -> dict:
        """The advice as one flat row, for a table with a row per scenario."""
        return {"metric": self.metric, "best prompt": self.best_prompt, "best prompt score": self.prompt_score,
                "tuned": self.tuned, "tuned score": self.tuned_score, "tuned - best prompt": self.difference,
                "CI low": self.ci_low, "CI high": self.ci_high,
                "wins/ties/losses": f"{self.wins}/{self.ties}/{self.losses}",
                "prompt tokens (best prompt)": self.prompt_tokens.get(self.best_prompt),
                "prompt tokens (tuned)": self.prompt_tokens.get(self.tuned),
                "training minutes": self.training_minutes, "rows": self.rows,
                "prompts tried": ", ".join(self.prompts_tried), "detectable difference": self.detectable,
                "rows needed": self.rows_needed, "floor": self.floor,
                "judge win rate (tuned)": _oriented(self)[0] if _oriented(self) is not None else None,
                "judge decides": self.judge_decides, "verdict": self.conclusion}


def advise(result, prompts, tuned, metric: str | None = None, requests: int = 100_000,
           flexibility: Flexibility | None = None, judge=None, floor: float | None = None,
           labels=None) -> Advice:
    """The verdict on ``result`` (an :class:`~ftkit.evaluation.evaluate.EvalResult`): the best of the
    ``prompts`` (variant names) against the best of the ``tuned`` variants (names, or
    ``{name: Run}`` for their training cost: a DPO run's includes the SFT run it continued), on
    ``metric`` (default: the headline).

    Conclusions: *fine-tuning pays* (the interval of tuned - prompt is above 0), *prompting is
    enough* (below 0; or spanning 0 while the prompt costs no more tokens than the tuned model),
    *no evidence either way* (spanning 0 while the prompt costs more: more rows, or the request
    volume, decide; the reason says how many rows), *neither works yet* (both score below the floor
    of the metric, or nothing scores above 0: a larger model, more rows or more steps come first).
    ``flexibility`` (from :func:`ftkit.evaluation.flexibility.flexibility`) adds what tuning cost outside the task.

    ``floor``: the score below which a variant does not work yet (a number, or ``(number, basis)``:
    a task's ``floors``); None takes the metric's from
    :func:`ftkit.evaluation.floor.floor`, with ``labels`` (the label set or its size) for exact match:
    chance, 1/k. Without ``labels``, an evaluation scored against a label set (it has
    ``label_accuracy``) counts the labels its references name; a label no held-out row has is not
    counted, which makes the floor a little higher, not lower. ``floor=0`` keeps only the exact-0
    case, as before floors.

    ``judge``: a judge's pairwise result (:mod:`ftkit.evaluation.judge`: ``a``, ``b``, ``win_rate``
    of ``a`` with ``ci_low``/``ci_high``, ``rows``, ``kappa`` with ``kappa_low``/``kappa_high``,
    ``rated``, ``min_agreement``, ``usable``, ``line()``). It is always shown. It decides only when
    it is ``usable`` (its agreement with the learner's ratings checked), it compared this verdict's
    two variants (either way round: ``a`` the prompt gives the tuned model ``1 - win_rate``), the
    headline's interval spans 0, and the judge's interval excludes 50%. Otherwise the headline decides.

    >>> advise(result, ["zero-shot", "8-shot"], {"LoRA SFT": run}).conclusion  # doctest: +SKIP
    'fine-tuning pays'
    """
    metric = metric or result.metrics[0]
    runs = dict(tuned) if isinstance(tuned, dict) else dict.fromkeys(tuned)
    prompts, summary = list(prompts), result.summary
    if not prompts or not runs:
        raise ValueError("advice compares prompt variants with tuned ones: name at least one of each")
    if judge is not None:
        missing = [key for key in (*_JUDGE_FIELDS, "usable", "line") if not hasattr(judge, key)]
        if missing:
            raise ValueError(f"judge= takes a judge's pairwise result (ftkit.evaluation.judge); this "
                             f"{type(judge).__name__} has no {', '.join(missing)}")
    best_prompt = summary.loc[prompts, metric].idxmax()
    best_tuned = summary.loc[list(runs), metric].idxmax()
    gain = result.compare(best_tuned, best_prompt, metric)
    if metric in getattr(result, "corpus_metrics", ()):  # resampled as a corpus: no per-row differences
        detectable = detectable_from_interval(gain.ci_low, gain.ci_high)
    else:  # the same paired differences compare bootstraps
        detectable = detectable_difference(result.scores[best_tuned][metric] - result.scores[best_prompt][metric])
    names = [best_prompt, best_tuned]
    column = {key: {n: float(summary.loc[n, key]) for n in names}
              for key in ("prompt_tokens", "new_tokens", "latency_s", "latency_1_s") if key in summary.columns}
    invalid = {n: float(summary.loc[n, "invalid_rate"]) for n in names} if "invalid_rate" in summary.columns else {}
    run = runs[best_tuned]
    seconds = _training_seconds(run) if run is not None else None
    timing = getattr(result, "timing", None)
    timed = timing is not None and {best_prompt, best_tuned} <= set(timing.batched)
    advice = Advice(metric=metric, best_prompt=best_prompt, tuned=best_tuned,
                    prompt_score=float(summary.loc[best_prompt, metric]),
                    tuned_score=float(summary.loc[best_tuned, metric]), difference=gain.mean_diff,
                    ci_low=gain.ci_low, ci_high=gain.ci_high, wins=gain.wins, ties=gain.ties, losses=gain.losses,
                    conclusion="", reason="", rows=len(result.table), prompt_tokens=column.get("prompt_tokens", {}),
                    new_tokens=column.get("new_tokens", {}), latency_s=column.get("latency_s", {}),
                    latency_1_s=column.get("latency_1_s", {}),
                    invalid_rate=invalid, training_minutes=seconds / 60 if seconds is not None else None,
                    requests=requests, flexibility=flexibility, hosted=best_prompt in getattr(result, "hosted", ()),
                    usd_per_request=_priced(summary, names),
                    latency_difference=timing.difference(best_tuned, best_prompt) if timed else None,
                    latency_1_difference=(timing.difference(best_tuned, best_prompt, "alone")
                                          if timed and timing.alone else None),
                    # the load it saw; how it was timed only when its budget cut it short (fewer samples)
                    timing_notes=timing.notes()[0 if timing.budget_s is not None else 1:] if timed else [],
                    prompts_tried=prompts,
                    prompt_scores={n: float(summary.loc[n, metric]) for n in prompts}, detectable=detectable,
                    judge=judge)
    if floor is None:
        labels = labels if labels is not None else _labels_named(result)
        advice.floor, advice.floor_basis = metric_floor(metric, labels), floor_basis(metric, labels) or ""
    elif isinstance(floor, tuple):  # (floor, basis): a task's own (Task.floors)
        advice.floor, advice.floor_basis = float(floor[0]), floor[1]
    else:
        advice.floor, advice.floor_basis = float(floor), "given as floor="
    if advice.spans_zero:
        advice.rows_needed = rows_needed(advice.rows, detectable, advice.difference)
    if seconds is not None and advice.seconds_saved > 0:
        advice.break_even_requests = seconds / advice.seconds_saved
    advice.conclusion, advice.reason = _conclude(advice)
    if judge is not None:
        advice.judge_note = _judge_note(advice)
    return advice


def _labels_named(result) -> set[str] | None:
    """The labels an evaluation scored against a label set names in its references (None: it was
    not, so its references are free answers). EvalResult keeps no label set of its own: where
    evaluate() was given one, it added ``label_accuracy``, and each reference is a label."""
    if "label_accuracy" not in result.metrics:
        return None
    return {normalize(str(r)) for r in result.table["reference"]}


def _priced(summary, names) -> dict[str, float]:
    """The hosted variants' money per request, where the evaluation had a price for them."""
    if "usd_per_request" not in summary.columns:
        return {}
    return {n: float(summary.loc[n, "usd_per_request"]) for n in names if pd.notna(summary.loc[n, "usd_per_request"])}


def _training_seconds(run) -> float | None:
    """What it took to train ``run``, including the run it continued (DPO from its SFT run), when
    that run's record is beside it."""
    from ftkit.training.curves import training_cost
    from ftkit.runs import Run

    seconds = training_cost(run)["seconds"]
    parent = (getattr(run, "config", None) or {}).get("from_run")
    if seconds is not None and parent and (run.path.parent / parent / "config.json").is_file():
        before = _training_seconds(Run(run.path.parent / parent))
        seconds += before or 0.0
    return seconds


def _plain(value):
    """``value`` as strict JSON's own: numpy numbers as numbers, tuples as lists, NaN as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return str(value)


# What the verdict reads of a judge's result (ftkit.evaluation.judge), besides `usable` and `line()`.
_JUDGE_FIELDS = ("a", "b", "win_rate", "ci_low", "ci_high", "rows", "kappa", "kappa_low", "kappa_high", "rated",
                 "min_agreement")


def _oriented(a: Advice) -> tuple[float, float, float] | None:
    """The judge's win rate of the tuned model over the best prompt, with its 95% interval; None
    without a judge, or when it compared another pair. Each request is won by one or the other
    (ties count half to each), so the prompt's win rate is 1 - the tuned model's."""
    j = a.judge
    if j is None or {j.a, j.b} != {a.tuned, a.best_prompt}:
        return None
    if j.a == a.tuned:
        return float(j.win_rate), float(j.ci_low), float(j.ci_high)
    return 1 - float(j.win_rate), 1 - float(j.ci_high), 1 - float(j.ci_low)


def _judge_view(a: Advice) -> tuple[float, float, float] | None:
    """:func:`_oriented`, where the verdict may use it: the judge's agreement was checked."""
    return _oriented(a) if a.judge is not None and a.judge.usable else None


def _judge_decides(a: Advice) -> tuple[str, str] | None:
    """The conclusion a usable judge of this pair gives where the headline cannot tell them
    apart, when its interval excludes 50%; else None."""
    view = _judge_view(a)
    if view is None or not a.spans_zero or view[1] <= 0.5 <= view[2]:
        return None
    rate, low, high = view
    tuned_wins = low > 0.5
    winner, loser = (a.tuned, a.best_prompt) if tuned_wins else (a.best_prompt, a.tuned)
    if not tuned_wins:
        rate, low, high = 1 - rate, 1 - high, 1 - low
    j = a.judge
    agree = f"kappa {j.kappa:.2f}"
    if j.kappa_low is not None and j.kappa_high is not None:
        agree += f" (95% CI {j.kappa_low:.2f} to {j.kappa_high:.2f})"
    said = (f"{a.metric} cannot tell {a.tuned} from {a.best_prompt} ({_interval(a)}), but the judge prefers "
            f"{winner} to {loser} on {rate:.0%} of {j.rows} requests (95% CI {low:.0%} to {high:.0%}), and it agrees "
            f"with your own ratings at {agree} on {j.rated} rated requests")
    if tuned_wins:
        return "fine-tuning pays", f"{said}; for {_minutes(a)}"
    return "prompting is enough", f"{said}; no training needed"


def _judge_note(a: Advice) -> str:
    """What the verdict made of the judge, in words."""
    j = a.judge
    if not j.usable:  # the judge's own words where it has them (ftkit.evaluation.judge's why_not)
        why = getattr(j, "why_not", lambda: None)() or (
            "you rated no answers to check its agreement against" if j.kappa is None else
            "its agreement with your ratings cannot be measured" if not math.isfinite(j.kappa) else
            f"its agreement with your ratings (kappa {j.kappa:.2f}) is not shown to reach {j.min_agreement:.2f}")
        return f"the verdict does not use the judge: {why}"
    view = _oriented(a)
    if view is None:
        return (f"the verdict does not use the judge: it compared {j.a} with {j.b}, the verdict {a.tuned} with "
                f"{a.best_prompt}")
    if a.judge_decides:
        return f"the verdict follows the judge: the {a.metric} interval spans 0 and the judge's excludes 50%"
    if a.conclusion == "neither works yet":
        if a.prompt_score == 0 and a.tuned_score == 0:
            return f"the judge is shown only: no answer scores above 0 on {a.metric}"
        return f"the judge is shown only: neither scores above the floor {a.floor:.3f} of {a.metric}"
    _, low, high = view
    if a.spans_zero:
        return "the judge is shown only: it cannot tell them apart either (its interval spans 50%)"
    disagrees = (a.ci_low > 0 and high < 0.5) or (a.ci_high < 0 and low > 0.5)
    return (f"the judge is shown only: the {a.metric} interval excludes 0, so the headline decides"
            + ("; the judge prefers the other: read the answers where they differ" if disagrees else ""))


def _interval(a: Advice) -> str:
    return f"{a.difference:+.2f} {a.metric} (95% CI {a.ci_low:+.2f} to {a.ci_high:+.2f})"


def _minutes(a: Advice) -> str:
    return f"{a.training_minutes:.1f} minutes of training" if a.training_minutes is not None else "its training"


def _what_decides(a: Advice) -> str:
    """What would decide between two variants these rows cannot tell apart."""
    if a.rows_needed is not None and a.rows_needed <= a.rows:
        return (f"the observed {a.difference:+.2f} is at the edge of what these {a.rows} rows detect: a few more "
                "held-out rows, or your request volume, decide")
    if a.rows_needed is not None:
        return (f"about {a.rows_needed:,} held-out rows (these are {a.rows}) would detect the observed "
                f"{a.difference:+.2f}, or your request volume decides")
    if a.detectable is not None:
        return "the observed difference is 0, so no number of rows decides: your request volume does"
    return "more rows, or your request volume, decide"


def _below_floor(a: Advice, interval: str) -> str:
    """The reason when both variants score below the floor: the best named, and what to try."""
    top = max(a.prompt_score, a.tuned_score)
    best = [n for n, s in ((a.tuned, a.tuned_score), (a.best_prompt, a.prompt_score)) if s == top]
    named = (f"the best is {best[0]} ({top:.3f})" if len(best) == 1 else
             f"the best are {' and '.join(best)} ({top:.3f} each)")
    return (f"{named}, below the floor {a.floor:.3f} of {a.metric}, prompted or tuned; "
            f"{a.tuned} - {a.best_prompt} is {interval}. Before choosing between them, try a larger model through "
            "an endpoint (ftkit's Endpoint, notebook 08), more training rows, or more training steps")


def _conclude(a: Advice) -> tuple[str, str]:
    interval = _interval(a)
    extra = a.tokens_saved
    minutes = _minutes(a)
    if a.prompt_score == 0 and a.tuned_score == 0:
        return "neither works yet", (f"no answer scores above 0 on {a.metric}, prompted or tuned: a larger model, "
                                     "or more training data and time, before choosing between them")
    if a.below_floor:
        return "neither works yet", _below_floor(a, interval)
    if a.ci_low > 0:
        tokens = (f", sending {a.prompt_tokens[a.tuned]:.0f} instead of {a.prompt_tokens[a.best_prompt]:.0f} prompt "
                  "tokens per request" if round(extra) > 0 else "")
        return "fine-tuning pays", f"{a.tuned} beats {a.best_prompt} by {interval}{tokens}, for {minutes}"
    if a.ci_high < 0:
        return "prompting is enough", f"{a.best_prompt} beats {a.tuned}: {interval}; no training needed"
    judged = _judge_decides(a)
    if judged is not None:  # the headline cannot tell them apart; a checked judge can
        a.judge_decides = True  # said beside the conclusion, in the judge's note and the flat row
        return judged
    if a.best_prompt in a.usd_per_request and a.usd_per_request[a.best_prompt] > 0:
        return "no evidence either way", (
            f"these rows cannot tell {a.tuned} from {a.best_prompt} ({interval}); {a.best_prompt} costs "
            f"${a.usd_per_request[a.best_prompt]:.6f} per request, {a.tuned} {minutes} once and its own machine: "
            f"{_what_decides(a)}")
    if round(extra) <= 0:
        more = (f"; detecting the observed {a.difference:+.2f} would take about {a.rows_needed:,} rows"
                if a.rows_needed is not None else "")
        return "prompting is enough", (f"no difference these rows can see ({interval}), and {a.best_prompt} costs "
                                       f"no more prompt tokens per request than {a.tuned}{more}")
    return "no evidence either way", (
        f"these rows cannot tell {a.tuned} from {a.best_prompt} ({interval}); {a.best_prompt} sends {extra:.0f} more "
        f"prompt tokens per request, which {minutes} remove: {_what_decides(a)}")
