"""Read the user's data once, at the edge, into the shapes TRL itself uses.

Every later step (prompts, SFT, DPO, evaluation) sees one of three canonical shapes:

===================  =========================================  ==========================
shape                columns                                    used by
===================  =========================================  ==========================
``messages``         ``messages``: list of ``{role, content}``   SFT on conversations
``prompt_completion``  ``prompt``, ``completion`` (strings)      SFT, prompting, evaluation
``preference``       ``prompt``, ``chosen``, ``rejected``        DPO
===================  =========================================  ==========================

A conversation is evaluated turn by turn: :func:`chat_turns` makes one prompt/completion row per
assistant turn, with the true turns before it as ``history``.

Extra columns (a ``label``, an ``id``) are kept for evaluation. The column mapping is detected from
common layouts (OpenAI messages, ShareGPT, Alpaca, question/answer, text/label, ...) or given
explicitly, and every problem is reported with the column and row it concerns.

>>> ds = load_data([{"text": "parcel late", "label": "order_status"}], verbose=False)
>>> ds[0]["prompt"], ds[0]["completion"], ds[0]["label"]
('parcel late', 'order_status', 'order_status')
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections import Counter
from typing import TYPE_CHECKING

from ftkit.data.report import (DataReport, add_warnings, char_limit, char_limit_basis, find_overlap,
                               long_rows as rows_over, long_rows_message, render_example, rows_text, token_lengths)
from ftkit.data.sources import DataError, as_rows, read_rows
from ftkit.data.splits import group_column, split  # noqa: F401  (public here too)

if TYPE_CHECKING:
    import datasets

__all__ = [
    "LAYOUTS", "SHAPES", "DataError", "DataReport", "as_rows", "check_data", "detect_mapping", "find_overlap",
    "chat_turns", "group_column", "label_set", "load_data", "render_example", "shape_of", "split", "token_lengths",
]

SHAPES = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
}
# Mapping keys a user may give, besides the shape's own fields. `input` is appended to the
# prompt (Alpaca's optional second field), `system` becomes a system message for `messages` data.
OPTIONAL_FIELDS = ("input", "system")
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "bot": "assistant", "model": "assistant", "system": "system", "tool": "tool"}

# Layouts tried in order; the first whose required columns are all present wins. Each maps the
# canonical fields onto the source's columns.
LAYOUTS: list[tuple[str, dict[str, str]]] = [
    ("prompt/chosen/rejected", {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
    ("question/chosen/rejected", {"prompt": "question", "chosen": "chosen", "rejected": "rejected"}),
    ("OpenAI messages", {"messages": "messages"}),
    ("ShareGPT conversations", {"messages": "conversations"}),
    ("prompt/completion", {"prompt": "prompt", "completion": "completion"}),
    ("Alpaca instruction/input/output", {"prompt": "instruction", "input": "input", "completion": "output"}),
    ("Alpaca instruction/output", {"prompt": "instruction", "completion": "output"}),
    ("instruction/response", {"prompt": "instruction", "completion": "response"}),
    ("question/answer", {"prompt": "question", "completion": "answer"}),
    ("text/label", {"prompt": "text", "completion": "label"}),
    ("sentence/label", {"prompt": "sentence", "completion": "label"}),
    ("input/output", {"prompt": "input", "completion": "output"}),
    ("source/target", {"prompt": "source", "completion": "target"}),
    ("document/summary", {"prompt": "document", "completion": "summary"}),
    ("article/summary", {"prompt": "article", "completion": "summary"}),
]


# --------------------------------------------------------------------------------------------
# Mapping


def detect_mapping(columns) -> tuple[str, dict[str, str]] | None:
    """The first known layout whose columns are all present: ``(layout name, mapping)``.

    >>> detect_mapping(["instruction", "input", "output"])
    ('Alpaca instruction/input/output', {'prompt': 'instruction', 'input': 'input', 'completion': 'output'})
    """
    present = set(columns)
    for name, mapping in LAYOUTS:
        if set(mapping.values()) <= present:
            return name, dict(mapping)
    return None


def shape_of(mapping: dict[str, str]) -> str:
    keys = set(mapping) - set(OPTIONAL_FIELDS) - {"label"}
    for shape, fields_ in SHAPES.items():
        if keys == set(fields_):
            return shape
    raise DataError(
        f"mapping {mapping} does not give a known shape; map exactly one of: "
        + "; ".join(" + ".join(f) for f in SHAPES.values())
        + f" (optional: {', '.join(OPTIONAL_FIELDS)}, label)"
    )


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _as_text(value) -> str | None:
    """A cell as text; numbers and booleans become strings, containers are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return None


