"""Supervised fine-tuning with LoRA through TRL's ``SFTTrainer``, recorded as a run.

    run = train_sft(model, tokenizer, parts["train"], template=template, config=SFTSettings())
    run.status            # {'status': 'completed', ...}
    run.events("log")     # the loss curve

Rows are canonical prompt/completion rows (see :mod:`ftkit.data.canonical`). The prompt is rendered by the
same :class:`~ftkit.prompts.PromptTemplate` that evaluation uses, so the fine-tuned model is asked
exactly what it was trained on; the loss covers the completion tokens only (TRL's default for
prompt/completion data), including the end-of-turn token, so the model learns to stop. A
conversation (``messages`` rows) trains every assistant turn, and only those.

Where ``fastpath.enabled("trl", "transformers")`` the loss is TRL's computed leaner
(:mod:`ftkit.fastpath.sft_loss`: the LM head over the completion positions only, a prompt start
the rows share computed once); otherwise ``SFTTrainer`` trains as TRL ships it (``FTKIT_FASTPATH=0``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ftkit import fastpath
from ftkit.training.events import EventBus, StopFlag
from ftkit.training.settings import SAMPLE_EVERY_HELP, SAMPLE_ROWS_HELP, Preflight, TrainingSettings, default

if TYPE_CHECKING:
    import datasets

    from ftkit.prompts import PromptTemplate
    from ftkit.runs import Run

__all__ = ["SFTSettings", "conversation_tokens", "preflight", "to_trl_rows", "train_sft", "trainer_class"]


@dataclass
class SFTSettings(TrainingSettings):
    name: str = default("name", "sft")
    epochs: float = default("epochs", 2.0)
    # 4, not 8: at equal wall-clock on a 2-core CPU (benchmarks/time_to_accuracy.py, a prompt start
    # shared by the rows computed once per pass) 1 minute reached 0.92 on banking77-10 with 4 and
    # 0.83 with 8, and 80 s 0.92 and 0.94 on the built-in example. On a GPU, raise it.
    batch_size: int = default("batch_size", 4)
    eval_steps: int = field(default=20, metadata={
        "help": "Evaluate every N steps (with an eval split)", "after": "logging_steps", "min": 1})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Stop after N evaluations without improvement, keeping the best (0: off)", "after": "save_steps",
        "min": 0})
    # Off here: a script asks for it with sample_from=; the TrainPanel turns it on (about 8 samplings a
    # run, ftkit.training.settings.sampling_interval), and so does `ftkit run` (ftkit.config.SFTStage).
    sample_every: int = field(default=0, metadata={"help": SAMPLE_EVERY_HELP, "after": "eval_steps", "min": 0})
    # At most 16: they are answered in one batch, inside the training time.
    sample_rows: int = field(default=3, metadata={"help": SAMPLE_ROWS_HELP, "after": "sample_every", "min": 1,
                                                  "max": 16})


def to_trl_rows(rows, template: PromptTemplate, tokenizer=None) -> datasets.Dataset:
    """Canonical rows as the rows TRL's ``SFTTrainer`` trains on.

    Prompt/completion rows become TRL's conversational prompt/completion rows, the prompt rendered
    by ``template``: the loss covers the completion only. A conversation (``messages``) is
    tokenized here (``tokenizer`` is needed) into ``input_ids`` and ``assistant_masks``, so the
    loss covers **every** assistant turn and nothing else (see :func:`conversation_tokens`); the
    template's system prompt and instruction apply to it as :meth:`PromptTemplate.conversation` says.
    """
    import datasets

    from ftkit.data.canonical import as_rows

    rows = as_rows(rows)
    if rows and "messages" in rows[0]:
        if tokenizer is None:
            raise ValueError("conversations are tokenized before training, to mask every turn but the "
                             "assistant's: pass the tokenizer")
        out = []
        for r in rows:
            ids, mask = conversation_tokens(tokenizer, template.conversation(r["messages"], r))
            out.append({"input_ids": ids, "assistant_masks": mask})
        return datasets.Dataset.from_list(out)
    return datasets.Dataset.from_list([
        {"prompt": template.messages(r), "completion": [{"role": "assistant", "content": r["completion"]}]}
        for r in rows])


def conversation_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """The token ids of a whole conversation through the chat template, and its assistant mask:
    1 on each assistant turn's tokens (its end-of-turn token included), 0 on everything else.

    TRL's own mask (``assistant_only_loss``) needs ``{% generation %}`` markers in the chat template,
    which SmolLM2's and most others lack. Here each assistant turn's span is found in the rendered
    text instead: it starts where the conversation up to it, rendered with the generation prompt,
    ends, and ends where the conversation through it ends. A chat template that renders earlier turns
    differently once later ones follow (some drop past reasoning) has no such spans, and is refused.

    >>> ids, mask = conversation_tokens(tokenizer, conversation)  # doctest: +SKIP
    >>> tokenizer.decode([t for t, m in zip(ids, mask) if m])      # doctest: +SKIP
    'Hi Ann!<|im_end|>\\nBye Ann<|im_end|>\\n'
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[:k + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
            raise ValueError(f"the chat template renders turn {k} differently once later turns follow, so its "
                             "answer cannot be located in the conversation; train on prompt/completion rows "
                             "(each conversation up to one answer) instead")
        spans.append((len(before), len(through)))
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc["offset_mapping"]]
        return enc["input_ids"], [int(any(a <= st < b for a, b in spans)) for st in starts]
    # A slow tokenizer has no offsets: count the tokens of each prefix instead.
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    mask = [0] * len(ids)
    for a, b in spans:
        lo = len(tokenizer(full[:a], add_special_tokens=False)["input_ids"])
        hi = len(tokenizer(full[:b], add_special_tokens=False)["input_ids"])
        mask[lo:hi] = [1] * (hi - lo)
    return ids, mask


