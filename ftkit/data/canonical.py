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
import random
import sys
import warnings
from collections import Counter

import datasets

from ftkit.data.report import (DataReport, add_warnings, char_limit, char_limit_basis, find_overlap,
                               long_rows as rows_over, long_rows_message, match_key, render_example, rows_text, token_lengths)
from ftkit.data.sources import DataError, as_rows, read_rows

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
    the task's prompt around each row (``task``: a :class:`~ftkit.tasks.Task` or its name; by
    default inferred from the rows). ``test`` (rows or a Dataset in canonical shape) adds a warning
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
    if tokenizer is not None:
        from ftkit import tasks  # tasks reads the rows' shape; imported here, not at module load

        chosen = tasks.resolve(task, canonical).for_rows(canonical)  # a QA prompt reads the rows' passage
        report.task = chosen.name
        if "messages" not in canonical[0]:  # a conversation is counted as it stands
            template = chosen.template("zero-shot",
                                       labels=label_set(canonical) if chosen.name == "classification" else ())
    add_warnings(report, canonical, tokenizer, max_length, test, template, max_chars=limit)
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
              max_chars: int | None = None) -> datasets.Dataset:
    """Load ``source`` into a canonical ``datasets.Dataset``; raise :class:`DataError` on errors.

    ``source`` is a path (CSV, TSV, JSON, JSONL, Parquet), a DataFrame, a list of dicts, or a
    ``datasets.Dataset``/``DatasetDict`` (``split_name`` picks one). ``mapping`` maps canonical fields
    to your columns, e.g. ``{"prompt": "question", "completion": "reply"}``; without it the layout
    is detected and reported in one line, which you should read once. Warnings (duplicates, long
    examples, rows skipped as longer than ``max_chars`` characters: see :func:`check_data`) are
    issued with :mod:`warnings`. The source is never modified.

    >>> ds = load_data([{"prompt": "Hi", "completion": "Hello!"}], verbose=False)
    >>> ds.column_names
    ['prompt', 'completion']
    """
    report = check_data(source, mapping, tokenizer=tokenizer, max_length=max_length,
                        split_name=split_name, drop_incomplete=drop_incomplete, max_chars=max_chars)
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


def split(dataset: datasets.Dataset, test_size: float | int = 0.2, seed: int = 0,
          stratify_by: str | None = None, group_by: str | None = None) -> datasets.DatasetDict:
    """Split into ``train`` and ``test``, deterministically for a given seed.

    ``test_size`` is a share of the rows (0-1) or a row count. ``stratify_by`` names a column
    (usually ``"label"``) whose proportions both splits keep. ``group_by`` names a column whose
    rows stay together on one side (a group split): questions about one ``context`` passage, the
    turns of one conversation, the abstracts of one paper's ``title``; then no held-out row shares
    that value with training (:func:`~ftkit.data.report.overlap_note` checks it). Values match
    ignoring case and spacing, as the leakage check does; a row with an empty or missing value is
    a group of its own. Whole groups make the test share approximate: of the ways to pick groups,
    the test row count is the closest to the one asked for (the lower on a tie), and which groups
    of each size go to test is drawn from ``seed``. ``stratify_by`` and ``group_by`` cannot be
    combined: whole groups do not keep label proportions.

    >>> ds = load_data([{"text": f"m{i}", "label": "ab"[i % 2]} for i in range(10)], verbose=False)
    >>> parts = split(ds, test_size=0.2, seed=1, stratify_by="label")
    >>> sorted(parts["test"]["label"])
    ['a', 'b']
    >>> qa = load_data([{"question": f"q{i}", "answer": "a", "context": f"passage {i % 4}"} for i in range(12)],
    ...                verbose=False)
    >>> parts = split(qa, test_size=0.25, seed=0, group_by="context")
    >>> len(parts["test"]), set(parts["test"]["context"]) & set(parts["train"]["context"])
    (3, set())
    """
    n = len(dataset)
    if stratify_by is not None and group_by is not None:
        raise DataError(f"stratify_by and group_by cannot be combined: whole '{group_by}' groups cannot also keep "
                        f"the proportions of '{stratify_by}'. Pass group_by alone (no held-out row shares its "
                        f"'{group_by}' with training), or stratify_by alone")
    n_test = test_size if isinstance(test_size, int) else round(n * test_size)
    if not 0 < n_test < n:
        raise DataError(f"test_size={test_size} leaves {n_test} of {n} rows for testing; it must "
                        "leave at least one row on each side")
    if group_by is not None:
        return _group_split(dataset, n_test, seed, group_by)
    if stratify_by is None:
        return dataset.train_test_split(test_size=test_size, seed=seed)
    if stratify_by not in dataset.column_names:
        raise DataError(f"cannot stratify by '{stratify_by}': no such column; columns are: "
                        f"{', '.join(dataset.column_names)}")
    values = [str(v) for v in dataset[stratify_by]]
    counts = Counter(values)
    rare = [k for k, c in counts.items() if c < 2]
    if rare:
        raise DataError(f"cannot stratify by '{stratify_by}': value(s) {', '.join(map(repr, rare))} "
                        "occur only once; merge or drop them, or split without stratify_by")
    if n_test < len(counts):
        raise DataError(f"test_size={test_size} gives {n_test} test rows, fewer than the "
                        f"{len(counts)} values of '{stratify_by}'; use a larger test_size")
    # datasets stratifies only on a ClassLabel column: encode a temporary copy of the column.
    tmp = "__ftkit_stratum__"
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar for a sub-second cast is noise
    try:
        coded = dataset.add_column(tmp, values).class_encode_column(tmp)
        parts = coded.train_test_split(test_size=test_size, seed=seed, stratify_by_column=tmp)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return datasets.DatasetDict({k: v.remove_columns(tmp) for k, v in parts.items()})


