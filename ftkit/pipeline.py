"""The whole job, headless: prompt baselines, SFT, DPO from it, one evaluation, one report.

``ftkit demo`` and ``ftkit run CONFIG`` both call :func:`run_pipeline`; ``ftkit train CONFIG``
(what ``ftkit launch`` starts on every process) calls :func:`train_stages`. The steps are the
ones a notebook takes, through the same functions::

    load_model -> check_data -> split -> templates -> train_sft -> train_dpo -> evaluate -> report

A template with an ``endpoint:`` is asked of that hosted model (any OpenAI-compatible server)
instead of the local one: a baseline beside the tuned model, with its cost in tokens and, given
prices, in money. Its key is checked before any model loads.

Progress goes to the terminal: a line per logged training step (loss, ETA) from the event bus,
and tqdm bars while generating. Each trained run records its evaluation
(:meth:`ftkit.runs.Run.record_evaluation`), which ``ftkit runs`` and ``ftkit report`` read.

>>> result = run_pipeline(load_config("pipeline.yaml"))    # doctest: +SKIP
>>> result.evaluation.summary["exact_match"]               # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ftkit.budget import BASELINE_SHARE, MIN_TRAINING_S, duration, run_budget_s, training_share, tuned_scoring_s
from ftkit.config import PipelineConfig
from ftkit.data.report import char_limit, count_tokens
from ftkit.evaluation.verdict import advise
from ftkit.training.dpo import train_dpo
from ftkit.evaluation.evaluate import EvalResult, Variant, constrained, evaluate
from ftkit.generation.timing import BUDGET_S as TIMING_BUDGET_S, rows_to_answer, time_variants
from ftkit.training.events import EventBus
from ftkit.models.device import describe_device
from ftkit.models.loading import load_model
from ftkit.models import threads
from ftkit.preparation import (Plan, Prepared, RunRefused, build_template, model_context, plan,
                               preflight, prepare_data, run_data, training_template)
from ftkit.prompts import CLASSIFY_SHORT_INSTRUCTION
from ftkit.runs import Run, load_run, outcome
from ftkit.training.settings import sampling_interval
from ftkit.training.sft import train_sft

__all__ = [
    "PipelineResult", "Plan", "model_context", "Prepared", "RunRefused", "build_template", "duration", "plan",
    "preflight", "prepare_data",
    "print_summary", "progress_printer", "run_pipeline", "served_model", "train_stages", "training_template",
]

# With DPO after it, SFT gets this share of the training's budget and DPO what SFT leaves.
SFT_SHARE = 2 / 3
# Summary columns worth a line in the terminal table and the report, in this order.
SUMMARY_COLUMNS = ("macro_f1", "invalid_rate", "prompt_tokens", "new_tokens", "latency_s", "latency_1_s",
                   "usd_per_request", "retrieval_s")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced: the evaluation, the recorded runs, the report file."""

    evaluation: EvalResult
    runs: list[Run] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0


def progress_printer(stage: str, say: Callable[[str], None] = tqdm.write, max_minutes: float = 0) -> EventBus:
    """An event bus that prints one line per training log: step, loss, DPO margin, ETA.

    With a time limit the ETA is the sooner of the step-count estimate and the limit.

    >>> bus = progress_printer("sft")
    >>> bus.emit("log", {"step": 5, "loss": 1.25, "eta_s": 90})
    sft step 5/0  loss 1.250  ETA 1m30s
    """
    bus = EventBus()
    state = {"max_steps": 0, "t0": time.perf_counter()}

    def on_start(e: dict) -> None:
        state["max_steps"], state["t0"] = e.get("max_steps") or 0, time.perf_counter()
        limit = f", stops by {duration(max_minutes * 60)}" if max_minutes else ""
        say(f"{stage}: run {e.get('run_id')} started, {state['max_steps']} steps at most{limit}")

    def on_log(e: dict) -> None:
        parts = [f"{stage} step {e['step']}/{state['max_steps']}"]
        if e.get("loss") is not None:
            parts.append(f"loss {float(e['loss']):.3f}")
        if e.get("rewards/margins") is not None:
            parts.append(f"margin {float(e['rewards/margins']):+.3f}")
        eta = e.get("eta_s")
        if max_minutes:
            left = max(0.0, max_minutes * 60 - (time.perf_counter() - state["t0"]))
            eta = left if eta is None else min(eta, left)
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        say("  ".join(parts))

    def on_sample(e: dict) -> None:  # one line per sampling: how many match, and each answer's start
        rows = e.get("rows") or []
        short = [r for r in rows if r.get("match") is not None]
        right = f" ({sum(bool(r['match']) for r in short)}/{len(short)} match)" if short else ""
        answers = ", ".join(repr(r["answer"] if len(r["answer"]) <= 24 else r["answer"][:23] + "…") for r in rows)
        say(f"{stage} step {e['step']} answers{right}: {answers}")

    bus.on("start", on_start)
    bus.on("log", on_log)
    bus.on("sample", on_sample)
    bus.on("end", lambda e: say(f"{stage}: {outcome(e)}"))
    return bus


