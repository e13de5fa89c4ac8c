"""The pipeline's settings as one tree of dataclasses, read from a YAML or JSON file.

The tree reuses the dataclasses the notebooks use (:class:`ftkit.training.sft.SFTSettings`,
:class:`ftkit.training.dpo.DPOSettings`, :class:`ftkit.training.settings.LoraSettings`), so a key in the file is the
same name as a keyword in Python. A config is validated by walking the dataclass fields before any
model loads: an unknown key, a wrong type or a value outside the allowed ones is reported with its
path (``sft.learnign_rate``), the allowed keys or values, and the closest match.

.. code-block:: yaml

    data: {source: tickets.csv, mapping: {prompt: message, completion: queue}, limit: 100}
    model: {name: HuggingFaceTB/SmolLM2-360M-Instruct}
    templates:
      - {kind: zero_shot}
      - {kind: few_shot, k: 8}
      - {kind: retrieved_shots, k: 8}   # per request, the 8 training rows nearest to the input
      # a hosted model as a baseline: any OpenAI-compatible server; the key stays in the environment
      - {kind: few_shot, k: 8, endpoint: {model: gpt-4o-mini, api_key_env: OPENAI_API_KEY,
                                          price_per_million_input: 0.15, price_per_million_output: 0.60}}
    sft: {epochs: 2, max_minutes: 10, lora: {r: 16}}
    dpo: {source: pairs.jsonl, max_minutes: 5}

>>> config = config_from_dict({"sft": {"epochs": 1}, "dpo": None})
>>> config.sft.epochs, config.dpo
(1.0, None)
>>> config_from_dict({"sft": {"learnign_rate": 1e-3}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
ftkit.config.ConfigError: invalid config: sft.learnign_rate: unknown key (did you mean 'learning_rate'?); ...
>>> config_from_dict({"sft": {"batch_size": -3, "lora": {"dropout": 1.0}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
ftkit.config.ConfigError: invalid config:
  sft.batch_size: -3 is below its minimum 1; allowed: >= 1
  sft.lora.dropout: 1.0 is not below 1; allowed: >= 0 and < 1

The module is over 400 lines because the dataclass tree, the walk that validates a dict against
it and the checks across its fields change together: a new key is one field here, checked the
same way as the rest.

Every number's range is declared beside its help text (``metadata={"help": ..., "min": 1}``, see
:func:`ftkit.training.settings.range_problem`); ``ftkit run --help`` shows it as ``[>= 1]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ftkit import tasks
from ftkit.data import examples
from ftkit.config_file import (  # noqa: F401
    MAX_ALIAS_VALUES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    ConfigError,
    read_config_file,
)
from ftkit.training.dpo import DPOSettings
from ftkit.generation.endpoint import Endpoint
from ftkit.evaluation.metrics import BUILTIN
from ftkit.models.device import ModelLoadError
from ftkit.models.loading import EMBEDDED_NAME, resolve_source
from ftkit.training.sft import SFTSettings
from ftkit.data.sources import path_problem
from ftkit.prompts import LONG_LABEL_LIST, SHORT_PROMPT
from ftkit.training.settings import MAX_SEED, SAMPLE_EVERY_HELP, range_problem, range_text, settings_fields

__all__ = [
    "ConfigError", "DPOStage", "DataConfig", "ModelConfig", "OutputConfig", "PipelineConfig", "SFTStage",
    "TemplateConfig", "config_from_dict", "describe", "dump_config", "load_config", "resolve_paths", "template_name",
]

TemplateKind = Literal["zero_shot", "with_system", "few_shot", "retrieved_shots"]


@dataclass
class DataConfig:
    source: str = field(default="", metadata={
        "help": "A file (CSV, TSV, JSON, JSONL, Parquet; relative to the config file) or a built-in "
                "example name; empty: the task's built-in example"})
    mapping: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Canonical field -> your column, e.g. {prompt: message, completion: queue}; "
                "empty: detect the layout"})
    test_size: float = field(default=0.2, metadata={
        "help": "Held-out share of the rows (0-1), or a row count", "above": 0})
    seed: int = field(default=0, metadata={"help": "Seed of the train/test split", "min": 0, "max": MAX_SEED})
    stratify_by: str | None = field(default="label", metadata={
        "help": "Column whose proportions both splits keep; null for a plain random split. "
                "Ignored when the data has no such column"})
    limit: int = field(default=0, metadata={
        "help": "Evaluate on at most this many held-out rows (0: all); fewer is faster", "min": 0})
    train_limit: int = field(default=0, metadata={
        "help": "Train on at most this many training rows and DPO pairs (0: all); few-shot examples are still "
                "picked from the whole training split. `ftkit run --limit N` sets this and limit", "min": 0})
    group_by: str | None = field(default=None, metadata={
        "help": "Column whose rows stay together on one side of the split (the passage, a document's title, "
                "a conversation id), so no held-out row shares it with training; null: the context passage "
                "when the rows have one, else none; '' for none"})
    long_rows: Literal["refuse", "skip"] = field(default="refuse", metadata={
        "help": "A row longer than the model can read (its context x 10 characters, at most 1,000,000): refuse "
                "names it and stops before training; skip leaves it out with a warning. (load_data in a "
                "notebook skips, where you see the warning; a headless run refuses, where a line is easy to miss)"})


@dataclass
class ModelConfig:
    name: str = field(default=EMBEDDED_NAME, metadata={
        "help": "The embedded model, a local folder (save_pretrained output), a .gguf file or a Hub id"})
    device: Literal["auto", "cpu", "cuda", "mps"] = field(default="auto", metadata={
        "help": "Where the model runs; auto picks CUDA, then MPS, then the CPU"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={
        "help": "Precision; auto decides from the device (never bf16 on a CPU without it)"})
    threads: int = field(default=0, metadata={
        "help": "CPU threads for torch; 0: one per core other processes leave free, checked again between "
                "phases and during training (two processes that each use every core slow each other far "
                "beyond 2x); a number fixes it", "min": 0})


@dataclass
class TemplateConfig:
    kind: TemplateKind = field(default="zero_shot", metadata={
        "help": "zero_shot: the instruction alone; with_system: plus a system prompt; few_shot: plus "
                "k solved examples from the training split; retrieved_shots: plus the k training rows nearest "
                "to each input (BM25 over the words), picked per request"})
    name: str | None = field(default=None, metadata={
        "help": "Name in tables and reports; default 'zero-shot', 'zero-shot + system', '<k>-shot', "
                "'retrieved <k>-shot'"})
    system: str | None = field(default=None, metadata={
        "help": "System prompt; null: a classification default for with_system/few_shot on labelled "
                "data, else none. An empty string means none"})
    instruction: str | None = field(default=None, metadata={
        "help": "The user turn with {prompt} and any column as placeholders ({labels}: the label "
                "set); null: the task's instruction (classification: the label list; QA with a passage: the "
                "question and its {context}; creative and chat: '{prompt}')"})
    k: int = field(default=8, metadata={"help": "few_shot, retrieved_shots: number of solved examples", "min": 1})
    strategy: Literal["balanced", "random", "first"] = field(default="balanced", metadata={
        "help": "few_shot: how examples are picked (balanced: every label before any repeats)"})
    seed: int = field(default=0, metadata={"help": "few_shot: seed of the random pick", "min": 0, "max": MAX_SEED})
    endpoint: Endpoint | None = field(default=None, metadata={
        "help": "Ask a hosted model with this prompt instead of the local one (a baseline beside the "
                "tuned model): an OpenAI-compatible server, e.g. {model: gpt-4o-mini} or {base_url: "
                "http://localhost:11434/v1, model: llama3.2}; null: the local model"})


MAX_LENGTH_HELP = ("Longest example (prompt + answer) in tokens. 0: the task's (" +
                   ", ".join(f"{t.name} {t.max_length}" for t in tasks.TASKS.values()) +
                   "), raised to the longest training example when that is longer. A value you set is kept: "
                   "an example longer than it would have its answer cut, so the run refuses to start and names "
                   "those rows (ftkit run --check lists them first): raise it, or drop the rows")


@dataclass
class SFTStage(SFTSettings):
    """:class:`~ftkit.training.sft.SFTSettings` plus the template the run trains on."""

    template: str = field(default="", metadata={
        "help": "Name of the template SFT (and DPO) train on and the tuned models are evaluated "
                "with; 'short prompt': classification's without the label list; empty: the first zero_shot or "
                f"with_system template (classification with over {LONG_LABEL_LIST} labels: its short prompt)"})
    max_length: int = field(default=0, metadata={"help": MAX_LENGTH_HELP, "min": 0})
    # On for a headless run too: its report is where the answers are read after the fact, and about
    # 8 samplings of 3 rows cost under 10% of the training time on a CPU (benchmarks/train_sampling.py).
    sample_every: int | None = field(default=None, metadata={
        "help": SAMPLE_EVERY_HELP + "; null: about 8 times a run, from the planned steps. The held-out rows are "
                "the evaluated ones; the console prints a line per sampling, the report a table",
        "after": "eval_steps", "min": 0})


@dataclass
class DPOStage(DPOSettings):
    """:class:`~ftkit.training.dpo.DPOSettings` plus where the preference pairs come from."""

    source: str = field(default="support_routing_preferences", metadata={
        "help": "Preference pairs (prompt/chosen/rejected): a file or a built-in example name"})
    mapping: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Canonical field -> your column for the pairs; empty: detect the layout"})
    max_length: int = field(default=0, metadata={"help": MAX_LENGTH_HELP, "min": 0})


@dataclass
class OutputConfig:
    runs_root: str = field(default="runs", metadata={"help": "Folder that receives one folder per run"})
    report: str = field(default="report.html", metadata={"help": "Where the HTML report is written"})


@dataclass
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: str | None = field(default=None, metadata={
        "help": "What the data is for; it picks the default example, prompts, metrics and answer length. "
                "null: inferred from the data (the output says which and why)", "choices": tuple(tasks.names())})
    templates: list[TemplateConfig] = field(default_factory=list, metadata={
        "help": "Prompt variants measured on the held-out rows; empty: the task's own (zero-shot, its "
                "variants, k-shot)"})
    sft: SFTStage | None = field(default_factory=SFTStage, metadata={
        "help": "LoRA SFT settings; null skips training"})
    dpo: DPOStage | None = field(default=None, metadata={
        "help": "DPO from the SFT adapter on preference pairs; null (the default) skips it"})
    metrics: list[str] = field(default_factory=list, metadata={
        "help": "Metrics per example; the first is the headline; empty: the task's", "choices": tuple(BUILTIN)})
    max_new_tokens: int = field(default=0, metadata={
        "help": "Longest generated answer, in tokens (0: the 95th percentile of the training answers' tokens "
                "+ a margin, within the task's length)", "min": 0})
    constrain_labels: bool = field(default=True, metadata={
        "help": "Classification: a local model's answer can only be one of the labels (constrained decoding), "
                "so no answer is invalid; false asks freely, as before. A hosted endpoint always answers freely"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "The whole run's time budget: training gets what the prompt baselines leave, less what scoring "
                "and timing the tuned variants will take (at least a minute; the console says how it was "
                "reckoned); sft.max_minutes still caps it. null: 10 on a CPU, none on a GPU; 0: none", "min": 0})
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------------------------
# Reading and validation


def _allowed(cls) -> list[str]:
    return [f.name for f in settings_fields(cls)]


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return {list: "a list", dict: "a mapping"}.get(origin, str(tp))
    return {str: "text", int: "an integer", float: "a number", bool: "true or false",
            type(None): "null"}.get(tp, "a mapping" if dataclasses.is_dataclass(tp) else str(tp))


def _show(value) -> str:
    """``repr(value)`` cut short: a problem names a value, it does not print a whole section."""
    return reprlib.repr(value)


def _key(key) -> str:
    """A key as it goes into a path: plain names as they are, anything else (a newline, a space,
    a number) as its repr, so a problem stays on one line and says what the key really was."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w-]+", key) else repr(key)


