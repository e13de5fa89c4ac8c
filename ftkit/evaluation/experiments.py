"""Measurements behind the advice: how much data fine-tuning needs, and what pretraining buys.

    curve = learning_curve(model, tok, parts["train"], parts["test"], sizes=(25, 50, 100, 200, None),
                           template=zero, settings=SFTSettings(max_minutes=2), metrics=["exact_match"])
    curve.table                       # one row per training size: score with its 95% CI, minutes
    curve.figure(best_prompt=("8-shot", 0.23, 0.14, 0.31))   # against the best prompt's line

    scratch = from_scratch(model, tok, parts["train"], parts["test"], template=zero, minutes=3)
    scratch.result.summary            # the same architecture from random weights vs LoRA on the pretrained model

    change = task_change([Variant(model, tok, zero, name="zero-shot"), Variant(run_model, tok, run_template(run),
                          name="LoRA SFT")], examples.load("support_routing_new_queue"), "gift_card", old_rows=test)
    print(change)                     # which variants route to a label added to their prompt, untrained

Each training is an ordinary recorded SFT run (``ftkit runs`` lists them), each evaluation an
ordinary :class:`~ftkit.evaluation.evaluate.EvalResult` on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

__all__ = ["LearningCurve", "Scratch", "TaskChange", "from_scratch", "learning_curve", "task_change"]


@dataclass
class LearningCurve:
    """SFT on nested subsets of the training rows: a row per size (``rows``, ``run``, the
    headline ``score`` with ``low``/``high``, ``minutes``), and the runs."""

    table: pd.DataFrame
    metric: str
    runs: list

    def crossing(self, score: float, beyond_noise: bool = False) -> int | None:
        """The fewest training rows whose score reaches ``score`` (a prompt's), or with
        ``beyond_noise`` whose whole interval is above it; None when no size does."""
        t = self.table
        reached = t[t["low"] > score] if beyond_noise else t[t["score"] >= score]
        return int(reached["rows"].min()) if len(reached) else None

    def figure(self, best_prompt: tuple[str, float, float, float] | None = None):
        """A plotly figure: the score against training rows (95% CI as error bars), and the best
        prompt's score and interval as a horizontal band, where the curve crosses it."""
        import plotly.graph_objects as go

        t = self.table
        fig = go.Figure(go.Scatter(x=t["rows"], y=t["score"], mode="lines+markers", name="LoRA SFT",
                                   error_y=dict(type="data", symmetric=False, array=t["high"] - t["score"],
                                                arrayminus=t["score"] - t["low"])))
        if best_prompt is not None:
            name, score, low, high = best_prompt
            fig.add_hrect(y0=low, y1=high, opacity=0.15, line_width=0, fillcolor="gray")
            fig.add_hline(y=score, line_dash="dash", annotation_text=f"{name} {score:.2f}")
        fig.update_layout(title=f"{self.metric} against training rows", xaxis_title="training rows",
                          yaxis_title=f"{self.metric} (95% CI)", xaxis_type="log", height=360)
        return fig


def learning_curve(model, tokenizer, train, test, *, sizes=(25, 50, 100, 200, None), template=None,
                   settings=None, metrics=("exact_match",), labels=None, seed: int = 0, max_new_tokens: int = 32,
                   runs_root=None, bus=None, stop=None) -> LearningCurve:
    """Train LoRA SFT on nested subsets of ``train`` (the first ``n`` rows of one shuffle with
    ``seed``, so each subset holds the smaller ones; None: all rows), each with ``settings`` (its
    time budget), and evaluate each on ``test`` with ``template``: the score with its 95% interval
    against the number of training rows. ``model`` is left unchanged.

    ``bus`` (an :class:`~ftkit.training.events.EventBus`) receives each training's events and, after each
    size, a ``"curve"`` event with that size's row of the table; ``stop`` (a
    :class:`~ftkit.training.events.StopFlag`) ends the current training and skips the sizes after it."""
    from ftkit.data.canonical import as_rows
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.prompts import zero_shot
    from ftkit.training.curves import training_cost
    from ftkit.training.sft import SFTSettings, train_sft

    rows = as_rows(train)
    order = pd.Series(range(len(rows))).sample(frac=1.0, random_state=seed).tolist()
    shuffled = [rows[i] for i in order]
    template = template or zero_shot()
    settings = settings or SFTSettings()
    wanted = sorted({len(rows) if n is None else min(n, len(rows)) for n in sizes})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"sizes must be positive row counts (or None for all); got {sizes}")
    lines, runs = [], []
    for n in wanted:
        if stop:  # a StopFlag is true once set
            break
        run = train_sft(model, tokenizer, shuffled[:n], template=template, runs_root=runs_root, bus=bus, stop=stop,
                        config=replace(settings, name=f"{settings.name}-{n}-rows"))
        result = evaluate([Variant(run.model, tokenizer, template, name=f"{n} rows", max_new_tokens=max_new_tokens)],
                          test, metrics=metrics, labels=labels, timing_rounds=0)  # a curve of scores: no latency
        metric = result.metrics[0]
        summary = result.summary.iloc[0]
        run.record_evaluation(result, variant=f"{n} rows", metric=metric)
        lines.append({"rows": n, "run": run.id, "score": summary[metric], "low": summary[f"{metric}_low"],
                      "high": summary[f"{metric}_high"], "minutes": (training_cost(run)["seconds"] or 0) / 60,
                      "steps": run.status.get("step")})
        runs.append(run)
        if bus is not None:
            bus.emit("curve", dict(lines[-1], metric=metric))
    return LearningCurve(table=pd.DataFrame(lines), metric=metric, runs=runs)