def train_stages(config: PipelineConfig, model, tokenizer, prepared: Prepared, p: Plan, runs_root,
                 say: Callable[[str], None] = tqdm.write, resume: Run | None = None,
                 seconds: float | None = None) -> list[Run]:
    """SFT on the training rows with the plan's training template, then DPO from its adapter when
    ``config.dpo`` is set, with the plan's settings (the config's, and the task's lengths).

    ``resume``: an interrupted or stopped run of this config, continued from its last checkpoint
    in the same run record; resuming the DPO run reuses its finished SFT run. ``seconds``: the
    training's share of the run's budget (:mod:`ftkit.budget`): SFT ends within it (within two
    thirds of it when DPO follows, which gets what is left), or sooner by its own ``max_minutes``.
    """
    runs: list[Run] = []
    if p.sft is None:
        return runs
    deadline = time.perf_counter() + seconds if seconds else None
    template = p.training_template
    kind = resume.config.get("kind") if resume is not None else None
    if kind == "dpo":
        sft = load_run(resume.config["from_run"], runs_root)
        say(f"\nSFT: {sft.id}, {sft.status.get('status')}; resuming DPO run {resume.id}")
    else:
        say(f"\nSFT: LoRA on {len(prepared.training_rows)} rows with the {template.name!r} template"
            + (f"; resuming {resume.id}" if kind == "sft" else ""))
        _threads(config, say)
        settings = _boxed(p.sft, deadline, SFT_SHARE if p.dpo is not None else 1.0)
        if settings.sample_every is None:  # the config left it: about 8 samplings, as the TrainPanel does
            settings = replace(settings, sample_every=sampling_interval(settings, len(prepared.training_rows)))
        sft = train_sft(model, tokenizer, prepared.training_rows, template=template, config=settings,
                        bus=progress_printer("sft", say, settings.max_minutes), runs_root=runs_root,
                        resume=resume if kind == "sft" else None, progress=False, sample_from=prepared.test,
                        data_record=run_data(prepared, p, "sft"))
    runs.append(sft)
    if p.dpo is not None and sft.status.get("status") == "completed":
        say(f"\nDPO: from {sft.id} on {len(prepared.pairs)} preference pairs")
        # train_sft left `model` as it was: DPO continues the SFT adapter on the same base weights.
        _threads(config, say)
        dpo = _boxed(p.dpo, deadline)
        runs.append(train_dpo(model, tokenizer, prepared.pairs, template=template, config=dpo,
                              from_run=sft, bus=progress_printer("dpo", say, dpo.max_minutes),
                              runs_root=runs_root, resume=resume if kind == "dpo" else None, progress=False,
                              data_record=run_data(prepared, p, "dpo")))
    return runs


