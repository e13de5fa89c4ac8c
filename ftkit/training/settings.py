"""What every training method shares: settings, LoRA, micro-batches, the pre-flight report, the
TRL arguments, the model a run trains, and the recorded run around ``trainer.train()``.

:mod:`ftkit.training.sft` and :mod:`ftkit.training.dpo` each read as a recipe on top of this module, as TRL's
trainers sit on its base config and trainer: a new method (ORPO, KTO) is one new file.

Training never changes the model you pass. LoRA is put on a structural copy whose modules are
new but whose weights are the very same tensors (no second copy in memory); the trained model is
``run.model``, and your model still answers as the base model, for the prompt baselines:

>>> run = train_sft(model, tokenizer, rows)      # doctest: +SKIP
>>> run.model                                     # base weights (shared) + the trained adapter  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import html
import math
import operator
import os
from dataclasses import dataclass, field

from ftkit.runs import KEYBOARD_INTERRUPT, STOP_REQUESTED, Run, is_main_process

__all__ = [
    "LoraSettings", "Preflight", "TrainingSettings", "completion_positions", "default", "device_defaults",
    "micro_batches", "range_problem", "range_text",
    "settings_fields", "show_progress", "trainable_model", "train_and_record", "trl_arguments",
]

MICRO_BATCH_HELP = ("Examples (DPO: pairs) per forward pass; each step accumulates batch_size of them. "
                    "0: the whole batch (DPO on a CPU: 4 pairs, half the peak memory of 8 at the same speed); "
                    "SFT computes a prompt start its rows share once per pass, so one pass of 8 is 1.7x "
                    "faster than two of 4 on a CPU. Lower it if memory runs out")


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
                "differ by family (GPT-2: c_attn, BLOOM: query_key_value); ftkit.models.loading.lora_targets(model) lists them"})
    full_finetune: bool = field(default=False, metadata={
        "help": "Train every weight instead of an adapter (needs far more memory)"})

    def peft_config(self):
        if self.full_finetune:
            return None
        from peft import LoraConfig

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


# --- the model a run trains --------------------------------------------------------------------

def _carries_adapters(model) -> bool:
    from accelerate.utils import is_peft_model

    return is_peft_model(model) or any("lora_" in name for name, _ in model.named_parameters())


def _shared_weights_copy(model):
    """New module objects around the same parameter and buffer tensors: LoRA layers put into the
    copy leave ``model`` as it was, at no memory cost."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def trainable_model(model, lora: LoraSettings, adapter_dir=None):
    """The model a run trains, and the PEFT config its trainer should add (None: already set).

    ``model`` is never changed: LoRA goes on a copy that shares its weights (see the module
    docstring); a full fine-tune trains a real copy. ``adapter_dir`` continues a saved adapter
    (DPO from an SFT run). Under a distributed launch each process's model exists only to be
    trained, and FSDP frees the weights it shards only if nothing else holds them: it is trained
    in place there.
    """
    if _carries_adapters(model):
        raise ValueError("this model already carries LoRA adapters (is it run.model from an earlier run?). "
                         "Pass the base model: training leaves the model you give it unchanged, so the "
                         "one you trained from still works. To continue a run, pass resume=run (the same "
                         "run) or, for DPO after SFT, from_run=sft_run")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    in_place = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        if lora.full_finetune:
            yield (model if in_place else copy.deepcopy(model)), None
        else:
            trainee = model if in_place else _shared_weights_copy(model)
            if adapter_dir is not None:
                from peft import PeftModel

                yield PeftModel.from_pretrained(trainee, adapter_dir, is_trainable=True), None
            else:
                yield trainee, lora.peft_config()
    finally:
        for p, flag in flags:  # PEFT froze the shared base weights; they were trainable before
            p.requires_grad_(flag)


def completion_positions(trained):
    """The positions whose logits a next-token loss needs, for the model's ``logits_to_keep``:
    ``trained`` (batch, length - 1) marks the target tokens 1 .. length - 1 that count, and
    position t predicts token t + 1. A batch with nothing to learn keeps its first position, so
    the loss is still a (zero) part of the graph. SFT's loss and DPO's lean loss both project
    only these (ftkit.training.sft, ftkit.fastpath.dpo_lean)."""
    import torch

    keep = torch.zeros((trained.shape[0], trained.shape[1] + 1), dtype=torch.bool, device=trained.device)
    keep[:, :-1] = trained
    if not keep.any():
        keep[:, 0] = True
    return keep