def _as_messages(value, system: str | None = None) -> list[dict] | str:
    """Normalize OpenAI or ShareGPT turns; return a problem description instead on failure."""
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, list) or not value:
        return "is not a non-empty list of turns"
    turns = [] if system is None else [{"role": "system", "content": system}]
    for turn in value:
        if not isinstance(turn, dict):
            return "has a turn that is not a dict"
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = _ROLE_ALIASES.get(str(role).lower()) if role is not None else None
        if role is None:
            return f"has a turn with an unknown role {turn.get('role', turn.get('from'))!r}"
        if _missing(content) or not isinstance(content, str):
            return "has a turn with empty or non-text content"
        turns.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in turns):
        return "has no assistant turn to learn from"
    return turns


def _canonical_rows(rows, mapping, shape, report: DataReport) -> tuple[list[dict], list[int]]:
    """Apply the mapping; record rows with empty, missing or unusable values as errors.

    Returns the mapped rows and the indices of the rows that had a problem. A row given as ``None``
    (skipped: too long to tokenize) stays ``None``, so every index is the source's.
    """
    used = set(mapping.values())
    keep = [c for c in report.columns if c not in used and c not in SHAPES[shape]]
    # A label column stays as `label` for evaluation even when it is also the completion.
    label_col = mapping.get("label") or ("label" if "label" in report.columns else None)
    problems: dict[str, list[int]] = {}
    out = []
    for i, row in enumerate(rows):
        if row is None:
            out.append(None)
            continue
        new = {}
        for key in SHAPES[shape]:
            value = row.get(mapping[key])
            if key == "messages":
                system = row.get(mapping["system"]) if "system" in mapping else None
                value = _as_messages(value, None if _missing(system) else _as_text(system))
                if isinstance(value, str):
                    problems.setdefault(f"column '{mapping[key]}' {value}", []).append(i)
                    continue
            elif _missing(value):
                problems.setdefault(f"column '{mapping[key]}' is empty or missing", []).append(i)
                continue
            elif _as_text(value) is None:
                problems.setdefault(f"column '{mapping[key]}' is not text (a {type(value).__name__})", []).append(i)
                continue
            else:
                value = _as_text(value)
            new[key] = value
        if "input" in mapping and "prompt" in new and not _missing(row.get(mapping["input"])):
            new["prompt"] = f"{new['prompt']}\n\n{_as_text(row.get(mapping['input']))}"
        if label_col is not None:
            new["label"] = _as_text(row.get(label_col)) if not _missing(row.get(label_col)) else None
        for col in keep:
            if col != "label":
                new[col] = row.get(col)
        out.append(new)
    for problem, idx in problems.items():
        report.errors.append(
            f"{problem} in {len(idx)} row(s): {rows_text(idx)} (counting from 0, as dataset[i]). "
            "Fix those rows, or pass drop_incomplete=True to skip them"
        )
    return out, sorted({i for idx in problems.values() for i in idx})