# --- pre-flight --------------------------------------------------------------------------------

def preflight(tokenizer, trl_rows: datasets.Dataset, max_length: int) -> Preflight:
    """Render, tokenize and truncate every row like the trainer, and report what would go wrong:
    answers without the end-of-turn token (the model would not learn to stop), answers that
    ``max_length`` cuts short, and rows it leaves with nothing to learn. For conversations, every
    assistant turn is an answer."""
    from ftkit.data.report import rows_text

    problems, notes = [], []
    if not getattr(tokenizer, "chat_template", None):
        problems.append("the tokenizer has no chat template, so prompts cannot be rendered as chat; "
                        "load the model with ftkit.load_model, which sets one")
    zero, cut, no_end, trained_counts, segments, longest = [], [], [], [], [], 0
    end_id = tokenizer.eos_token_id
    for i, row in enumerate(trl_rows):
        ids, mask = _tokens_and_mask(tokenizer, row)
        answers = _runs(mask)  # (start, end) of each trained span: one per answer
        kept = mask[:max_length]
        trained = sum(kept)
        trained_counts.append(trained)
        longest = max(longest, len(ids))
        if any(end_id not in ids[a:b] for a, b in answers):
            no_end.append(i)
        if trained == 0:
            zero.append(i)
        elif any(b > max_length for _, b in answers):
            cut.append(i)
        if i == 0:
            segments = [(tokenizer.decode(ids[a:b]), bool(kept[a])) for a, b in _runs(kept, both=True)]
    if no_end:
        problems.append(f"an answer does not end with the end-of-turn token {tokenizer.eos_token!r} in "
                        f"{len(no_end)} example(s) (rows {rows_text(no_end)}): the model will not learn to stop. "
                        "The chat template drops it; load the model with ftkit.load_model or fix the template")
    if zero:
        problems.append(f"{len(zero)} example(s) have no trained tokens left after truncation to "
                        f"max_length={max_length} (rows {rows_text(zero)}); the trainer would drop them or report "
                        "a loss of 0. Raise max_length or shorten those prompts")
    if cut:
        problems.append(f"{len(cut)} example(s) have an answer cut short by max_length={max_length} (rows "
                        f"{rows_text(cut)}): the model would learn answers that stop mid-way, without the "
                        f"end-of-turn token. Raise max_length (the longest example is {longest} tokens) or "
                        "drop those rows")
    if trained_counts:
        notes.append(f"{len(trained_counts)} examples, {sum(trained_counts)} trained tokens "
                     f"({sum(trained_counts) / len(trained_counts):.1f} per example), longest {longest} tokens")
    return Preflight(segments=segments, problems=problems, notes=notes, longest=longest)


