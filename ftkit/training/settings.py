"""What every training method shares and what describes a run before it starts: the settings
dataclasses with their help text and ranges, LoRA, micro-batches and the pre-flight report.

This module imports no ML library, so config validation, ``ftkit run --help`` and the panels'
forms read it without loading torch. The TRL arguments, the model a run trains and the recorded
run around ``trainer.train()`` are in :mod:`ftkit.training.trainer`.

:mod:`ftkit.training.sft` and :mod:`ftkit.training.dpo` each read as a recipe on top of these two
modules, as TRL's trainers sit on its base config and trainer: a new method (ORPO, KTO) is one new file.

>>> TrainingSettings(max_steps=40).lora.target_modules
'all-linear'
"""

from __future__ import annotations

import dataclasses
import html
import math
import operator
from dataclasses import dataclass, field

__all__ = [
    "LoraSettings", "Preflight", "SAMPLE_EVERY_HELP", "SAMPLE_ROWS_HELP", "SAMPLINGS_PER_RUN", "TrainingSettings",
    "default", "device_defaults", "micro_batches", "planned_steps", "range_problem", "range_text", "sampling_interval",
    "settings_fields",
]

MICRO_BATCH_HELP = ("Examples (DPO: pairs) per forward pass; each step accumulates batch_size of them. "
                    "0: the whole batch (DPO on a CPU: 4 pairs, which halves the peak memory of 8); SFT computes "
                    "a prompt start its rows share once per pass, so fewer, larger passes are faster on a CPU "
                    "(benchmarks/time_to_accuracy.py). Lower it if memory runs out")


def micro_batches(batch_size: int, micro_batch_size: int, device: str, cpu_default: int = 4) -> tuple[int, int]:
    """``(examples per forward pass, passes per step)`` for a step of ``batch_size`` examples;
    ``micro_batch_size`` 0 means ``cpu_default`` on a CPU (0 there too: the whole batch).

    >>> micro_batches(8, 0, "cpu"), micro_batches(8, 0, "cuda"), micro_batches(8, 2, "cuda")
    ((4, 2), (8, 1), (2, 4))
    >>> micro_batches(8, 0, "cpu", cpu_default=0)
    (8, 1)
    """
    micro = micro_batch_size or ((cpu_default or batch_size) if device == "cpu" else batch_size)
    micro = min(micro, batch_size)
    if batch_size % micro:
        divisors = [d for d in range(micro, 0, -1) if batch_size % d == 0]
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of micro_batch_size ({micro}); "
                         f"set micro_batch_size to {divisors[0]}, or 0 for the default")
    return micro, batch_size // micro


# --- ranges --------------------------------------------------------------------------------------
# A numeric setting declares its range in its field's metadata, beside its help text, and every
# reader takes it from there: the config file's check (ftkit.config), `ftkit run --help` and the
# panels' forms. "min"/"max" are inclusive, "above"/"below" exclusive (a learning rate is above 0),
# and "also" lists values outside the range that keep a meaning of their own (max_steps -1: use
# epochs). A test walks every numeric field of the config and fails on one that declares no range.

MAX_SEED = 2**32 - 1  # numpy's generators (data order, the split) take seeds up to here


def range_text(f: dataclasses.Field) -> str:
    """The range ``f``'s metadata declares, in words (empty: none).

    >>> range_text(TrainingSettings.__dataclass_fields__["max_steps"])
    '>= 1, or -1'
    >>> range_text(LoraSettings.__dataclass_fields__["dropout"])
    '>= 0 and < 1'
    """
    m = f.metadata
    parts = [f"{sign} {m[key]}" for key, sign in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))
             if key in m]
    also = "".join(f", or {v}" for v in m.get("also", ()))
    return " and ".join(parts) + also