def answer_tokens(tokenizer, rows: list[dict]) -> int:
    """The median tokens of the rows' reference answers (``completion``)."""
    texts = [str(r.get("completion", "")) for r in rows]
    # Bounded calls, as every count of the data is (check_data has skipped the rows over the bound).
    counts = sorted(count_tokens(tokenizer, texts, char_limit(tokenizer))) if texts else [0]
    return counts[len(counts) // 2]


def _boxed(settings, deadline: float | None, share: float = 1.0):
    """``settings`` whose ``max_minutes`` ends training within ``share`` of the time left before
    ``deadline`` (at least the budget's minimum), unless its own limit ends it sooner."""
    if deadline is None:
        return settings
    minutes = max(MIN_TRAINING_S, (deadline - time.perf_counter()) * share) / 60
    if settings.max_minutes and settings.max_minutes <= minutes:
        return settings
    return replace(settings, max_minutes=round(minutes, 2))


def _threads(config: PipelineConfig, say: Callable[[str], None]) -> None:
    """Choose torch's threads again from the cores other processes leave free now (a phase of long
    work is about to start), and say so when the choice changed (see :mod:`ftkit.models.threads`)."""
    before = threads.current()
    choice = threads.apply(config.model.threads)
    if before is not None and choice.threads != before.threads:
        say(f"Threads: {choice}")


def served_model(run: Run):
    """A run's model with its adapter merged into the weights, and its tokenizer: the model as
    it would be served, so its latency compares with the prompt baselines' on equal terms (an
    attached LoRA adapter adds two small matrix products to every adapted layer)."""
    from ftkit.models.tuned import load_run_model

    return load_run_model(run, verbose=False, merged=True)


def _variant_name(run: Run) -> str:
    return {"sft": "LoRA SFT", "dpo": "SFT + DPO"}.get(run.config.get("kind"), run.id)


def print_summary(result: EvalResult, metric: str, say: Callable[[str], None] = tqdm.write,
                  others: list[str] = ()) -> None:
    """The side-by-side summary as a fixed-width table: the headline ``metric`` with its 95% interval,
    then each of ``others`` (the config's other metrics), then tokens, latency and money."""
    s = result.summary
    others = [m for m in others if m != metric and m in s.columns]
    extra = [*others, *(c for c in SUMMARY_COLUMNS if c in s.columns)]
    width, mw = max(10, *(len(str(n)) for n in s.index)), max(11, len(metric))
    cw = {c: max(13, len(c)) for c in extra}
    say(f"{'variant':<{width}} {metric:>{mw}} {'95% CI':>11}" + "".join(f" {c:>{cw[c]}}" for c in extra))
    # Money per request is a fraction of a cent; a local variant has none (blank, not "nan").
    formats = {"prompt_tokens": ".0f", "usd_per_request": ".6f", "retrieval_s": ".4f"}
    for name, r in s.iterrows():
        ci = f"{r[f'{metric}_low']:.2f}-{r[f'{metric}_high']:.2f}"
        cells = "".join(f" {'':>{cw[c]}}" if pd.isna(r[c]) else f" {r[c]:>{cw[c]}{formats.get(c, '.2f')}}"
                        for c in extra)
        say(f"{name:<{width}} {r[metric]:>{mw}.2f} {ci:>11}{cells}")


def run_pipeline(config: PipelineConfig, say: Callable[[str], None] = tqdm.write, *,
                 title: str = "ftkit report", progress: bool = True, resume: Run | None = None) -> PipelineResult:
    """Run the whole job as ``config`` says and write the report; return what it measured.
    ``resume`` continues an interrupted run of this config (see :func:`train_stages`)."""
    from ftkit.report import write_report

    start = time.perf_counter()
    for t in config.templates:  # a missing key fails now, not after the training
        if t.endpoint is not None:
            t.endpoint.check_key()
    # On a CPU this also chooses torch's threads from the cores other processes leave free now.
    say(f"Device: {describe_device(config.model.device, config.model.dtype, config.model.threads)}")
    t0 = time.perf_counter()
    model, tokenizer = load_model(config.model.name, device=config.model.device, dtype=config.model.dtype,
                                  verbose=False, threads=config.model.threads)
    say(f"Model: {config.model.name} loaded in {time.perf_counter() - t0:.1f} s")
    prepared = prepare_data(config, tokenizer, say)
    p = plan(config, prepared)
    labels = p.labels or None
    # Classification answers only with a label where the model is local (config.constrain_labels).
    answers_in = labels if config.constrain_labels else None
    # What the run would refuse (a prompt over the context, an answer max_length cuts), before minutes
    # of prompt baselines: the same checks `ftkit run --check` prints.
    problems, notes = preflight(prepared, p, tokenizer, model_context(model))
    budget_s = run_budget_s(config.max_minutes, model.device.type)
    if problems:
        raise RunRefused(problems)
    say("Pre-flight (ftkit run --check says the same):" + "".join(f"\n  {n}" for n in notes))
    say(f"\nPrompt baselines: {', '.join(t.name for t in p.templates)} on {len(prepared.test)} rows "
        f"({p.task.name}; headline metric {p.headline}: {p.task.reading})")
    ends = f"; each ends at its {p.task.answer_end} (or end-of-turn)" if p.task.answer_end else ""
    say(f"  answers up to {p.max_new_tokens} tokens: {p.answer_length}{ends}")
    if answers_in:
        free = f" (hosted {', '.join(p.endpoints)}: free)" if p.endpoints else ""
        say(f"  answers constrained to the {len(answers_in)} labels{free}; constrain_labels: false asks freely")
    if p.sft is not None and p.training_template.instruction == CLASSIFY_SHORT_INSTRUCTION:
        say(f"  the tuned model trains and is asked with the {p.training_template.name!r} prompt: no label list "
            f"(sft.template names another)")
    for name, hosted in p.endpoints.items():
        key = f"key from ${hosted.api_key_env}" if hosted.api_key_env else "no key"
        say(f"  {name}: asked of {hosted.model} at {hosted.base_url} ({key})")
    stops = p.task.ends
    prompted = [Variant(p.endpoints.get(t.name, model), None if t.name in p.endpoints else tokenizer, t,
                        name=t.name, max_new_tokens=p.max_new_tokens, **stops) for t in p.templates]
    # Scored now, timed at the end with the tuned models (time_variants): timed minutes apart, under
    # whatever else the machine was doing then, the two would compare two loads, not two models.
    _threads(config, say)
    t0 = time.perf_counter()
    baseline = evaluate(prompted, prepared.test, metrics=p.metrics, labels=labels, progress=progress,
                        timing_rounds=0, constrain_labels=config.constrain_labels,
                        # training follows: the baselines keep to their share of the budget
                        max_seconds=BASELINE_SHARE * budget_s if budget_s and p.sft else None) if prompted else None
    answerable = rows_to_answer(prepared.test)
    sample, held = None, len(answerable)
    if baseline is not None and len(baseline.table) < held:
        sample = len(baseline.table)
        sampled = (f"evaluated on {sample} of the {held} held-out rows, a random sample answered by every "
                   f"variant: the prompt baselines' share of the run's budget, {duration(BASELINE_SHARE * budget_s)}, "
                   "ran out (a larger max_minutes answers more; max_minutes: 0 answers every row)")
        say(f"  {sampled}")
    training_s = None
    if budget_s and p.sft is not None:  # training gives way to the budget (ftkit.budget)
        tuned_n = 1 + (p.dpo is not None)
        scoring_s = (time.perf_counter() - t0) / max(1, len(prompted))  # one baseline variant's answers
        if baseline is not None:  # a tuned model answers about as long as the references
            expected = answer_tokens(tokenizer, answerable[:200]) + 1
            scoring_s = tuned_scoring_s(scoring_s, float(baseline.summary["new_tokens"].mean()), expected)
        share = training_share(budget_s, time.perf_counter() - start, scoring_s, tuned_n, len(prompted) + tuned_n,
                               TIMING_BUDGET_S)
        say(f"\n{share.line}" + ("" if config.max_minutes is not None else " (max_minutes: null, on a CPU)"))
        training_s = share.seconds
    runs = train_stages(config, model, tokenizer, prepared, p, config.output.runs_root, say, resume=resume,
                        seconds=training_s)
    # A run stopped with Ctrl-C kept its adapter: it is evaluated too.
    trained = [r for r in runs if r.status.get("status") in ("completed", "stopped")]
    tuned = [Variant(*served_model(r), p.training_template, name=_variant_name(r), max_new_tokens=p.max_new_tokens,
                     **stops) for r in trained]
    if tuned:
        say(f"\nEvaluating {', '.join(v.name for v in tuned)} with the {p.training_template.name!r} template")
    result = baseline
    if tuned:
        _threads(config, say)
        tuned_result = evaluate(tuned, prepared.test, metrics=p.metrics, labels=labels, progress=progress,
                                timing_rounds=0, constrain_labels=config.constrain_labels, max_rows=sample)
        result = baseline.merge(tuned_result) if baseline is not None else tuned_result
    every = prompted + tuned
    if every:
        _threads(config, say)  # one choice for the whole phase: every variant is timed with it
        say(f"\nTiming {', '.join(v.name for v in every)} together, interleaved (the cost per request)")
        # Timed as scored: a local variant under the same label constraint.
        timing = time_variants([constrained(v, answers_in) for v in every], prepared.test, progress=progress)
        result = result.with_timing(timing)
        say(f"  {timing.notes()[0]}")  # what disturbed it is said with the verdict (or below the table)
    for run, variant in zip(trained, tuned):
        run.record_evaluation(result, variant=variant.name, metric=p.headline)
    say("")
    print_summary(result, p.headline, say, others=list(p.metrics))
    names = list(result.summary.index)
    for name in names[1:]:
        say(str(result.compare(name, names[0], p.headline)))
    advice = None
    if baseline is not None and tuned:  # the same verdict the notebooks, the panel and the report give
        advice = advise(result, list(baseline.variants), {v.name: r for v, r in zip(tuned, trained)}, p.headline,
                        labels=labels, floor=p.task.floors.get(p.headline))
        say("")
        for line in advice.lines():
            say(line)
    elif result.timing is not None:
        for note in result.timing.notes()[1:]:
            say(f"timing: {note}")
    report = write_report(config.output.report, title=title, result=result, runs=runs, metric=p.headline,
                          notes=[prepared.description, prepared.leakage, *([sampled] if sample else []),
                                 f"task: {p.task.name}; {p.headline}: {p.task.reading}",
                                 f"model: {config.model.name}"], config=asdict(config),
                          advice=advice)
    seconds = time.perf_counter() - start
    say(f"\nReport: {report}  ({duration(seconds)} in all)")
    if Path(config.output.runs_root).resolve() != Path("runs").resolve():  # ftkit runs looks in ./runs
        say(f"Runs: {config.output.runs_root}  (ftkit runs --root {config.output.runs_root})")
    return PipelineResult(evaluation=result, runs=runs, report=report, seconds=seconds)