def group_column(dataset: datasets.Dataset, group_by: str | None = None) -> str | None:
    """The column a split should keep together: ``group_by`` when given (``""``: none), else the
    ``context`` passage when the rows carry one (QA over passages: many questions per passage),
    unless one passage serves every row (then there is nothing to keep apart).

    >>> group_column(load_data([{"question": f"q{i}", "answer": "a", "context": f"p{i % 2}"} for i in range(4)],
    ...                        verbose=False))
    'context'
    """
    if group_by is not None:
        if group_by and group_by not in dataset.column_names:
            raise DataError(f"data.group_by: no column {group_by!r}; columns are: {', '.join(dataset.column_names)}. "
                            "Name one of them, or set group_by: '' for a row-by-row split")
        return group_by or None
    if "context" in dataset.column_names:
        passages = [match_key(c) for c in dataset["context"]]
        if any(passages) and (None in passages or len(set(passages)) > 1):
            return "context"
    return None


def _group_split(dataset: datasets.Dataset, n_test: int, seed: int, column: str) -> datasets.DatasetDict:
    """``split``'s group split: whole groups of ``column`` to test, about ``n_test`` rows."""
    if column not in dataset.column_names:
        raise DataError(f"cannot group by '{column}': no such column; columns are: {', '.join(dataset.column_names)}")
    groups: dict[tuple, list[int]] = {}
    for i, value in enumerate(dataset[column]):
        key = match_key(value)
        groups.setdefault((0, i) if key is None else (1, key), []).append(i)  # missing: a group of its own
    if len(groups) < 2:
        value = str(dataset[0][column])
        shown = repr(value if len(value) <= 60 else value[:60] + "...")
        raise DataError(f"cannot group by '{column}': every row has the same '{column}' ({shown}), so no split "
                        "keeps it on one side; group by another column, or split without group_by")
    members = list(groups.values())  # in the order of first appearance: deterministic
    rng = random.Random(seed)
    test = [i for g in _pick_groups([len(m) for m in members], n_test, rng) for i in members[g]]
    chosen = set(test)
    train = [i for i in range(len(dataset)) if i not in chosen]
    rng.shuffle(train)  # rows in random order, as train_test_split gives them: a `limit` takes
    rng.shuffle(test)   # the first held-out rows, which should not all come from one passage
    return datasets.DatasetDict({"train": dataset.select(train), "test": dataset.select(test)})


def _pick_groups(sizes: list[int], target: int, rng: random.Random) -> list[int]:
    """Indices of groups whose sizes add up to the reachable total closest to ``target`` (neither
    none nor all of them), the lower total on a tie.

    Groups of one size are interchangeable, so the subset sum runs over the distinct sizes (a few
    dozen even for 100k rows) with Python ints as bitsets: bit t set = t rows reachable."""
    by_size: dict[int, list[int]] = {}
    for g, size in enumerate(sizes):
        by_size.setdefault(size, []).append(g)
    order = sorted(by_size)
    total = sum(sizes)
    # reach[k]: the totals the groups of sizes order[k:] can make; taking 1, 2, 4, ... of a size
    # at a time reaches every count of it in log(count) shifts.
    reach = [0] * len(order) + [1]
    for k in reversed(range(len(order))):
        bits, size, left = reach[k + 1], order[k], len(by_size[order[k]])
        step = 1
        while left:
            take = min(step, left)
            bits |= bits << (size * take)
            left, step = left - take, step * 2
        reach[k] = bits
    reachable = bin(reach[0])[:1:-1]  # character t is '1' when t rows are reachable
    best = min((t for t in range(1, total) if reachable[t] == "1"), key=lambda t: (abs(t - target), t))
    picked, need, rows_left = [], best, total
    for k, size in enumerate(order):
        count = len(by_size[size])
        # How many groups of this size: near their share of what is still needed, and such that
        # the larger sizes can still make up the rest.
        ideal = round(count * need / rows_left) if rows_left else 0
        options = sorted((j for j in range(min(count, need // size) + 1) if (reach[k + 1] >> (need - j * size)) & 1),
                         key=lambda j: (abs(j - ideal), rng.random()))
        take = options[0]
        picked += rng.sample(by_size[size], take)
        need, rows_left = need - take * size, rows_left - count * size
    return sorted(picked)


def label_set(rows) -> list[str]:
    """The sorted labels of rows with a ``label`` column (empty when there is none): the label set
    prompts name and classification metrics score against.

    >>> label_set([{"label": "b"}, {"label": "a"}, {"label": None}, {"label": "b"}])
    ['a', 'b']
    """
    rows = as_rows(rows)
    return sorted({r["label"] for r in rows if r.get("label") is not None})