@dataclass
class Scratch:
    """The same architecture trained from random weights against LoRA on the pretrained model,
    for the same minutes on the same rows, evaluated on the same held-out rows."""

    result: object  # EvalResult with variants "from scratch" and "LoRA on pretrained"
    runs: dict  # name -> Run


def from_scratch(model, tokenizer, train, test, *, template=None, minutes: float = 3.0, metrics=("exact_match",),
                 labels=None, max_new_tokens: int = 32, batch_size: int = 4, scratch_learning_rate: float = 1e-3,
                 max_steps: int = -1, runs_root=None) -> Scratch:
    """What pretraining buys: ``model``'s architecture built from its config with random weights and
    fully trained for ``minutes`` (at ``scratch_learning_rate``: a fresh network needs a larger step
    than a fine-tune), against LoRA SFT on ``model`` for the same minutes, both on ``train`` and
    evaluated on ``test``. A short, clearly labelled run: the taught claim that fine-tuning saves
    the time of training from scratch, measured on this machine. ``max_steps`` (> 0) bounds both
    by steps instead, for a run whose length must not depend on the machine's load."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.prompts import zero_shot
    from ftkit.training.sft import SFTSettings, train_sft
    from ftkit.training.settings import LoraSettings

    template = template or zero_shot()
    with torch.random.fork_rng(devices=[]):  # the same random weights every time, and the caller's RNG untouched
        torch.manual_seed(0)
        fresh = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype).to(model.device)
    common = dict(max_minutes=minutes, max_steps=max_steps, batch_size=batch_size, epochs=1000.0)
    runs = {
        "from scratch": train_sft(fresh, tokenizer, train, template=template, runs_root=runs_root, config=SFTSettings(
            name="from-scratch", learning_rate=scratch_learning_rate, lora=LoraSettings(full_finetune=True), **common)),
        "LoRA on pretrained": train_sft(model, tokenizer, train, template=template, runs_root=runs_root,
                                        config=SFTSettings(name="lora-pretrained", **common)),
    }
    variants = [Variant(run.model, tokenizer, template, name=name, max_new_tokens=max_new_tokens)
                for name, run in runs.items()]
    # the same network, pretrained or not, costs the same per request: scores only
    return Scratch(result=evaluate(variants, test, metrics=metrics, labels=labels, timing_rounds=0), runs=runs)


@dataclass
class TaskChange:
    """A label added to the prompts: which variants route its messages there without training."""

    new_label: str
    table: pd.DataFrame  # a row per variant: share of the new messages routed to the new label, old rows right
    result: object  # the EvalResult: the new label's rows first, then the old ones
    trained: tuple  # variants whose routing came from training

    def lines(self) -> list[str]:
        out = []
        for name, r in self.table.iterrows():
            uses = ("uses it without new training" if r["new_low"] > 0 else
                    "does not use it: it needs labelled rows for it and another training run"
                    if name in self.trained else "does not use it")
            old = f"; old queues right {r['old']:.0%}" if pd.notna(r["old"]) else ""
            out.append(f"{name}: {r['new']:.0%} of {int(r['new_rows'])} '{self.new_label}' messages routed to the new "
                       f"label (95% CI {r['new_low']:.0%} to {r['new_high']:.0%}){old}: {uses}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def task_change(variants, new_rows, new_label: str, *, old_rows=None, trained=None, shots: int = 0,
                batch_size: int = 16) -> TaskChange:
    """The test behind "fine-tuning is less flexible": add ``new_label`` to each variant's label
    list (its template's ``labels``, shown through ``{labels}`` in its instruction) and ask it the
    ``new_rows`` (messages that belong under the new label) and, when given, ``old_rows`` (does
    the old routing survive the change?). No variant is trained: a prompt change is all there is.
    ``trained``: the names of the fine-tuned variants (default: those whose model is a trained
    run's, i.e. not the first variant's model), named in the conclusion as needing new data.
    ``shots``: a few-shot prompt's change also shows this many of the new label's messages as
    solved examples (taken from the start of ``new_rows``; every variant is then asked the rest),
    as a prompt engineer would write it.
    """
    from ftkit.data.canonical import as_rows
    from ftkit.evaluation.evaluate import Variant, bootstrap_ci, evaluate

    new, old = as_rows(new_rows), as_rows(old_rows) if old_rows is not None else []
    examples = [{**r, "completion": new_label, "label": new_label} for r in new[:shots]]
    new = new[shots:]
    if not new:
        raise ValueError("new_rows is empty (after the shots): pass messages that belong under the new label")
    labels = sorted({*(lab for v in variants for lab in v.template.labels), *(r["completion"] for r in old)})
    if new_label in labels:
        raise ValueError(f"{new_label!r} is already a label of these prompts or rows; a task change adds a new one")
    changed = []
    for v in variants:
        if "{labels}" not in v.template.instruction or not v.template.labels:
            raise ValueError(f"variant {v.name!r}'s prompt names no label list ({{labels}} in its instruction), "
                             "so a new label cannot be announced to it")
        shown = [*v.template.shots, *examples] if v.template.shots else []
        changed.append(Variant(v.model, v.tokenizer, replace(v.template, labels=[*v.template.labels, new_label],
                                                             shots=shown),
                               name=v.name, adapter=v.adapter, max_new_tokens=v.max_new_tokens,
                               stop_strings=v.stop_strings, answer_end=v.answer_end))
    rows = [{**r, "completion": new_label, "label": new_label} for r in new] + old
    result = evaluate(changed, rows, labels=[*labels, new_label], batch_size=batch_size,
                      timing_rounds=0)  # who routes to the new label; latency is the comparison's
    lines = []
    for v in changed:
        right = result.column(v.name, "label_accuracy").to_numpy()
        mean, low, high = bootstrap_ci(right[:len(new)])
        lines.append({"variant": v.name, "new": mean, "new_low": low, "new_high": high, "new_rows": len(new),
                      "old": float(right[len(new):].mean()) if old else float("nan")})
    if trained is None:
        trained = tuple(v.name for v in variants if v.model is not variants[0].model)
    return TaskChange(new_label=new_label, table=pd.DataFrame(lines).set_index("variant"), result=result,
                      trained=tuple(trained))