def check_data(source, mapping: dict[str, str] | None = None, *, tokenizer=None,
               max_length: int | None = None, test=None, split_name: str = "train",
               drop_incomplete: bool = False, task=None, max_chars: int | None = None,
               long_rows: str = "skip") -> DataReport:
    """Read, map and validate ``source`` without raising for problems in the data.

    Returns a :class:`DataReport`; ``report.dataset`` holds the canonical ``datasets.Dataset``
    when there are no errors. ``tokenizer`` adds token-length statistics (and, with
    ``max_length``, a warning for longer examples), counted on what training feeds the model:
    the task's prompt around each row (``task``: a :class:`~ftkit.tasks.Task`, or a function of the
    canonical rows that returns one; without it the rows are counted as they stand).
    :func:`ftkit.tasks.check_data` takes a task's name too, and infers the task from the rows
    when none is given. ``test`` (rows or a Dataset in canonical shape) adds a warning
    for prompts shared with it.

    A row with more than ``max_chars`` characters of text (by default
    :func:`~ftkit.data.report.char_limit`: the tokenizer's context x 10, at most a million) is
    never tokenized: it is skipped, and a warning names its row number and column
    (``report.skipped`` lists them); when most rows are that long, or ``long_rows="refuse"``, the
    data is refused instead, naming them.

    >>> report = check_data([{"question": "2+2?", "answer": "4"}])
    >>> report.ok, report.mapping_line()
    (True, "prompt_completion (detected layout 'question/answer': prompt <- question, completion <- answer)")
    """
    try:
        rows, name = read_rows(source, split_name=split_name)
    except DataError as err:
        return DataReport(source=str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__,
                          errors=[str(err)])
    report = DataReport(source=name, n_rows=len(rows))
    if not rows:
        report.errors.append(f"{name} has no rows")
        return report
    # Before anything copies or tokenizes a row: one over the bound is skipped (see char_limit).
    limit = max_chars or char_limit(tokenizer, max_length)
    long = rows_over(rows, limit)
    if long:
        basis = "the max_chars given" if max_chars else char_limit_basis(tokenizer, max_length, limit)
        message, refused = long_rows_message(long, len(rows), limit, basis, refuse=long_rows == "refuse")
        if refused:
            report.columns = list(dict.fromkeys(c for r in rows for c in r))
            report.errors.append(message)
            return report
        report.warnings.append(message)
        report.skipped = sorted(long)
        rows = [None if i in long else r for i, r in enumerate(rows)]  # a new list: the source stays as it is
        report.n_rows = len(rows) - len(long)
    kept = [r for r in rows if r is not None]
    columns = report.columns = list(dict.fromkeys(c for r in kept for c in r))
    if mapping:
        absent = {k: v for k, v in mapping.items() if v not in columns}
        for key, col in absent.items():
            report.errors.append(f"column '{col}' (mapped to '{key}') not found; columns are: "
                                 f"{', '.join(columns)}. Pass mapping={{'{key}': <one of them>}}")
        try:
            report.shape = shape_of(mapping)
        except DataError as err:
            report.errors.append(str(err))
        report.mapping = dict(mapping)
        if report.errors:
            return report
    else:
        found = detect_mapping(columns)
        if found is None:
            # Suggest the first and last text columns that are not ids, as a starting point.
            texts = [c for c in columns if c.lower() != "id" and isinstance(kept[0].get(c), str)]
            texts = texts or columns
            report.errors.append(
                f"could not tell which columns hold the prompt and the answer; columns are: "
                f"{', '.join(columns)}. Pass a mapping, e.g. mapping={{'prompt': '{texts[0]}', "
                f"'completion': '{texts[-1]}'}} (or 'messages', or 'prompt'/'chosen'/'rejected')"
            )
            return report
        report.layout, report.mapping = found
        report.shape = shape_of(report.mapping)
    canonical, bad_rows = _canonical_rows(rows, report.mapping, report.shape, report)
    del rows, kept
    if report.errors and drop_incomplete:
        bad = set(bad_rows)
        report.warnings.append(f"dropped {len(bad)} incomplete row(s): {rows_text(sorted(bad))}")
        report.errors.clear()
        canonical = [r for i, r in enumerate(canonical) if i not in bad and r is not None]
        report.n_rows = len(canonical)
        if not canonical:
            report.errors.append("no rows are left after dropping the incomplete ones")
    canonical = [r for r in canonical if r is not None]
    if report.errors:
        return report
    if "label" in canonical[0]:
        counts = Counter(r["label"] for r in canonical if r["label"] is not None)
        report.label_counts = dict(counts.most_common())
    template = None
    if tokenizer is not None and task is not None:
        # The task comes from above (ftkit.tasks.check_data infers it from the rows): data knows no task table.
        chosen = (task(canonical) if callable(task) else task).for_rows(canonical)  # a QA prompt reads the passage
        report.task = chosen.name
        if "messages" not in canonical[0]:  # a conversation is counted as it stands
            template = chosen.template("zero-shot",
                                       labels=label_set(canonical) if chosen.name == "classification" else ())
    add_warnings(report, canonical, tokenizer, max_length, test, template, max_chars=limit)
    import datasets  # only for rows that passed every check

    try:
        report.dataset = datasets.Dataset.from_list(canonical)
    # arrow cannot hold mixed types in one column, ints beyond int64 (OverflowError), or deep nesting
    except (TypeError, ValueError, OverflowError, RecursionError) as err:
        report.errors.append(f"the extra columns mix types arrow cannot store ({err}); drop or "
                             "convert them before loading")
    return report


