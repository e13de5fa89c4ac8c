"""The pipeline's settings as one tree of dataclasses, read from a YAML or JSON file.

The tree reuses the dataclasses the notebooks use (:class:`ftkit.sft.SFTSettings`,
:class:`ftkit.dpo.DPOSettings`, :class:`ftkit.training.LoraSettings`), so a key in the file is the
same name as a keyword in Python. A config is validated by walking the dataclass fields before any
model loads: an unknown key, a wrong type or a value outside the allowed ones is reported with its
path (``sft.learnign_rate``), the allowed keys or values, and the closest match.

.. code-block:: yaml

    data: {source: tickets.csv, mapping: {prompt: message, completion: queue}, limit: 100}
    model: {name: HuggingFaceTB/SmolLM2-360M-Instruct}
    templates:
      - {kind: zero_shot}
      - {kind: few_shot, k: 8}
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
ftkit.config.ConfigError: invalid config:
  sft.learnign_rate: unknown key (did you mean 'learning_rate'?); allowed keys: name, epochs, ...
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ftkit import examples, tasks
from ftkit.dpo import DPOSettings
from ftkit.endpoint import Endpoint
from ftkit.metrics import BUILTIN
from ftkit.models import EMBEDDED_NAME, ModelLoadError, resolve_source
from ftkit.sft import SFTSettings
from ftkit.training import settings_fields

__all__ = [
    "ConfigError", "DPOStage", "DataConfig", "ModelConfig", "OutputConfig", "PipelineConfig", "SFTStage",
    "TemplateConfig", "config_from_dict", "describe", "dump_config", "load_config", "resolve_paths", "template_name",
]

TemplateKind = Literal["zero_shot", "with_system", "few_shot"]


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem with its key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class DataConfig:
    source: str = field(default="", metadata={
        "help": "A file (CSV, TSV, JSON, JSONL, Parquet; relative to the config file) or a built-in "
                "example name; empty: the task's built-in example"})
    mapping: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Canonical field -> your column, e.g. {prompt: message, completion: queue}; "
                "empty: detect the layout"})
    test_size: float = field(default=0.2, metadata={
        "help": "Held-out share of the rows (0-1), or a row count"})
    seed: int = field(default=0, metadata={"help": "Seed of the train/test split"})
    stratify_by: str | None = field(default="label", metadata={
        "help": "Column whose proportions both splits keep; null for a plain random split. "
                "Ignored when the data has no such column"})
    limit: int = field(default=0, metadata={
        "help": "Evaluate on at most this many held-out rows (0: all); fewer is faster"})
    train_limit: int = field(default=0, metadata={
        "help": "Train on at most this many training rows and DPO pairs (0: all); few-shot examples are still "
                "picked from the whole training split. `ftkit run --limit N` sets this and limit"})
    group_by: str | None = field(default=None, metadata={
        "help": "Column whose rows stay together on one side of the split (the passage, a document's title, "
                "a conversation id), so no held-out row shares it with training; null: the context passage "
                "when the rows have one, else none; '' for none"})


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
                "beyond 2x); a number fixes it"})


@dataclass
class TemplateConfig:
    kind: TemplateKind = field(default="zero_shot", metadata={
        "help": "zero_shot: the instruction alone; with_system: plus a system prompt; few_shot: plus "
                "k solved examples from the training split"})
    name: str | None = field(default=None, metadata={
        "help": "Name in tables and reports; default 'zero-shot', 'zero-shot + system', '<k>-shot'"})
    system: str | None = field(default=None, metadata={
        "help": "System prompt; null: a classification default for with_system/few_shot on labelled "
                "data, else none. An empty string means none"})
    instruction: str | None = field(default=None, metadata={
        "help": "The user turn with {prompt} and any column as placeholders ({labels}: the label "
                "set); null: the task's instruction (classification: the label list; QA with a passage: the "
                "question and its {context}; creative and chat: '{prompt}')"})
    k: int = field(default=8, metadata={"help": "few_shot: number of solved examples"})
    strategy: Literal["balanced", "random", "first"] = field(default="balanced", metadata={
        "help": "few_shot: how examples are picked (balanced: every label before any repeats)"})
    seed: int = field(default=0, metadata={"help": "few_shot: seed of the random pick"})
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
    """:class:`~ftkit.sft.SFTSettings` plus the template the run trains on."""

    template: str = field(default="", metadata={
        "help": "Name of the template SFT (and DPO) train on and the tuned models are evaluated "
                "with; empty: the first zero_shot or with_system template"})
    max_length: int = field(default=0, metadata={"help": MAX_LENGTH_HELP})


@dataclass
class DPOStage(DPOSettings):
    """:class:`~ftkit.dpo.DPOSettings` plus where the preference pairs come from."""

    source: str = field(default="support_routing_preferences", metadata={
        "help": "Preference pairs (prompt/chosen/rejected): a file or a built-in example name"})
    mapping: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Canonical field -> your column for the pairs; empty: detect the layout"})
    max_length: int = field(default=0, metadata={"help": MAX_LENGTH_HELP})


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
    max_new_tokens: int = field(default=0, metadata={"help": "Longest generated answer, in tokens (0: the task's)"})
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


def _convert(tp, value, path: str, problems: list[str], choices=None):
    """``value`` converted to type ``tp``; problems are appended with ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path, problems, choices)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is Literal:
        if value not in args:
            problems.append(f"{path}: {value!r} is not allowed{_suggest(value, args)}; choose one of: "
                            f"{', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__} {value!r}")
            return value
        return [_convert(args[0], v, f"{path}[{i}]", problems, choices) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        elif args:
            return {k: _convert(args[1], v, f"{path}.{k}", problems) for k, v in value.items()}
        return value
    # bool is an int in Python; a YAML `true` for a number is almost surely a mistake.
    ok = (isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))) or \
         (tp is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        problems.append(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    if choices is not None and value not in choices:
        problems.append(f"{path}: {value!r} is not allowed{_suggest(value, choices)}; choose one of: "
                        f"{', '.join(choices)}")
    return float(value) if tp is float else value


def _build(cls, values, path: str, problems: list[str]):
    """An instance of dataclass ``cls`` from a mapping, checking every key against its fields."""
    where = path or "the config"
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping of {', '.join(_allowed(cls))}; got "
                        f"{type(values).__name__} {values!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields_ = {f.name: f for f in settings_fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields_:
            problems.append(f"{key_path}: unknown key{_suggest(key, fields_)}; allowed keys: "
                            f"{', '.join(fields_)}")
            continue
        kwargs[key] = _convert(hints[key], value, key_path, problems, fields_[key].metadata.get("choices"))
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
    if config.model.threads < 0:
        problems.append(f"model.threads: {config.model.threads} is not a thread count; 0 chooses from the "
                        "cores other processes leave free, a number >= 1 fixes it")
    names = [template_name(t) for t in config.templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"templates: names must differ; {', '.join(dupes)} appear(s) twice. Set name: ...")
    if not names and config.task:  # the task's own variants
        task = tasks.get(config.task)
        names = ["zero-shot", *([tasks.CLOSED_BOOK] if task.passage_instruction else []), *task.variants,
                 f"{task.shots}-shot"]
    if config.sft is not None and config.sft.template and names and config.sft.template not in names:
        problems.append(f"sft.template: no template named {config.sft.template!r}"
                        f"{_suggest(config.sft.template, names)}; templates are: {', '.join(names)}")
    for i, t in enumerate(config.templates):
        if t.kind == "few_shot" and t.k < 1:
            problems.append(f"templates[{i}].k: a few_shot template needs k >= 1, got {t.k}")
        if t.endpoint is not None:
            problems.extend(f"templates[{i}].endpoint: {p}" for p in t.endpoint.problems())
    if not 0 < config.data.test_size < 1 and not (config.data.test_size >= 1 and
                                                  float(config.data.test_size).is_integer()):
        problems.append(f"data.test_size: {config.data.test_size} is neither a share between 0 and 1 "
                        "nor a row count")


def _check_source(source: str, path: str, problems: list[str]) -> None:
    if source not in examples.names() and not Path(source).is_file():
        name = Path(source).name
        problems.append(f"{path}: no file {source!r} and no built-in example {name!r}"
                        f"{_suggest(name, examples.names())}; built-in examples: {', '.join(examples.names())}")


def template_name(t: TemplateConfig) -> str:
    """The name a template gets in tables: its own, or one derived from its kind (and, asked of a
    hosted model, that model's name first: ``gpt-4o-mini zero-shot``)."""
    default = {"zero_shot": "zero-shot", "with_system": "zero-shot + system", "few_shot": f"{t.k}-shot"}[t.kind]
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

    >>> load_config("pipeline.yaml")    # doctest: +SKIP
    PipelineConfig(data=DataConfig(source='tickets.csv', ...), ...)
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"no config file at {str(path)!r}"])
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            values = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            raise ConfigError([f"{path.name}: a config is a .yaml, .yml or .json file"])
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError([f"{path.name} is not valid {path.suffix[1:].upper()}: {err}"]) from None
    return config_from_dict(values, base=path.parent)


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
