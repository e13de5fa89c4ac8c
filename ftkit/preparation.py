"""Before anything trains: the data read, checked and split, the plan the task and the config make of
it, and every problem a run would refuse, found before a model loads (``ftkit run --check`` and
``ftkit run`` say the same).

    prepared = prepare_data(config, tokenizer)     # load, check, split (and the DPO pairs)
    p = plan(config, prepared)                     # templates, metrics, answer length, stage settings
    problems, notes = preflight(prepared, p, tokenizer, model_context(model))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import datasets
from tqdm.auto import tqdm

from ftkit.data import examples
from ftkit.config import ConfigError, DPOStage, PipelineConfig, SFTStage, TemplateConfig, template_name
from ftkit.data import provenance
from ftkit.data.canonical import DataError, chat_turns, check_data, group_column, label_set, split
from ftkit.data.report import char_limit, overlap_note, rows_text
from ftkit.training.dpo import preflight as dpo_preflight
from ftkit.training.dpo import to_trl_pairs
from ftkit.generation.endpoint import Endpoint
from ftkit.evaluation import metrics as M
from ftkit import tasks
from ftkit.prompts import (CLASSIFY_INSTRUCTION, DEFAULT_INSTRUCTION, LONG_LABEL_LIST, SHORT_PROMPT, PromptTemplate,
                           check_fits, few_shot, prompt_lengths, without_label_list)
from ftkit.retrieval import retrieved_shots
from ftkit.tasks import Task
from ftkit.training.sft import preflight as sft_preflight
from ftkit.training.sft import to_trl_rows

__all__ = ["Plan", "Prepared", "RunRefused", "build_template", "model_context", "plan", "preflight",
           "prepare_data", "run_data", "training_template"]


@dataclass
class Prepared:
    """The data after loading, checking and splitting."""

    train: datasets.Dataset
    test: datasets.Dataset  # the held-out rows that are evaluated (after ``data.limit``)
    labels: list[str]
    description: str
    leakage: str = ""  # the leakage check of the split (and of the DPO pairs), in words
    pairs: datasets.Dataset | None = None  # the DPO pairs, when config.dpo is set (after ``data.train_limit``)
    task: Task = field(default_factory=lambda: tasks.get("classification"))
    train_limit: int = 0  # SFT trains on at most this many of ``train`` (0: all); shots come from all of it
    data_record: dict | None = None  # where the rows came from and which were held out (ftkit.data.provenance)
    answer_tokens: list[int] = field(default_factory=list)  # tokens of the training rows' references (answer length)

    @property
    def training_rows(self) -> datasets.Dataset:
        """The rows SFT trains on: ``train``, or its first ``train_limit`` rows."""
        if self.train_limit and self.train_limit < len(self.train):
            return self.train.select(range(self.train_limit))
        return self.train


@dataclass
class Plan:
    """What the task and the config make of the prepared data: the prompts to measure, the one to
    train on, the metrics (the headline first) and the answer length."""

    task: Task
    templates: list[PromptTemplate]
    training_template: PromptTemplate
    metrics: dict
    headline: str
    max_new_tokens: int
    labels: list[str]  # the label set, for a classification task
    answer_length: str = ""  # where max_new_tokens came from, in words (see answer_length)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # template name -> the hosted model asked with it
    sft: SFTStage | None = None  # the config's SFT settings with the task's where it leaves them (max_length)
    dpo: DPOStage | None = None  # likewise for DPO
    fit_length: tuple[str, ...] = ()  # stages whose max_length was left to the task: preflight fits it to the rows


class RunRefused(ConfigError):
    """What the run would refuse, found before any training: every problem, each saying what to change
    (a :class:`~ftkit.config.ConfigError`: ``ftkit run`` exits 2 on it, as ``--check`` does)."""

    def __init__(self, problems: list[str]):
        super().__init__(problems)
        self.args = ("the run would stop before training (ftkit run --check lists this too):\n"
                     + "\n".join(f"  {p}" for p in problems),)


def _source(source: str) -> str:
    return str(examples.path(source)) if source in examples.names() else source


def prepare_data(config: PipelineConfig, tokenizer, say: Callable[[str], None] = tqdm.write) -> Prepared:
    """Load, check and split the data as ``config.data`` says, check the split for leaks, and load
    the DPO pairs when ``config.dpo`` is set; raise ``DataError`` on errors. Only a tokenizer is
    needed (``ftkit run --check`` passes one without the weights).

    Rows that share a passage (``data.group_by``; by default the ``context`` column when the rows
    have one) stay on one side of the split, so no held-out question is answered by a passage
    that training showed."""
    d = config.data
    # Token lengths are counted with the task's prompt around each row; whether they fit is the
    # pre-flight's question (:func:`preflight`), asked with the templates the run will use.
    own = examples.info(d.source).task if d.source in examples.names() else None
    chosen = tasks.get(config.task or own).on(d.source) if (config.task or own) else None
    report = tasks.check_data(_source(d.source), d.mapping or None, tokenizer=tokenizer, task=chosen,
                              long_rows=d.long_rows)  # the task's prompt in the counts; inferred when None
    if not report.ok:  # the caller prints the error, once
        raise DataError("; ".join(report.errors))
    say(f"Data: {report.summary()}")
    data = report.dataset
    group = group_column(data, d.group_by)
    stratify = d.stratify_by if d.stratify_by in data.column_names and group is None else None
    parts = split(data, test_size=d.test_size, seed=d.seed, stratify_by=stratify, group_by=group)
    train, test = parts["train"], parts["test"]
    if d.limit:
        test = test.select(range(min(d.limit, len(test))))
    how = f", stratified by {stratify}" if stratify else f", grouped by {group}" if group else ""
    trained = f"; training on {d.train_limit}" if d.train_limit and d.train_limit < len(train) else ""
    turns = len(chat_turns(test)) if "messages" in test.column_names else len(test)
    evaluated = f"{len(test)} conversations ({turns} turns)" if turns != len(test) else str(len(test))
    description = f"{len(train)} train / {len(parts['test'])} test rows{how}; evaluating on {evaluated}{trained}"
    say(f"Split: {description}")
    leakage = [overlap_note(train, test)[1]]
    record = provenance.data_record(d.source, d.mapping, data=data, used_mapping=report.mapping,
                                    test_size=d.test_size, seed=d.seed, stratify_by=stratify, group_by=group,
                                    limit=d.limit, train_limit=d.train_limit, long_rows=d.long_rows,
                                    max_chars=char_limit(tokenizer), test=test)
    pairs = None
    if config.dpo is not None:
        pair_report = check_data(_source(config.dpo.source), config.dpo.mapping or None, long_rows=d.long_rows)
        if not pair_report.ok:
            raise DataError("dpo.source: " + "; ".join(pair_report.errors))
        pairs = pair_report.dataset
        if d.train_limit and d.train_limit < len(pairs):  # drawn, not the file's first (often one topic)
            pairs = pairs.shuffle(seed=d.seed).select(range(d.train_limit))
        leakage.append(overlap_note(pairs, test, "DPO pairs")[1])
        record["pairs"] = provenance.pairs_record(config.dpo.source, config.dpo.mapping, pairs=pairs, seed=d.seed,
                                                  limit=d.train_limit)
    say("Leakage check: " + "; ".join(leakage))
    if config.task:
        task = tasks.get(config.task)
    else:
        guess = tasks.detect(train, report.mapping)
        if guess.task is None:  # two free-text columns could be many tasks: ask rather than guess
            raise DataError(f"task: cannot tell which task this data is for: {guess.why}")
        task = guess.task
        sure = "" if guess.sure else ", a guess"
        say(f"Task: {task.name} (inferred{sure}: {guess.why}; set task: in the config to choose)")
        read = {k: v for k, v in guess.looked_at.items() if k not in ("rows", "columns")}
        if read:
            say("  looked at: " + ", ".join(f"{k} {v}" for k, v in read.items()))
    # The house style of the task's own example on that example only; prompts that read the passage
    # when the rows carry one; a translation prompt that asks for the answers' language.
    task = task.on(d.source, rows=train)
    return Prepared(train=train, test=test, labels=label_set(train), description=description,
                    leakage="; ".join(leakage), pairs=pairs, task=task, train_limit=d.train_limit,
                    data_record=record, answer_tokens=reference_tokens(train, tokenizer))


# The answer length is read from at most this many training references: a percentile of a thousand
# is within a token or two of the whole set's, and tokenizing 100k answers would cost seconds.
REFERENCE_SAMPLE = 1000
# Answers are allowed the 95th percentile of the training references' tokens: the longest 1 in 20
# references, not the single longest (one outlier would set every batch's length), plus a margin.
ANSWER_PERCENTILE = 95
# The margin: a quarter more, for a right answer worded longer than its reference (a docstring,
# longer names), and at least 8 tokens for what a reference lacks and an answer may add: a code fence
# ("```python\n" and the closing "\n```" are 5 tokens in SmolLM2's tokenizer) and the end-of-turn.
# A rule of thumb, not a measured optimum: the answer ends (ftkit.generation.stops) decide most lengths.
MARGIN_SHARE, MARGIN_MIN = 0.25, 8


def reference_tokens(rows, tokenizer) -> list[int]:
    """The tokens of each reference answer in ``rows`` (each assistant turn of a conversation), of the
    first :data:`REFERENCE_SAMPLE`; empty without a tokenizer."""
    if tokenizer is None:
        return []
    answers = [str(r["completion"]) for r in chat_turns(rows)[:REFERENCE_SAMPLE] if r.get("completion") is not None]
    return [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]] if answers else []


def answer_length(lengths: list[int], cap: int, set_to: int = 0) -> tuple[int, str]:
    """The longest answer a run generates, and why, in words: ``set_to`` when the config sets it;
    else the :data:`ANSWER_PERCENTILE` th percentile (nearest rank) of the training references'
    token ``lengths`` plus a margin (:data:`MARGIN_SHARE`, at least :data:`MARGIN_MIN`), at most
    ``cap`` (the task's ``max_new_tokens``); ``cap`` itself without references.

    >>> answer_length([3] * 19 + [40], cap=12)
    (11, '95th percentile of the training answers (3 tokens) + margin 8')
    >>> answer_length([3, 4], cap=12, set_to=64)
    (64, 'set in the config')
    """
    if set_to:
        return set_to, "set in the config"
    if not lengths:
        return cap, "the task's default (no training answers to measure)"
    ordered = sorted(lengths)
    p = ordered[math.ceil(ANSWER_PERCENTILE / 100 * len(ordered)) - 1]
    margin = max(MARGIN_MIN, math.ceil(MARGIN_SHARE * p))
    why = f"{ANSWER_PERCENTILE}th percentile of the training answers ({p} tokens) + margin {margin}"
    if p + margin > cap:
        return cap, f"{why} = {p + margin}, capped at the task's {cap} (set max_new_tokens to allow more)"
    return p + margin, why


def plan(config: PipelineConfig, prepared: Prepared) -> Plan:
    """The prompts, metrics and lengths of this run: the config's where it gives them, else the task's.

    Few-shot examples come from the training split only: the evaluated rows stay unseen.
    """
    task = prepared.task
    labels = prepared.labels if task.name == "classification" else []
    if config.templates:
        templates = [build_template(t, prepared.train, labels, task) for t in config.templates]
    else:
        templates = task.templates(prepared.train, labels=labels)
    endpoints = {template_name(t): t.endpoint for t in config.templates if t.endpoint is not None}
    # Unless sft.template names one, the tuned model trains on a prompt the local model was asked.
    named = config.sft is not None and config.sft.template
    local = [t for t in templates if t.name not in endpoints]
    metrics = M.resolve(config.metrics) if config.metrics else M.resolve(task.metrics)
    # A task declares the lengths its rows need (code and chat are long); a config's own value wins.
    sft = replace(config.sft, max_length=config.sft.max_length or task.max_length) if config.sft else None
    dpo = replace(config.dpo, max_length=config.dpo.max_length or task.max_length) if config.dpo else None
    # Answers as long as the training answers are (a high percentile and a margin), within the task's
    # length: a batch runs until its longest answer ends, so an answer that does not stop costs this.
    max_new_tokens, why = answer_length(prepared.answer_tokens, task.max_new_tokens, config.max_new_tokens)
    if labels and config.constrain_labels and not config.max_new_tokens and prepared.answer_tokens:
        # A constrained answer ends with its label: the longest, past the task's cap (a cap cuts labels invalid).
        n = max(prepared.answer_tokens)
        max_new_tokens, why = n + 1, f"the longest label ({n} tokens) + 1: answers are constrained to the labels"
    return Plan(task=task, templates=templates,
                training_template=training_template(config, templates if named else (local or templates), labels),
                metrics=metrics, headline=next(iter(metrics)),
                max_new_tokens=max_new_tokens, answer_length=why, labels=labels, endpoints=endpoints,
                sft=sft, dpo=dpo,
                fit_length=tuple(name for name, stage in (("sft", config.sft), ("dpo", config.dpo))
                                 if stage is not None and not stage.max_length))


def run_data(prepared: Prepared, p: Plan, kind: str = "sft") -> dict | None:
    """The data record a run of ``kind`` ("sft" or "dpo") keeps (``data.json``, see
    :mod:`ftkit.data.provenance`): the prepared split with the plan's task, metrics, answer length, the
    template it trains on and the prompts measured beside it; the DPO pairs for a DPO run only."""
    if prepared.data_record is None:
        return None
    record = {k: v for k, v in prepared.data_record.items() if kind == "dpo" or k != "pairs"}
    return provenance.with_prompts(record, task=p.task.name, metrics=list(p.metrics), max_new_tokens=p.max_new_tokens,
                                   max_new_tokens_from=p.answer_length, answer_end=p.task.answer_end,
                                   labels=p.labels, stop_strings=p.task.stop_strings,
                                   training_template=p.training_template, templates=p.templates,
                                   endpoints=p.endpoints)


def preflight(prepared: Prepared, p: Plan, tokenizer, context: int | None,
              evaluation: bool = True) -> tuple[list[str], list[str]]:
    """Everything the run checks before it trains, with the templates and settings it will use:
    every prompt filled from the held-out rows (and, for a local model, within its ``context`` with
    its answer), code rows' tests, SFT's pre-flight on the training rows with the training template
    and ``max_length``, DPO's on the pairs. Returns the problems (each says what to change) and notes
    (the token lengths each template makes). ``ftkit run --check`` prints both; the run refuses to
    start on a problem. ``evaluation=False`` (``ftkit train``, which evaluates nothing) asks the
    training checks only.

    Where the config leaves a stage's ``max_length`` to the task (0), it is raised here to the
    longest training example when that is longer (``p.sft``/``p.dpo`` change, and a note says so):
    the task's length is a default for its kind of data, not a limit on the user's rows."""
    problems, notes = [], []
    if evaluation:
        _prompt_checks(prepared, p, tokenizer, context, problems, notes)
    if p.sft is not None:
        try:
            trl_rows = to_trl_rows(prepared.training_rows, p.training_template, tokenizer)
        except (KeyError, ValueError) as err:
            return [*problems, f"sft: the {p.training_template.name!r} prompt: {err.args[0]}"], notes
        p.sft, check = _fitted(p, "sft", lambda n: sft_preflight(tokenizer, trl_rows, n), context, notes)
        problems += [f"sft: {x}" for x in check.problems]
        notes += [f"sft ({p.training_template.name!r} prompt, max_length {p.sft.max_length}): {x}"
                  for x in check.notes]
    if p.dpo is not None and prepared.pairs is not None:
        try:
            pairs = to_trl_pairs(prepared.pairs, p.training_template)
        except (KeyError, ValueError) as err:  # e.g. a QA prompt that reads {context}: pairs without one
            return [*problems, f"dpo: the {p.training_template.name!r} prompt cannot be filled from the pairs: "
                               f"{err.args[0]}. Add that column to the pairs, or train on another template "
                               "(sft.template)"], notes
        p.dpo, check = _fitted(p, "dpo", lambda n: dpo_preflight(tokenizer, pairs, None, n), context, notes)
        problems += [f"dpo: {x}" for x in check.problems]
        notes += [f"dpo (max_length {p.dpo.max_length}): {x}" for x in check.notes]
    return problems, notes


def _prompt_checks(prepared: Prepared, p: Plan, tokenizer, context, problems: list[str], notes: list[str]) -> None:
    rows = chat_turns(prepared.test)
    if any(fn is M.pass_at_1 for fn in p.metrics.values()):  # each held-out row must say how it is tested
        untested = {}
        for i, row in enumerate(rows):
            try:
                M.code_tests(row)
            except ValueError as err:
                untested.setdefault(str(err), []).append(i)
        problems += [f"data: held-out row(s) {rows_text(idx)}: {why}" for why, idx in untested.items()]
    for t in p.templates:
        hosted = t.name in p.endpoints  # a hosted model has its own context and tokenizer: filled, not counted
        try:
            counts = [len(t.messages(r)) for r in rows] if hosted else prompt_lengths(t, rows, tokenizer)
        except (KeyError, ValueError) as err:  # a placeholder the rows do not fill
            problems.append(f"templates: {t.name!r}: {err.args[0]}")
            continue
        if hosted:
            continue
        fits = f" of the model's {context}" if context else ""
        notes.append(f"prompt {t.name!r}: {_spread(counts)} tokens + up to {p.max_new_tokens} new{fits}")
        if context:
            try:
                check_fits(t, rows, tokenizer, context, p.max_new_tokens, counts=counts)
            except ValueError as err:
                problems.append(f"templates: {err}")


def _fitted(p: Plan, stage: str, check, context: int | None, notes: list[str]):
    """The stage's settings and its pre-flight (``check(max_length)``), with ``max_length`` raised to
    the longest example (in steps of 64, within ``context``) where the config left it to the task."""
    settings = getattr(p, stage)
    result = check(settings.max_length)
    if stage in p.fit_length and result.longest > settings.max_length and (not context or result.longest <= context):
        # A task's length fits its own example; a user's rows may be longer: grow rather than refuse.
        fitted = 64 * math.ceil(result.longest / 64)
        fitted = min(fitted, context) if context else fitted
        notes.append(f"{stage}: max_length {fitted}: the {p.task.name} task's {settings.max_length} raised to fit "
                     f"the longest training example ({result.longest} tokens); set {stage}.max_length to choose")
        settings = replace(settings, max_length=fitted)
        result = check(fitted)
    return settings, result


def _spread(counts: list[int]) -> str:
    if not counts:
        return "no rows,"
    ordered = sorted(counts)
    return f"median {ordered[len(ordered) // 2]}, longest {ordered[-1]}"


def build_template(t: TemplateConfig, train, labels: list[str], task: Task | None = None) -> PromptTemplate:
    """The :class:`~ftkit.prompts.PromptTemplate` a template section describes; what it leaves
    out comes from the task (classification's for labelled rows when none is given, else the
    prompt as it is)."""
    if task is None and labels:
        task = tasks.get("classification")
    instruction = t.instruction or (task.instruction if task is not None else DEFAULT_INSTRUCTION)
    system = t.system
    if system is None and t.kind != "zero_shot" and task is not None:
        system = task.system
    system = system or None  # "" means no system prompt
    name = template_name(t)
    if t.kind == "few_shot":
        return few_shot(train, k=t.k, strategy=t.strategy, seed=t.seed, instruction=instruction,
                        system=system, labels=labels, name=name)
    if t.kind == "retrieved_shots":  # the pool is the training split: never a held-out row
        return retrieved_shots(train, k=t.k, instruction=instruction, system=system, labels=labels, name=name)
    return PromptTemplate(name=name, instruction=instruction, system=system, labels=list(labels))


def training_template(config: PipelineConfig, templates: list[PromptTemplate], labels=()) -> PromptTemplate:
    """The template SFT and DPO train on: the one ``sft.template`` names, else the first
    without shots (a tuned model should not need examples in every request); never one that
    retrieves its shots per request (each training row would be shown its nearest neighbours).

    For a classifier (``labels``), ``sft.template: short prompt`` names that template without the
    label list (:func:`~ftkit.prompts.without_label_list`), the default over :data:`~ftkit.prompts.LONG_LABEL_LIST`
    labels where it would be the task's instruction (a config's own is kept); the tuned model is asked with it too.
    """
    wanted = config.sft.template if config.sft is not None else ""
    chosen = None
    for t in templates:
        if wanted and t.name == wanted and t.retriever is not None:
            raise ConfigError([f"sft.template: {wanted!r} retrieves its examples per request from the training "
                               "rows, so it cannot be the prompt SFT trains on; name a zero-shot or few-shot one"])
        if (t.name == wanted) if wanted else not (t.shots or t.retriever is not None):
            chosen = t
            break
    if chosen is None and wanted == SHORT_PROMPT and not labels:
        raise ConfigError([f"sft.template: {SHORT_PROMPT!r} leaves out the label list of a classification "
                           "task, and this run has no labels; name another template or set task: classification"])
    if chosen is None and wanted == SHORT_PROMPT:  # the short form of the template it would be otherwise
        base = next((t for t in templates if not (t.shots or t.retriever is not None)), None)
        return without_label_list(base or PromptTemplate(instruction=CLASSIFY_INSTRUCTION, labels=list(labels)))
    chosen = chosen or (templates[0] if templates else PromptTemplate())
    if not wanted and len(labels) > LONG_LABEL_LIST and chosen.instruction == CLASSIFY_INSTRUCTION:
        return without_label_list(chosen)
    return chosen


def model_context(model) -> int | None:
    """The longest sequence ``model`` takes, in tokens, where its config says so."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)