def _tokens_and_mask(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """A TRL row's token ids and which of them are trained, as the trainer will see them."""
    if "input_ids" in row:  # a conversation, tokenized with its assistant mask
        return list(row["input_ids"]), list(row["assistant_masks"])
    prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    f_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    return f_ids, [0] * len(p_ids) + [1] * max(0, len(f_ids) - len(p_ids))


def _runs(mask: list[int], both: bool = False) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of 1s in ``mask`` (``both``: of each run of equal values)."""
    out, start = [], 0
    for k in range(1, len(mask) + 1):
        if k == len(mask) or mask[k] != mask[start]:
            if both or mask[start]:
                out.append((start, k))
            start = k
    return out


# --- training -----------------------------------------------------------------------------------

def trainer_class():
    """The trainer class a run trains with: TRL's ``SFTTrainer`` with the leaner completion loss of
    :mod:`ftkit.fastpath.sft_loss` where ``fastpath.enabled("trl", "transformers")`` (the same loss
    and gradients), else ``SFTTrainer`` as TRL ships it."""
    if fastpath.enabled("trl", "transformers"):
        from ftkit.fastpath.sft_loss import trainer_class as fast

        return fast()
    from trl import SFTTrainer

    return SFTTrainer


_trainer_class = trainer_class  # the name before the fast path moved to ftkit.fastpath


def _trl_config(settings: SFTSettings, run: Run, device_choice, has_eval: bool, progress: bool = True):
    from trl import SFTConfig

    from ftkit.training.trainer import trl_arguments

    # One pass per step on a CPU too: rows that share a prompt start compute it once per pass (see
    # ftkit.fastpath.sft_loss), so one pass of 8 costs less than two of 4 (benchmarks/time_to_accuracy.py).
    kw = trl_arguments(settings, run, device_choice, SFTConfig, cpu_micro_batch=0, progress=progress)
    if has_eval:
        kw.update(eval_strategy="steps", eval_steps=settings.eval_steps)
        if settings.early_stopping_patience:
            kw.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
                      save_steps=settings.eval_steps)
    kw.update(settings.trl)
    return SFTConfig(**kw)


def train_sft(model, tokenizer, train, eval=None, *, template: PromptTemplate | None = None,
              config: SFTSettings | None = None, bus: EventBus | None = None, stop: StopFlag | None = None,
              resume: Run | None = None, runs_root=None, progress: bool = True, sample_from=None,
              data_record: dict | None = None) -> Run:
    """Fine-tune on ``train`` (canonical rows); return the recorded :class:`Run`.

    ``model`` itself is left unchanged: the run trains LoRA on a copy that shares its weights and
    keeps the result as ``run.model`` (see :mod:`ftkit.training.trainer`). ``template`` renders each
    prompt (default: the prompt as it is). ``bus`` receives the live events; ``stop.set()`` ends
    the run after the current step with the adapter saved. With ``resume`` (a stopped run),
    training continues from its last checkpoint: same step count, same optimizer state. Raises
    ``ValueError`` when the pre-flight check finds a problem.

    ``data_record``: where ``train`` came from and which rows were held out
    (:func:`ftkit.data.provenance.data_record`), kept as the run's ``data.json`` from its creation, so
    ``ftkit.data.provenance.held_out(run)`` and ``ftkit report RUN --evaluate`` find its held-out rows.

    ``progress=True`` shows one bar of the run's steps with the last loss in its postfix;
    ``False`` shows nothing, for a caller that prints its own line per logged step (``ftkit run``)
    or draws its own bar (the TrainPanel). Either way the trainer's raw log dicts are not printed:
    every number is in the ``log`` and ``end`` events and in ``run.events()``.

    With ``config.sample_every`` N and ``sample_from`` (held-out rows, e.g. the test split),
    ``config.sample_rows`` of them are answered before the first step and every N steps, greedily,
    with ``template``: ``sample`` events, kept in ``run.events("sample")`` (see
    :mod:`ftkit.training.samples`). Training is the same with them as without. Without rows,
    nothing is sampled, and a warning says so.

    A ``config.max_minutes`` budget ends the run before the step that would overrun it, with
    status ``completed`` and ``ended_by: "time budget"`` in ``run.status`` and the ``end`` event
    (``ftkit.runs.outcome(run.status)``: "stopped by the time budget at step 20 of 40").

    >>> run = train_sft(model, tokenizer, rows, config=SFTSettings(max_steps=40), progress=False)  # doctest: +SKIP
    >>> run.status["status"], run.status["ended_by"]                                # doctest: +SKIP
    ('completed', None)
    """
    from transformers import EarlyStoppingCallback

    from ftkit.models.device import model_info
    from ftkit.prompts import zero_shot
    from ftkit.runs import fingerprint, new_run
    from ftkit.training.callbacks import EventCallback
    from ftkit.training.trainer import quiet_training, train_and_record, trainable_model

    config = config or SFTSettings()
    template = template or zero_shot()
    bus = bus if bus is not None else EventBus()
    stop = stop if stop is not None else StopFlag()  # not `stop or`: an unset flag is falsy
    trl_train = to_trl_rows(train, template, tokenizer)
    trl_eval = to_trl_rows(eval, template, tokenizer) if eval is not None else None
    check = preflight(tokenizer, trl_train, config.max_length)
    if check.problems:
        raise ValueError("pre-flight check failed:\n" + "\n".join(check.problems))
    samples = _sample_set(config, sample_from, template, tokenizer, check)

    info = model_info(model)
    with quiet_training(), trainable_model(model, config.lora) as (trainee, peft_config):
        run = resume or new_run(config.name, {
            "kind": "sft", "settings": asdict(config), "template": asdict(template), "base_model": info.source,
            "data_fingerprint": fingerprint(train),
            "train_rows": len(trl_train), "eval_rows": len(trl_eval) if trl_eval is not None else 0,
            "device": str(info.device),
        }, root=runs_root, data=data_record)
        callbacks = [EventCallback(bus, stop, run.id, max_seconds=config.max_minutes * 60, run=run)]
        if samples:  # after EventCallback: the "start" event comes before the step-0 answers
            from ftkit.training.callbacks import SampleCallback

            callbacks.append(SampleCallback(bus, tokenizer, samples, config.sample_every))
        if config.early_stopping_patience and trl_eval is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
        args = _trl_config(config, run, info.device, trl_eval is not None, progress)
        trainer = trainer_class()(model=trainee, args=args, train_dataset=trl_train, eval_dataset=trl_eval,
                                   processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
        return train_and_record(run, trainer, tokenizer, bus, stop, resumed=resume is not None,
                                preflight=str(check), progress=progress)


def _sample_set(config: SFTSettings, rows, template: PromptTemplate, tokenizer, check: Preflight):
    """The held-out rows a run answers as it trains (None: no sampling), said in the pre-flight."""
    import os
    import warnings

    from ftkit.training.samples import sample_set

    if not config.sample_every:
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would answer, on its shard of the model
        check.notes.append("sample_every is set, but answers are not sampled under a distributed launch")
        return None
    samples = sample_set(rows, template, tokenizer, config.sample_rows) if rows is not None else None
    if not samples:
        why = (f"sample_every={config.sample_every}, but no held-out rows were given to answer: pass "
               "sample_from=<held-out rows> to train_sft, or set sample_every=0")
        check.notes.append(why)
        warnings.warn(why, stacklevel=3)
        return None
    check.notes.append(f"answers {len(samples)} held-out rows (rows {', '.join(map(str, samples.indices))}) before "
                       f"the first step and every {config.sample_every} steps, at most {samples.max_new_tokens} "
                       "new tokens each")
    return samples