# --- the trainer ---------------------------------------------------------------------------------

def trl_arguments(settings: TrainingSettings, run: Run, device_choice, config_cls, cpu_micro_batch: int = 4,
                  progress: bool = True) -> dict:
    """The keyword arguments of TRL's ``SFTConfig``/``DPOConfig`` that every method sets the same
    way, from ftkit's settings and the model's device (a method adds its own, then
    ``settings.trl``). ``cpu_micro_batch``: the method's micro-batch on a CPU when the settings
    leave it at 0 (0: the whole batch), see :func:`micro_batches`. ``progress``: the trainer's
    bars (training, evaluation, DPO's reference pass) on or off, see :func:`train_and_record`."""
    micro, accumulate = micro_batches(settings.batch_size, settings.micro_batch_size, device_choice.device,
                                      cpu_micro_batch)
    kw = dict(
        output_dir=str(run.checkpoints_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.learning_rate, per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulate,
        # An eval batch larger than the train batch is a classic out-of-memory at the first eval.
        per_device_eval_batch_size=micro, max_length=settings.max_length,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_strategy="steps",
        seed=settings.seed, report_to=[], lr_scheduler_type="constant", include_num_input_tokens_seen=True,
        use_cpu=device_choice.device == "cpu", **device_choice.trainer_precision(),
        # Said either way: left unset (None), transformers turns the bars off whenever its logger
        # is quieter than WARNING (transformers.logging.set_verbosity_error(), a common notebook
        # line), and swaps in PrinterCallback, which prints every log dict.
        disable_tqdm=not progress,
    )
    # Activation (gradient) checkpointing trades a third more compute for memory that a small
    # model on CPU does not need; TRL turns it on by default. The field was renamed in transformers 5.
    fields_ = config_cls.__dataclass_fields__
    kw["activation_checkpointing" if "activation_checkpointing" in fields_ else "gradient_checkpointing"] = False
    return kw


def _oom_hint(err: BaseException) -> str | None:
    text = str(err).lower()
    if "out of memory" in text or isinstance(err, MemoryError):
        return ("out of memory: lower micro_batch_size (each step stays the same, in more passes), "
                "then batch_size or max_length, or use a smaller LoRA rank")
    return None


def show_progress(trainer, progress: bool = True) -> None:
    """What the trainer puts on the screen while it trains: with ``progress``, one bar of its
    steps with the last loss in its postfix (:class:`ftkit.training.events.LossBar`); without, nothing.
    A ``disable_tqdm=True`` in the trainer's arguments (``settings.trl``) turns the bar off too.

    Either way the trainer's log dicts are not printed: transformers' ``ProgressCallback.on_log``
    writes each one under its bar (``PrinterCallback`` prints them when the bar is off, and a
    notebook's ``NotebookProgressCallback`` adds a table row), a second copy of what the run's
    ``log`` and ``end`` events carry, which a caller's own line per step (``ftkit run``) would
    have to compete with.

    >>> show_progress(trainer, progress=False)   # doctest: +SKIP
    """
    import sys

    from transformers import PrinterCallback, ProgressCallback

    from ftkit.training.events import LossBar

    printing = [ProgressCallback, PrinterCallback]  # LossBar too: it is a ProgressCallback
    notebook = sys.modules.get("transformers.utils.notebook")  # loaded only where a notebook runs this
    if notebook is not None:
        printing.append(notebook.NotebookProgressCallback)
    for cls in printing:
        while trainer.pop_callback(cls) is not None:
            pass
    if progress and not trainer.args.disable_tqdm:
        trainer.add_callback(LossBar())


def _event_callback(trainer):
    """The trainer's :class:`ftkit.training.events.EventCallback` (None: the trainer has none)."""
    from ftkit.training.events import EventCallback

    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EventCallback)), None)