def _convert(tp, value, path: str, problems: list[str], f: dataclasses.Field | None = None):
    """``value`` converted to type ``tp``; problems are appended with ``path``. ``f``: the field it
    is for, whose metadata may list ``choices`` and declare a range (:func:`ftkit.training.settings.range_problem`)."""
    choices = f.metadata.get("choices") if f is not None else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path, problems, f)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is Literal:
        if value not in args:
            problems.append(f"{path}: {_show(value)} is not allowed{_suggest(value, args)}; choose one of: "
                            f"{', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__} {_show(value)}")
            return value
        return [_convert(args[0], v, f"{path}[{i}]", problems, f) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__} {_show(value)}")
        elif args:
            return {k: _convert(args[1], v, f"{path}.{_key(k)}", problems) for k, v in value.items()}
        return value
    # bool is an int in Python; a YAML `true` for a number is almost surely a mistake.
    ok = (isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))) or \
         (tp is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        problems.append(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {_show(value)}")
        return value
    if choices is not None and value not in choices:
        problems.append(f"{path}: {_show(value)} is not allowed{_suggest(value, choices)}; choose one of: "
                        f"{', '.join(choices)}")
    if tp is float and isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:  # an integer of 309 digits or more
            problems.append(f"{path}: {_show(value)} is too large for a number")
            return value
    problem = range_problem(f, value) if f is not None else None
    if problem:
        problems.append(f"{path}: {problem}")
    return value


def _build(cls, values, path: str, problems: list[str]):
    """An instance of dataclass ``cls`` from a mapping, checking every key against its fields."""
    where = path or "the config"
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping of {', '.join(_allowed(cls))}; got "
                        f"{type(values).__name__} {_show(values)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields_ = {f.name: f for f in settings_fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        key_path = f"{path}.{_key(key)}" if path else _key(key)
        if key not in fields_:
            problems.append(f"{key_path}: unknown key{_suggest(key, fields_)}; allowed keys: "
                            f"{', '.join(fields_)}")
            continue
        kwargs[key] = _convert(hints[key], value, key_path, problems, fields_[key])
    return cls(**kwargs) if len(problems) == 0 else cls()


def resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    """Make the config's relative file paths (data, pairs, a model folder, the runs folder and the
    report) relative to ``base``, the config file's folder; built-in example names and Hub ids stay
    as they are."""
    def resolve(source: str) -> str:
        if source in examples.names():
            return source
        return str(_against(base, source))

    config.data.source = resolve(config.data.source or tasks.get(config.task or "classification").examples[0])
    if config.dpo is not None:
        config.dpo.source = resolve(config.dpo.source)
    model_path = base / config.model.name
    if model_path.exists() and not Path(config.model.name).expanduser().exists():
        config.model.name = str(model_path)
    # Where the results go is read like where the data comes from: against the config's folder.
    config.output.runs_root = str(_against(base, config.output.runs_root))
    config.output.report = str(_against(base, config.output.report))
    return config


def _against(base: Path, path: str) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _check_meaning(config: PipelineConfig, problems: list[str]) -> None:
    """Checks across fields, and that the data and model can be found (without loading them)."""
    _check_source(config.data.source, "data.source", problems)
    if config.dpo is not None:
        _check_source(config.dpo.source, "dpo.source", problems)
        if config.sft is None:
            problems.append("dpo: DPO continues the SFT adapter, so it needs an sft section; add "
                            "sft: {} or set dpo: null")
    try:
        resolve_source(config.model.name)
    except ModelLoadError as err:
        problems.append(f"model.name: {err}")
    names = [template_name(t) for t in config.templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"templates: names must differ; {', '.join(dupes)} appear(s) twice. Set name: ...")
    if not names and config.task:  # the task's own variants
        task = tasks.get(config.task)
        names = ["zero-shot", *([tasks.CLOSED_BOOK] if task.passage_instruction else []), *task.variants,
                 f"{task.shots}-shot", *([f"retrieved {task.shots}-shot"] if task.shots else [])]
    # "short prompt": a classifier's training template without its label list (ftkit.prompts.without_label_list)
    if config.sft is not None and config.sft.template and names and config.sft.template not in [*names, SHORT_PROMPT]:
        problems.append(f"sft.template: no template named {config.sft.template!r}"
                        f"{_suggest(config.sft.template, names)}; templates are: {', '.join(names)}")
    retrieved = [template_name(t) for t in config.templates if t.kind == "retrieved_shots"] if config.templates \
        else [n for n in names if n.startswith("retrieved ")]  # the task's own: "retrieved <k>-shot"
    if config.sft is not None and config.sft.template and config.sft.template in retrieved:
        problems.append(f"sft.template: {config.sft.template!r} retrieves its examples per request from the training "
                        "rows, so SFT cannot train on it; name a zero_shot, with_system or few_shot template")
    for i, t in enumerate(config.templates):
        if t.endpoint is not None:
            problems.extend(f"templates[{i}].endpoint: {p}" for p in t.endpoint.problems())
    if not 0 < config.data.test_size < 1 and not (config.data.test_size >= 1 and
                                                  float(config.data.test_size).is_integer()):
        problems.append(f"data.test_size: {config.data.test_size} is neither a share between 0 and 1 "
                        "nor a row count")


def _check_source(source: str, path: str, problems: list[str]) -> None:
    if source not in examples.names() and not Path(source).is_file():
        problem = path_problem(source)
        if problem and os.path.lexists(source):  # there, but a folder, FIFO, device or broken link
            problems.append(f"{path}: {problem}")
            return
        name = Path(source).name
        problems.append(f"{path}: no file {source!r} and no built-in example {name!r}"
                        f"{_suggest(name, examples.names())}; built-in examples: {', '.join(examples.names())}")


def template_name(t: TemplateConfig) -> str:
    """The name a template gets in tables: its own, or one derived from its kind (and, asked of a
    hosted model, that model's name first: ``gpt-4o-mini zero-shot``)."""
    default = {"zero_shot": "zero-shot", "with_system": "zero-shot + system", "few_shot": f"{t.k}-shot",
               "retrieved_shots": f"retrieved {t.k}-shot"}[t.kind]
    if t.endpoint is not None:
        default = f"{t.endpoint.model} {default}"
    return t.name or default


def config_from_dict(values: dict, base: str | Path = ".") -> PipelineConfig:
    """Validate ``values`` and build the :class:`PipelineConfig`; raise :class:`ConfigError`.

    Relative file paths are read from ``base`` (the config file's folder).
    """
    problems: list[str] = []
    config = _build(PipelineConfig, values if values is not None else {}, "", problems)
    if not problems:
        if isinstance(config.data.test_size, float) and config.data.test_size.is_integer() and \
                config.data.test_size >= 1:
            config.data.test_size = int(config.data.test_size)  # a row count, as split() expects
        _check_meaning(resolve_paths(config, Path(base)), problems)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a ``.yaml``/``.yml``/``.json`` config file.

    Anything that is not a small UTF-8 text file of YAML or JSON (a directory, a FIFO, binary
    data, a file over 1 MB, nesting deeper than 32 levels, YAML aliases that expand past 1,000
    values) is a :class:`ConfigError` that names the file, raised before it costs time or memory.

    >>> load_config("pipeline.yaml")    # doctest: +SKIP
    PipelineConfig(data=DataConfig(source='tickets.csv', ...), ...)
    """
    path = Path(path)
    values = read_config_file(path)
    try:
        return config_from_dict(values, base=path.parent)
    except ConfigError as err:
        raise ConfigError(err.problems, source=path.name) from None


def describe(cls=PipelineConfig, indent: int = 0) -> str:
    """Every key of the config with its default and help text, as commented YAML.

    The help text is the same the notebooks' forms show; ``ftkit run --help`` prints this.

    >>> print(describe(OutputConfig))
    runs_root: runs  # Folder that receives one folder per run
    report: report.html  # Where the HTML report is written
    """
    lines = []
    pad = " " * indent
    hints = typing.get_type_hints(cls)
    for f in settings_fields(cls):
        tp = hints[f.name]
        nested = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
        note = f"  # {f.metadata['help']}" if f.metadata.get("help") else ""
        if nested is not None:
            many = "  # a list of these:" if typing.get_origin(tp) is list else ""
            lines.append(f"{pad}{f.name}:{note}{many}")
            lines.append(describe(nested, indent + 2))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        allowed = typing.get_args(tp) if typing.get_origin(tp) is Literal else f.metadata.get("choices")
        choice = f" [{' | '.join(map(str, allowed))}]" if allowed else ""
        choice += f" [{range_text(f)}]" if range_text(f) else ""
        value = yaml.safe_dump(default, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        lines.append(f"{pad}{f.name}: {value}{note}{choice}")
    return "\n".join(lines)


def dump_config(config: PipelineConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML that :func:`load_config` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(config)
    # load_config reads relative paths against the file's folder: write them so where they lie below
    # it, else in full, so the file names the same places wherever it is read from.
    here = path.parent.resolve()
    for section, key in (("data", "source"), ("dpo", "source"), ("output", "runs_root"), ("output", "report")):
        value = (values.get(section) or {}).get(key)
        if value and value not in examples.names():
            where = Path(value).expanduser().resolve()
            values[section][key] = str(where.relative_to(here) if where.is_relative_to(here) else where)
    path.write_text(yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
    return path