def load_data(source, mapping: dict[str, str] | None = None, *, tokenizer=None,
              max_length: int | None = None, split_name: str = "train",
              drop_incomplete: bool = False, verbose: bool = True,
              max_chars: int | None = None, task=None) -> datasets.Dataset:
    """Load ``source`` into a canonical ``datasets.Dataset``; raise :class:`DataError` on errors.

    ``source`` is a path (CSV, TSV, JSON, JSONL, Parquet), a DataFrame, a list of dicts, or a
    ``datasets.Dataset``/``DatasetDict`` (``split_name`` picks one). ``mapping`` maps canonical fields
    to your columns, e.g. ``{"prompt": "question", "completion": "reply"}``; without it the layout
    is detected and reported in one line, which you should read once. Warnings (duplicates, long
    examples, rows skipped as longer than ``max_chars`` characters: see :func:`check_data`) are
    issued with :mod:`warnings`; ``task`` is the task whose prompt the token lengths are counted
    in, as there. The source is never modified.

    >>> ds = load_data([{"prompt": "Hi", "completion": "Hello!"}], verbose=False)
    >>> ds.column_names
    ['prompt', 'completion']
    """
    report = check_data(source, mapping, tokenizer=tokenizer, max_length=max_length,
                        split_name=split_name, drop_incomplete=drop_incomplete, max_chars=max_chars, task=task)
    if not report.ok:
        raise DataError("; ".join(report.errors))
    if verbose:
        print(f"ftkit: {report.n_rows} rows from {report.source} as {report.mapping_line()}",
              file=sys.stderr)
    for message in report.warnings:
        warnings.warn(f"{report.source}: {message}", stacklevel=2)
    return report.dataset


def chat_turns(rows, turns: str = "all") -> list[dict]:
    """One prompt/completion row per assistant turn of each conversation, to evaluate them.

    Each row answers one assistant turn given the true turns before it: ``history`` holds them
    (ending with the user's turn), ``prompt`` that user turn, ``completion`` the reference answer;
    ``conversation`` and ``turn`` (from 1) say where it comes from, and the conversation's other
    fields (an ``id``, a ``customer``) are kept. ``turns="last"`` keeps only each conversation's
    last answer. Rows that are not conversations are returned as they are.

    >>> chat = [{"messages": [{"role": "user", "content": "Hi, I'm Ann"}, {"role": "assistant", "content": "Hi Ann!"},
    ...                       {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye Ann"}]}]
    >>> [(r["prompt"], r["completion"], r["turn"], len(r["history"])) for r in chat_turns(chat)]
    [("Hi, I'm Ann", 'Hi Ann!', 1, 1), ('Bye', 'Bye Ann', 2, 3)]
    """
    if turns not in ("all", "last"):
        raise ValueError(f"turns={turns!r}: use 'all' (every assistant turn) or 'last' (each conversation's last)")
    out = []
    for n, row in enumerate(as_rows(rows)):
        if "messages" not in row:
            out.append(row)
            continue
        messages = row["messages"]
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i and
                   messages[i - 1]["role"] == "user"]
        if turns == "last":
            answers = answers[-1:]
        extra = {k: v for k, v in row.items() if k != "messages"}
        for i in answers:
            turn = sum(m["role"] == "assistant" for m in messages[:i + 1])
            out.append({**extra, "prompt": messages[i - 1]["content"], "completion": messages[i]["content"],
                        "history": [dict(m) for m in messages[:i]], "conversation": row.get("id", n), "turn": turn,
                        **({"id": f"{row['id']}#{turn}"} if "id" in row else {})})
    return out


def label_set(rows) -> list[str]:
    """The sorted labels of rows with a ``label`` column (empty when there is none): the label set
    prompts name and classification metrics score against.

    >>> label_set([{"label": "b"}, {"label": "a"}, {"label": None}, {"label": "b"}])
    ['a', 'b']
    """
    rows = as_rows(rows)
    return sorted({r["label"] for r in rows if r.get("label") is not None})