def train_and_record(run: Run, trainer, tokenizer, bus, stop, *, resumed: bool = False,
                     preflight: str | None = None, before=None, progress: bool = True) -> Run:
    """Run a TRL trainer inside ``run``: record its events and final status, save its adapter.

    A stop from the flag, or asked from another process (``run.request_stop()``), ends after the
    current step with a checkpoint there (EventCallback asks for it), so a resume starts exactly at
    that step; after a KeyboardInterrupt the adapter is still saved and a resume starts at the last
    periodic checkpoint. Any other exception marks the run failed with the message (and what to
    reduce, for out-of-memory) and is raised again.
    ``before()``, when given, runs first inside the same record: a check that may fail the run.
    ``progress``: the trainer's bar, or nothing on the screen (see :func:`show_progress`).

    The ``end`` event and the final status carry ``step``, ``max_steps`` (planned) and
    ``ended_by``: ``"time budget"`` (status completed), ``"stop requested"`` or ``"interrupted"``
    (status stopped), None when the run ended by itself; :func:`ftkit.runs.outcome` says it in words.
    """
    from ftkit.training.events import EVENTS

    show_progress(trainer, progress)
    if getattr(trainer.args, "use_cpu", False):  # a neighbour that starts or ends mid-run changes the free cores
        from ftkit.models import threads

        trainer.add_callback(threads.training_callback())
    feed = _event_callback(trainer)  # the EventCallback: it knows whether the time budget ended the run
    run.set_status("running")  # this process, for `interrupted` if it dies
    checkpoint = None
    if resumed:
        run.clear_stop_request()  # the request that ended the stretch before must not end this one
        checkpoint = run.last_checkpoint()
        run.record("resume", {"step": run.resume_step()})  # later steps of the cut-off stretch are logged again
    recorders = [(name, bus.on(name, lambda payload, name=name: run.record(name, payload)))
                 for name in EVENTS]
    recorders += [(name, bus.on(name, lambda payload: run.heartbeat(payload["step"])))
                  for name in ("log", "checkpoint")]
    if preflight:
        run.record("preflight", {"text": preflight})
    model = trainer.model
    model.train()
    try:
        if before is not None:
            before()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        status = "stopped" if stop else "completed"
        ended_by = STOP_REQUESTED if stop else (feed.ended_by if feed is not None else None)
    except KeyboardInterrupt:
        status, ended_by = "stopped", KEYBOARD_INTERRUPT
    except Exception as err:
        hint = _oom_hint(err)
        message = f"{type(err).__name__}: {err}"
        bus.emit("error", {"message": message, "hint": hint})
        run.set_status("failed", error=message, hint=hint, step=trainer.state.global_step)
        raise
    finally:
        model.eval()
        for name, fn in recorders:
            bus.off(name, fn)
    if getattr(trainer, "is_fsdp_enabled", False):
        # PEFT's FSDP recipe: gather the full (not sharded) state dict, so the adapter saved is
        # the whole adapter, loadable without FSDP.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run.adapter_dir))  # every process calls it: FSDP gathers the shards
    if is_main_process():
        tokenizer.save_pretrained(run.adapter_dir)
    step, planned = trainer.state.global_step, trainer.state.max_steps
    # The trainer's closing summary, which its bar no longer prints (None where it never got there).
    summary = {"train_loss": None, "train_runtime": None, **(feed.summary if feed is not None else {})}
    end = {"step": step, "max_steps": planned, "status": status, "ended_by": ended_by, **summary}
    run.record("end", end)
    bus.emit("end", dict(end))  # a copy: a subscriber may change its payload
    best = trainer.state.best_model_checkpoint  # set by early stopping (load_best_model_at_end)
    extra = {"best_checkpoint": best, "best_metric": trainer.state.best_metric} if best else {}
    if status == "stopped" and run.stop_requested:  # who asked, for the panels to say
        extra["stop_request"] = run.stop_request
    run.set_status(status, step=step, max_steps=planned, ended_by=ended_by, **extra)
    trainer.accelerator.wait_for_everyone()  # every process then reads the final status
    # Without the autocast wrapper mixed precision put on its forward: run.model answers as a
    # loaded run would.
    run.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return run
