"""The answer to "prompting or fine-tuning?", computed from one evaluation: one object that the
notebooks, the ComparePanel, the HTML report and ``ftkit run`` all show.

    advice = advise(result, prompts=["zero-shot", "8-shot"], tuned={"LoRA SFT": sft_run})
    print(advice)            # the conclusion, with the numbers behind it
    advice.conclusion        # 'fine-tuning pays' | 'prompting is enough' | 'no evidence either way' | ...

The best prompt variant and the best tuned variant are compared on the headline metric, row by row
on the same rows (paired bootstrap; corpus metrics resampled as a corpus). The interval decides, not
the two scores. Beside it: control (invalid answers, answer length), cost per request (prompt
tokens, latency) and once (training minutes), and when training is repaid at a request volume.
Latency is compared from the evaluation's one timing phase (:mod:`ftkit.generation.timing`), and a difference
is said only where its paired interval excludes 0; load seen while timing is said too.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass, field

import pandas as pd

__all__ = ["Advice", "Flexibility", "advise", "flexibility", "probe_score"]

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

    def lines(self) -> list[str]:
        """The verdict and the numbers behind it, a line each."""
        out = [f"Verdict: {self.conclusion}: {self.reason}.",
               f"{self.metric}: {self.tuned} {self.tuned_score:.3f} vs {self.best_prompt} {self.prompt_score:.3f}, "
               f"difference {self.difference:+.3f} (95% CI {self.ci_low:+.3f} to {self.ci_high:+.3f}) on "
               f"{self.rows} rows; wins {self.wins}, ties {self.ties}, losses {self.losses}"]
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
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        head, *rest = self.lines()
        return ("<div class='ftkit-advice'><b>" + html.escape(head) + "</b><br>"
                + "<br>".join(html.escape(line) for line in rest) + "</div>")

    def as_dict(self) -> dict:
        return asdict(self)

    def row(self) -> dict:
        """The advice as one flat row, for a table with a row per scenario."""
        return {"metric": self.metric, "best prompt": self.best_prompt, "best prompt score": self.prompt_score,
                "tuned": self.tuned, "tuned score": self.tuned_score, "tuned - best prompt": self.difference,
                "CI low": self.ci_low, "CI high": self.ci_high,
                "wins/ties/losses": f"{self.wins}/{self.ties}/{self.losses}",
                "prompt tokens (best prompt)": self.prompt_tokens.get(self.best_prompt),
                "prompt tokens (tuned)": self.prompt_tokens.get(self.tuned),
                "training minutes": self.training_minutes, "rows": self.rows, "verdict": self.conclusion}


def advise(result, prompts, tuned, metric: str | None = None, requests: int = 100_000,
           flexibility: Flexibility | None = None) -> Advice:
    """The verdict on ``result`` (an :class:`~ftkit.evaluation.evaluate.EvalResult`): the best of the
    ``prompts`` (variant names) against the best of the ``tuned`` variants (names, or
    ``{name: Run}`` for their training cost: a DPO run's includes the SFT run it continued), on
    ``metric`` (default: the headline).

    Conclusions: *fine-tuning pays* (the interval of tuned - prompt is above 0), *prompting is
    enough* (below 0; or spanning 0 while the prompt costs no more tokens than the tuned model),
    *no evidence either way* (spanning 0 while the prompt costs more: more rows, or the request
    volume, decide), *neither works yet* (nothing scores above 0). ``flexibility`` (from
    :func:`flexibility`) adds what tuning cost outside the task.

    >>> advise(result, ["zero-shot", "8-shot"], {"LoRA SFT": run}).conclusion  # doctest: +SKIP
    'fine-tuning pays'
    """
    metric = metric or result.metrics[0]
    runs = dict(tuned) if isinstance(tuned, dict) else dict.fromkeys(tuned)
    prompts, summary = list(prompts), result.summary
    if not prompts or not runs:
        raise ValueError("advice compares prompt variants with tuned ones: name at least one of each")
    best_prompt = summary.loc[prompts, metric].idxmax()
    best_tuned = summary.loc[list(runs), metric].idxmax()
    gain = result.compare(best_tuned, best_prompt, metric)
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
                    timing_notes=timing.notes()[1:] if timed else [])
    if seconds is not None and advice.seconds_saved > 0:
        advice.break_even_requests = seconds / advice.seconds_saved
    advice.conclusion, advice.reason = _conclude(advice)
    return advice


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


def _conclude(a: Advice) -> tuple[str, str]:
    interval = f"{a.difference:+.2f} {a.metric} (95% CI {a.ci_low:+.2f} to {a.ci_high:+.2f})"
    extra = a.tokens_saved
    minutes = f"{a.training_minutes:.1f} minutes of training" if a.training_minutes is not None else "its training"
    if a.prompt_score == 0 and a.tuned_score == 0:
        return "neither works yet", (f"no answer scores above 0 on {a.metric}, prompted or tuned: a larger model, "
                                     "or more training data and time, before choosing between them")
    if a.ci_low > 0:
        tokens = (f", sending {a.prompt_tokens[a.tuned]:.0f} instead of {a.prompt_tokens[a.best_prompt]:.0f} prompt "
                  "tokens per request" if round(extra) > 0 else "")
        return "fine-tuning pays", f"{a.tuned} beats {a.best_prompt} by {interval}{tokens}, for {minutes}"
    if a.ci_high < 0:
        return "prompting is enough", f"{a.best_prompt} beats {a.tuned}: {interval}; no training needed"
    if a.best_prompt in a.usd_per_request and a.usd_per_request[a.best_prompt] > 0:
        return "no evidence either way", (
            f"these rows cannot tell {a.tuned} from {a.best_prompt} ({interval}); {a.best_prompt} costs "
            f"${a.usd_per_request[a.best_prompt]:.6f} per request, {a.tuned} {minutes} once and its own machine: "
            "more rows, or your request volume, decide")
    if round(extra) <= 0:
        return "prompting is enough", (f"no difference these rows can see ({interval}), and {a.best_prompt} costs "
                                       f"no more prompt tokens per request than {a.tuned}")
    return "no evidence either way", (
        f"these rows cannot tell {a.tuned} from {a.best_prompt} ({interval}); {a.best_prompt} sends {extra:.0f} more "
        f"prompt tokens per request, which {minutes} remove: more rows, or your request volume, decide")


# --- flexibility: what tuning cost outside the task --------------------------------------------

# A reply longer than this many words does not pass by containing the answer: an echo of the
# prompt (which names the labels, or holds the passage) must not score.
PROBE_MAX_WORDS = 12


def probe_score(prediction: str, reference: str, row: dict | None = None) -> float:
    """1.0 when a reply passes its general-skills probe (``ftkit/data/examples/data/general_probes.md``):
    ``check`` ``regex:<pattern>`` fullmatches the stripped reply; ``answers``: the normalized reply
    equals an accepted answer, or holds one as whole words in at most 12 words.

    >>> probe_score("7 + 5 = 12.", "12", {"check": "answers", "answers": ["12", "twelve"]})
    1.0
    >>> probe_score("112", "12", {"check": "answers", "answers": ["12"]})
    0.0
    """
    from ftkit.evaluation.metrics import normalize

    row = row or {}
    check = row.get("check", "answers")
    if check.startswith("regex:"):
        return float(re.fullmatch(check[len("regex:"):], prediction.strip(), flags=re.S) is not None)
    reply = normalize(prediction)
    for answer in row.get("answers") or [reference]:
        wanted = normalize(answer)
        if reply == wanted or (wanted and len(reply.split()) <= PROBE_MAX_WORDS and re.search(
                r"(?<!\w)" + re.escape(wanted) + r"(?!\w)", reply)):
            return 1.0
    return 0.0


@dataclass
class Flexibility:
    """The general-skills probes answered by the base model and by each tuned model: the share
    passed, per skill, and each tuned model's paired difference from the base with its 95% CI."""

    result: object  # the EvalResult on the probes
    base: str
    differences: dict[str, tuple[float, float, float]]  # tuned name -> (mean diff, ci low, ci high)
    by_skill: object  # DataFrame: skill x variant, share passed

    def line(self, tuned: str) -> str:
        mean, low, high = self.differences[tuned]
        base = self.result.summary.loc[self.base, "probe_score"]
        lost = "lost" if high < 0 else "no loss these probes can see" if low <= 0 else "gained"
        return (f"flexibility: general-skills probes passed {base:.0%} by the base model, "
                f"{base + mean:.0%} by {tuned}: {mean:+.2f} (95% CI {low:+.2f} to {high:+.2f}), {lost}")


def flexibility(base, tuned, probes=None, max_new_tokens: int = 32) -> Flexibility:
    """Run the general-skills probes (the built-in ``general_probes``, 120 short questions outside
    any shop task: facts, arithmetic, format instructions, another classification, reading) on
    ``base`` and on each of ``tuned`` (:class:`~ftkit.evaluation.evaluate.Variant` objects, each with its own
    prompt-free template), and measure what tuning cost there.

    >>> flex = flexibility(Variant(model, tok, zero_shot(), name="base", adapter=False),
    ...                    [Variant(run.model, tok, zero_shot(), name="LoRA SFT")])  # doctest: +SKIP
    >>> print(flex.line("LoRA SFT"))                                                    # doctest: +SKIP
    """
    from dataclasses import replace

    import pandas as pd

    from ftkit.data import examples
    from ftkit.data.canonical import as_rows
    from ftkit.evaluation.evaluate import evaluate

    rows = as_rows(probes if probes is not None else examples.load("general_probes", verbose=False))
    variants = [replace(v, max_new_tokens=max_new_tokens) for v in [base, *tuned]]
    result = evaluate(variants, rows, metrics={"probe_score": probe_score}, timing_rounds=0)  # skills, not speed
    differences = {}
    for v in variants[1:]:
        gain = result.compare(v.name, base.name, "probe_score")
        differences[v.name] = (gain.mean_diff, gain.ci_low, gain.ci_high)
    by_skill = pd.DataFrame({v.name: result.column(v.name, "probe_score").values for v in variants})
    by_skill = by_skill.groupby(pd.Series([r.get("skill", "all") for r in rows], name="skill")).mean()
    return Flexibility(result=result, base=base.name, differences=differences, by_skill=by_skill)