def range_problem(f: dataclasses.Field, value) -> str | None:
    """What is wrong with number ``value`` for field ``f`` (None: nothing): outside the range its
    metadata declares, or not a finite number (YAML's ``.nan`` and ``.inf``, JSON's ``NaN`` and
    ``Infinity``; a comparison with NaN is always false, so it would pass any range unseen).
    None and values that are no number are left to the type check.

    >>> range_problem(TrainingSettings.__dataclass_fields__["batch_size"], -3)
    '-3 is below its minimum 1; allowed: >= 1'
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number; allowed: {range_text(f) or 'any finite number'}"
    m = f.metadata
    if value in m.get("also", ()):
        return None
    # Compared as they are, never through float(): an int of 309 digits has no float, and Python
    # compares an int with a float exactly.
    for key, outside, says in (("min", operator.lt, "is below its minimum"), ("above", operator.le, "is not above"),
                               ("max", operator.gt, "is above its maximum"), ("below", operator.ge, "is not below")):
        if key in m and outside(value, m[key]):
            return f"{value} {says} {m[key]}; allowed: {range_text(f)}"
    return None


# --- settings ------------------------------------------------------------------------------------

@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank: size of the low-rank update per matrix", "min": 1})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling; usually 2 x rank", "min": 1})
    # Below 1: a dropout of 1 zeroes the whole LoRA path, and the adapter learns nothing.
    dropout: float = field(default=0.0, metadata={
        "help": "Dropout on the LoRA path; 0 for runs of a few hundred steps", "min": 0, "below": 1})
    target_modules: str = field(default="all-linear", metadata={
        "help": "Which layers get adapters: 'all-linear', or comma-separated names like 'q_proj,v_proj'. Names "
                "differ by family (GPT-2: c_attn, BLOOM: query_key_value); ftkit.models.families.lora_targets(model) lists them"})
    full_finetune: bool = field(default=False, metadata={
        "help": "Train every weight instead of an adapter (needs far more memory)"})

    def peft_config(self):
        if self.full_finetune:
            return None
        from peft import LoraConfig

        # "all-linear" goes to PEFT as it is: PEFT picks the layers (every linear layer but the output
        # head). ftkit.models.families.lora_targets only lists PEFT's choice, for the help and the panel.
        targets = self.target_modules if self.target_modules == "all-linear" else \
            [t.strip() for t in self.target_modules.split(",") if t.strip()]
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")


@dataclass
class TrainingSettings:
    """The settings every method takes; :class:`~ftkit.training.sft.SFTSettings` and
    :class:`~ftkit.training.dpo.DPOSettings` add their own and change some defaults.

    A method's own field may carry ``metadata={"after": "<field>"}``: :func:`settings_fields`
    (the panel form and ``ftkit run --help``) lists it right after that field.
    """

    name: str = field(default="run", metadata={"help": "Run name (the folder gets a timestamp too)"})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training rows", "above": 0})
    max_steps: int = field(default=-1, metadata={
        "help": "Stop after this many steps (-1: use epochs)", "min": 1, "also": (-1,)})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "Peak learning rate; LoRA SFT on a small model takes 5e-4 to 1e-3, DPO far lower (5e-5 to "
                "2e-4), full fine-tuning ~2e-5",
        # At most 1: a typo like 1e3 for 1e-3 is refused, not trained on (Adam diverges far below 1).
        "above": 0, "max": 1})
    batch_size: int = field(default=8, metadata={"help": "Examples (DPO: preference pairs) per step", "min": 1})
    micro_batch_size: int = field(default=0, metadata={"help": MICRO_BATCH_HELP, "min": 0})
    max_length: int = field(default=256, metadata={
        "help": "Longest example (prompt + answer) in tokens; training refuses to start when an answer would "
                "be cut (its pre-flight names the rows): raise it, or drop them", "min": 1})
    logging_steps: int = field(default=5, metadata={
        "help": "Log the loss (DPO: and rewards) every N steps", "min": 1})
    save_steps: int = field(default=20, metadata={"help": "Checkpoint every N steps, for resuming", "min": 1})
    seed: int = field(default=0, metadata={
        "help": "Random seed for data order and adapter init", "min": 0, "max": MAX_SEED})
    max_minutes: float = field(default=0, metadata={
        "help": "End the run (saved, completed) before it would pass this many minutes (0: no limit)", "min": 0})
    lora: LoraSettings = field(default_factory=LoraSettings)
    trl: dict = field(default_factory=dict, metadata={
        "help": "Any other field of TRL's config (SFTConfig, DPOConfig), passed through, e.g. "
                "{'warmup_ratio': 0.1}"})


def default(name: str, value):
    """A subclass's own default for a field of :class:`TrainingSettings`, keeping its help text.

    >>> default("epochs", 2.0).default
    2.0
    """
    return field(default=value, metadata=TrainingSettings.__dataclass_fields__[name].metadata)


def settings_fields(cls) -> list[dataclasses.Field]:
    """The fields of a settings dataclass in the order people read them: a field whose metadata
    says ``after`` stands right after that field, the others in declaration order.

    >>> from ftkit.training.dpo import DPOSettings
    >>> [f.name for f in settings_fields(DPOSettings)][:6]
    ['name', 'epochs', 'max_steps', 'learning_rate', 'beta', 'sft_weight']
    """
    placed = [f for f in dataclasses.fields(cls) if "after" not in f.metadata]
    for f in [f for f in dataclasses.fields(cls) if "after" in f.metadata]:
        anchor = next(i for i, g in enumerate(placed) if g.name == f.metadata["after"])
        placed.insert(anchor + 1, f)
    return placed


def device_defaults(device: str) -> dict:
    """Settings that differ from the dataclass defaults on this device, for interactive runs.

    On a CPU a step of 8 examples of SmolLM2-135M takes seconds, so the batch is smaller, every
    step is logged (a live chart moves) and the run ends within 5 minutes.

    >>> device_defaults("cpu"), device_defaults("cuda")
    ({'batch_size': 4, 'logging_steps': 1, 'max_minutes': 5.0}, {})
    """
    if device.split(":")[0] == "cpu":
        return {"batch_size": 4, "logging_steps": 1, "max_minutes": 5.0}
    return {}


# --- answers sampled during training ---------------------------------------------------------------
# SFT can answer a few held-out rows every N steps (ftkit.training.samples), so a learner watches a
# wrong label turn right while the loss falls. The fields live on SFTSettings; their help and the
# rule for "a few times a run" live here, torch-free, for the panels and the config.

SAMPLE_EVERY_HELP = ("Answer a few held-out rows greedily every N steps (and before the first step), to watch the "
                     "answers change; 0: off. Each sampling is one short generate call")
SAMPLE_ROWS_HELP = "How many held-out rows are answered at each sampling (a few: they are generated in one batch)"
# 8 samplings (plus the base model's answers at step 0) show a run's answers changing; on a CPU each
# costs about what a training step of 4 examples costs, so a run of 100 steps or more pays under 10%
# (benchmarks/train_sampling.py measures it).
SAMPLINGS_PER_RUN = 8


def planned_steps(settings: TrainingSettings, rows: int) -> int:
    """The optimizer steps a run of ``settings`` takes on ``rows`` examples (before a time limit).

    >>> planned_steps(TrainingSettings(max_steps=40), 100), planned_steps(TrainingSettings(epochs=2), 400)
    (40, 100)
    """
    per_epoch = max(1, math.ceil(rows / settings.batch_size))
    return settings.max_steps if settings.max_steps > 0 else max(1, math.ceil(per_epoch * settings.epochs))


def sampling_interval(settings: TrainingSettings, rows: int, samplings: int = SAMPLINGS_PER_RUN) -> int:
    """``sample_every`` for about ``samplings`` samplings over the steps ``settings`` plan for
    ``rows`` training examples (``max_steps``, else the epochs; a time budget may end it sooner).

    >>> sampling_interval(TrainingSettings(max_steps=40), 100), sampling_interval(TrainingSettings(epochs=2), 400)
    (5, 13)
    >>> sampling_interval(TrainingSettings(max_steps=3), 100)
    1
    """
    return max(1, math.ceil(planned_steps(settings, rows) / samplings))


# --- pre-flight ----------------------------------------------------------------------------------

@dataclass
class Preflight:
    """What was checked before the first step, in plain words, with one example as the trainer
    sees it: ``segments`` are ``(text, trained)`` pieces, trained meaning the loss covers them."""

    segments: list[tuple[str, bool]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    longest: int = 0  # tokens of the longest example (a pair for DPO), as the trainer would see it

    @property
    def example(self) -> str:
        """The example as plain text, trained tokens in ``[[ ]]``."""
        return "".join(f"[[{text}]]" if trained else text for text, trained in self.segments)

    def __str__(self) -> str:
        lines = ["One training example (the model learns the [[marked]] tokens):", self.example]
        lines += [f"PROBLEM: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Trained tokens highlighted, the rest dimmed; every piece of the data escaped."""
        pieces = "".join(
            f"<mark class='ftkit-trained' style='background:#fff3a3'>{html.escape(text)}</mark>" if trained
            else f"<span class='ftkit-context' style='color:#888'>{html.escape(text)}</span>"
            for text, trained in self.segments)
        lines = [f"<div style='color:#b00020'>problem: {html.escape(p)}</div>" for p in self.problems]
        lines += [f"<div class='ftkit-note'>{html.escape(n)}</div>" for n in self.notes]
        return ("<div class='ftkit-preflight'><div>One training example: the model learns the "
                "<mark style='background:#fff3a3'>highlighted</mark> tokens; the grey ones are context."
                f"</div><pre style='white-space:pre-wrap'>{pieces}</pre>{''.join(lines)}</div>")
