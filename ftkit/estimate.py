"""What ``ftkit run --check`` says after the checks pass: what the run will do, and how long it
should take on this machine.

The estimate is measured, not guessed from a table: one SFT step on the run's own rows, template and
settings (the second of two, so the first step's warm-up is not counted), and one batch of held-out
prompts read and answered (after an untimed warm-up call). Evaluation is given twice: with answers
as long as the references, and with every answer at ``max_new_tokens`` (the most it can take). The
batch is measured with the training template's prompt; each variant's reading is scaled by its own
prompt's tokens against that one's (a few-shot prompt reads its shots too). What cannot be measured
without training (DPO's steps) is said to be unknown, or bounded by its time limit.

>>> lines = plan_lines(config, prepared, p) + estimate(model, tokenizer, config, prepared, p)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
import statistics
import tempfile
import time
from dataclasses import replace

from ftkit.data.canonical import chat_turns
from ftkit.evaluation.evaluate import evaluate
from ftkit.training.events import EventBus
from ftkit.generation.generate import generate
from ftkit.pipeline import SFT_SHARE, Plan, Prepared, answer_tokens, duration
from ftkit.prompts import prompt_lengths
from ftkit.budget import BASELINE_SHARE, run_budget_s, training_share
from ftkit.evaluation.answering import MIN_ROWS
from ftkit.training.settings import planned_steps
from ftkit.training.sft import train_sft
from ftkit.generation.timing import BUDGET_S as TIMING_BUDGET_S, WARMUP_ROWS, time_variants

__all__ = ["estimate", "plan_lines"]

BATCH = inspect.signature(evaluate).parameters["batch_size"].default  # rows per generate call in evaluate
_TIMING = inspect.signature(time_variants).parameters
ROUNDS = _TIMING["rounds"].default  # the timing phase: rounds of one batch and a few rows alone, per variant
ONE_AT_A_TIME = _TIMING["interactive_rows"].default


def plan_lines(config, prepared: Prepared, p: Plan) -> list[str]:
    """What the run will do, in a few lines: variants, rows, steps, the report."""
    n = len(chat_turns(prepared.test))
    held = f"{n} held-out row(s)" if n == len(prepared.test) else \
        f"{n} held-out turn(s) of {len(prepared.test)} conversation(s)"
    lines = [f"The run will ask {len(p.templates)} prompt variant(s) ({', '.join(t.name for t in p.templates)}) "
             f"on {held} ({p.task.name}; headline {p.headline}; answers up to {p.max_new_tokens} tokens"
             f"{': ' + p.answer_length if p.answer_length else ''})"]
    if p.sft is not None:
        rows = len(prepared.training_rows)
        lines.append(f"SFT: LoRA on {rows} rows with the {p.training_template.name!r} prompt, "
                     f"{_steps_text(p.sft, rows)}, max_length {p.sft.max_length}")
    if p.dpo is not None and prepared.pairs is not None:
        lines.append(f"DPO: from the SFT adapter on {len(prepared.pairs)} pairs, "
                     f"{_steps_text(p.dpo, len(prepared.pairs))}")
    tuned = (p.sft is not None) + (p.dpo is not None)
    if tuned:
        lines.append(f"Then the {tuned} tuned variant(s) answer the same {n} rows, and the report goes to "
                     f"{config.output.report}")
    return lines


def _steps_text(settings, rows: int) -> str:
    steps = planned_steps(settings, rows)
    how = "max_steps" if settings.max_steps > 0 else \
        f"{settings.epochs:g} epoch(s) of {math.ceil(rows / settings.batch_size)} step(s)"
    limit = f", or fewer if {settings.max_minutes:g} min run out" if settings.max_minutes else ""
    return f"{steps} step(s) of {min(settings.batch_size, rows)} ({how}{limit})"


def estimate(model, tokenizer, config, prepared: Prepared, p: Plan) -> list[str]:
    """The run's minutes on this machine, from one measured SFT step and one measured batch of answers;
    training within the run's budget as the run will box it (:mod:`ftkit.budget`)."""
    lines, total = [], 0.0
    rows = chat_turns(prepared.test)
    local = [t for t in p.templates if t.name not in p.endpoints]
    tuned = (p.sft is not None) + (p.dpo is not None)
    variants = len(local) + tuned
    scoring = timing = None  # seconds for the baselines' answers, and for the timing phase, at `tokens` each
    answered = len(rows)
    prefill_s, token_s = _one_batch(model, tokenizer, rows[:BATCH], p) if rows and variants else (0.0, 0.0)
    # Answers as long as the references (most end there, once tuned), and every answer at its limit.
    typical = min(p.max_new_tokens, answer_tokens(tokenizer, rows) + 1)
    budget_s = run_budget_s(config.max_minutes, model.device.type)
    reading = _reading(tokenizer, rows[:BATCH], p.training_template, local)  # each prompt's length, relative
    if rows and variants and token_s:
        batches = math.ceil(len(rows) / BATCH)

        def batch_s(ratio: float, tokens: int) -> float:  # a batch read at `ratio` the measured prompt's length
            return prefill_s * ratio + tokens * token_s

        if budget_s and local and p.sft is not None:  # a sample, when all the rows would pass their share
            fit = int(BASELINE_SHARE * budget_s // sum(batch_s(r, typical) for r in reading.values()))
            batches = min(batches, max(math.ceil(MIN_ROWS / BATCH), fit))
            if batches * BATCH < len(rows):
                answered = batches * BATCH
                lines.append(f"Estimate: the prompt baselines' share of the budget, "
                             f"{_minutes(BASELINE_SHARE * budget_s)}, answers about {batches * BATCH} of the "
                             f"{len(rows)} held-out rows: every variant is scored on that random sample")

        def scoring(tokens: int, tuned_too: bool = True) -> float:  # every variant's answers; a tuned
            return batches * (sum(batch_s(r, tokens) for r in reading.values())  # one reads the training prompt
                              + tuned_too * tuned * batch_s(1.0, tokens))

        def timing(tokens: int) -> float:  # a warm-up, and each round one batch and its rows alone, per variant
            ratio = (sum(reading.values()) + tuned) / variants
            batch, alone = batch_s(ratio, tokens), prefill_s * ratio / BATCH + tokens * token_s
            return min(TIMING_BUDGET_S, variants * ((WARMUP_ROWS / BATCH + ROUNDS) * batch
                                                    + ROUNDS * ONE_AT_A_TIME * alone))

    box = None
    if budget_s and p.sft is not None and scoring is not None:
        baselines = scoring(typical, tuned_too=False)  # the run reckons a tuned variant as their mean
        box = training_share(budget_s, baselines, baselines / max(1, len(local)), tuned, variants,
                             TIMING_BUDGET_S).seconds
    if p.sft is not None:
        step_s = _one_sft_step(model, tokenizer, prepared, p)
        steps = planned_steps(p.sft, len(prepared.training_rows))
        sft_s = steps * step_s
        if p.sft.max_minutes:
            sft_s = min(sft_s, p.sft.max_minutes * 60)
        boxed, sft_box = "", None if box is None else box * (SFT_SHARE if p.dpo is not None else 1)
        if sft_box is not None and sft_s > sft_box:
            sft_s = sft_box
            boxed = (f"; the run's {budget_s / 60:g}-minute budget ends it sooner, after about "
                     f"{sft_s / step_s:.0f} step(s) (max_minutes sets the budget)")
        total += sft_s
        lines.append(f"Estimate: SFT about {_minutes(sft_s)} ({steps} step(s) at {step_s:.1f} s, one step measured "
                     f"here{boxed})")
    if p.dpo is not None:
        dpo_s = p.dpo.max_minutes * 60 if p.dpo.max_minutes else None
        if box is not None:
            dpo_s = min(dpo_s or box, box - sft_s)
        bound = f"at most {_minutes(dpo_s)} by its time limit" if dpo_s else "unknown"
        total += dpo_s or 0
        lines.append(f"Estimate: DPO {bound} (a DPO step is not measured before its SFT run exists)")
    likely, unmeasured = total, ""
    if rows and variants and scoring is None:  # every answer stopped at its first token: nothing after it was timed
        unmeasured = ", plus evaluation (not measured)"
        lines.append("Estimate: evaluation unknown (the measured batch's answers all ended at once, so the time "
                     "per generated token could not be measured)")
    elif scoring is not None:
        def evaluation(tokens: int) -> float:  # every variant's answers, then the timing phase
            return scoring(tokens) + timing(tokens)

        likely, total = total + evaluation(typical), total + evaluation(p.max_new_tokens)
        hosted = f"; the {len(p.endpoints)} hosted variant(s) not included" if p.endpoints else ""
        lines.append(f"Estimate: evaluation about {_minutes(evaluation(typical))} if answers are as long as the "
                     f"references (median {typical} tokens), at most {_minutes(evaluation(p.max_new_tokens))} "
                     f"if every answer runs to {p.max_new_tokens} ({variants} variant(s) x {answered} rows, and "
                     f"timing them within {_minutes(TIMING_BUDGET_S)}; one batch measured here{hosted})")
    if lines:
        most = f" (at most {_minutes(total)})" if total > likely else ""
        if p.dpo is not None and not (p.dpo.max_minutes or box is not None):
            unmeasured = ", plus DPO (not measured)" + unmeasured
        lines.append(f"Estimate: about {_minutes(likely)} in all{most}{unmeasured} on this machine, as loaded as "
                     "it is now")
    return lines


def _reading(tokenizer, rows: list[dict], measured, templates) -> dict[str, float]:
    """Each template's median prompt tokens on ``rows`` over the ``measured`` one's: a few-shot
    prompt reads its shots too, and reading is what a batch of short answers mostly costs."""
    if not rows:
        return {t.name: 1.0 for t in templates}
    base = statistics.median(prompt_lengths(measured, rows, tokenizer)) or 1
    return {t.name: statistics.median(prompt_lengths(t, rows, tokenizer)) / base for t in templates}


def _one_sft_step(model, tokenizer, prepared: Prepared, p: Plan) -> float:
    """Seconds of the second of two SFT steps on the run's first rows, template and settings."""
    train = prepared.training_rows
    rows = [train[i % len(train)] for i in range(2 * p.sft.batch_size)]
    logged: list[float] = []
    bus = EventBus()
    bus.on("log", lambda e: logged.append(time.perf_counter()))
    settings = replace(p.sft, name="check", max_steps=2, max_minutes=0, logging_steps=1, save_steps=10**6)
    with tempfile.TemporaryDirectory(prefix="ftkit-check-") as runs:  # no bar: --check prints its own lines
        train_sft(model, tokenizer, rows, template=p.training_template, config=settings, bus=bus, runs_root=runs,
                  progress=False)
    return logged[1] - logged[0] if len(logged) >= 2 else float("nan")


def _one_batch(model, tokenizer, rows: list[dict], p: Plan) -> tuple[float, float]:
    """Seconds to read one batch of held-out prompts, and seconds per token generated after that,
    from two calls on the same batch: one that stops after the first token, one that goes on."""
    conversations = [p.training_template.messages(r) for r in rows]

    def timed(n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        answers = generate(model, tokenizer, conversations, max_new_tokens=n, batch_size=BATCH, progress=False)
        return time.perf_counter() - t0, max([a.new_tokens for a in answers] + [1])  # rows may stop sooner

    timed(1)  # untimed: the model's first call pays for warming up
    first, _ = timed(1)
    longer, steps = timed(min(9, p.max_new_tokens))
    token_s = max(0.0, longer - first) / max(1, steps - 1)
    return max(0.0, first - token_s), token_s


def _minutes(seconds: float) -> str:
    return "unknown" if seconds != seconds else duration(seconds)  # nan: not measured
