"""The data report: what was read, how it was mapped, what is wrong with it, and statistics.

:func:`ftkit.data.canonical.check_data` fills a :class:`DataReport`; the checks and statistics that do not
depend on how the data was read live here too: duplicates, pairs with the same two sides, token
lengths (counted by :mod:`ftkit.data.lengths`), inputs shared between two splits (a leak: the same
prompt, or the same passage behind two questions).

>>> find_overlap([{"prompt": "Where is my  ORDER?"}], [{"prompt": "where is my order?"}, {"prompt": "hi"}])
[0]
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ftkit.data.lengths import (  # noqa: F401  (public here too)
    CHARS_PER_TOKEN, DEFAULT_CONTEXT, MAX_ROW_CHARS, _percentiles, char_limit, char_limit_basis, count_tokens, long_rows,
    long_rows_message, render_example, rows_text, token_lengths)
from ftkit.data.sources import as_rows

if TYPE_CHECKING:
    import datasets

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_CONTEXT", "MAX_ROW_CHARS", "NOT_INPUTS", "DataReport", "add_warnings",
           "char_limit", "char_limit_basis", "count_tokens", "find_overlap", "long_rows", "long_rows_message",
           "match_key", "overlap_note", "render_example", "rows_text", "shared_inputs", "token_lengths"]


# --------------------------------------------------------------------------------------------
# The report


@dataclass
class DataReport:
    """What was read, how it was mapped, what is wrong with it, and a few statistics."""

    source: str
    n_rows: int = 0
    columns: list[str] = field(default_factory=list)
    shape: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    layout: str | None = None  # name of the detected layout, None when the mapping was given
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label_counts: dict[str, int] | None = None
    token_lengths: dict[str, int] | None = None  # percentiles of tokens per example
    lengths: list[int] | None = field(default=None, repr=False)  # tokens of each row, in order
    length_basis: str = ""  # how the lengths were counted, e.g. "with the 'zero-shot' prompt"
    task: str | None = None  # the task whose prompt the lengths were counted with
    skipped: list[int] = field(default_factory=list)  # rows over the character bound, never tokenized (from 0)
    dataset: datasets.Dataset | None = None  # the canonical rows, when there were no errors

    @property
    def ok(self) -> bool:
        return not self.errors

    def mapping_line(self) -> str:
        """One line saying how columns were mapped, e.g. ``prompt <- text, completion <- label``."""
        pairs = ", ".join(f"{k} <- {v}" for k, v in self.mapping.items())
        how = f"detected layout '{self.layout}'" if self.layout else "mapping as given"
        return f"{self.shape} ({how}: {pairs})" if self.shape else "no mapping"

    def summary(self) -> str:
        lines = [f"{self.source}: {self.n_rows} rows, columns: {', '.join(self.columns) or '-'}"]
        if self.shape:
            lines.append(f"shape: {self.mapping_line()}")
        lines += [f"ERROR: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.label_counts:
            lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in self.label_counts.items()))
        if self.token_lengths:
            lines.append(self._lengths_line())
        return "\n".join(lines)

    def _lengths_line(self) -> str:
        basis = f" ({self.task} task, {self.length_basis})" if self.length_basis else ""
        return f"tokens per example{basis}: " + ", ".join(f"{k} {v}" for k, v in self.token_lengths.items())

    __str__ = summary

    def _repr_html_(self) -> str:
        # Rendered by Jupyter without ftkit importing IPython; every value is user data: escape it.
        esc = html.escape
        parts = [f"<b>{esc(self.source)}</b>: {self.n_rows} rows"]
        if self.shape:
            parts.append(f"shape: <code>{esc(self.mapping_line())}</code>")
        parts += [f"<span style='color:#b00020'>error: {esc(e)}</span>" for e in self.errors]
        parts += [f"<span style='color:#8a6d00'>warning: {esc(w)}</span>" for w in self.warnings]
        if self.label_counts:
            parts.append("labels: " + esc(", ".join(f"{k} {v}" for k, v in self.label_counts.items())))
        if self.token_lengths:
            parts.append(esc(self._lengths_line()))
        return "<div class='ftkit-data-report'>" + "<br>".join(parts) + "</div>"


def _key(row: dict) -> str:
    fields_ = [f for f in ("messages", "prompt", "completion", "chosen", "rejected") if f in row]
    return json.dumps([row[f] for f in fields_], ensure_ascii=False, sort_keys=True)


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def match_key(value) -> str | None:
    """What two cells must share to count as the same value: text ignoring case and spacing, other
    values as JSON; ``None`` for a missing value (None, NaN, blank text), which matches nothing.

    The leakage check and :func:`ftkit.data.canonical.split`'s ``group_by`` both use it, so a group split
    keeps together exactly what the check would report.

    >>> match_key("  The Shop opens at 9. "), match_key(""), match_key(None)
    ('the shop opens at 9.', None, None)
    """
    if value is None or (isinstance(value, float) and value != value):  # NaN: pandas' missing value
        return None
    if isinstance(value, str):
        return _normalized(value) or None
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _prompt_key(row: dict) -> str:
    """What a prompt is, ignoring case and spacing: near-duplicates count as the same prompt."""
    turns = row.get("messages") or row.get("history")
    if isinstance(turns, list) and turns:  # a conversation, or one turn of it: the turns so far
        return json.dumps([(m["role"], _normalized(m["content"])) for m in turns if m["role"] != "assistant"])
    return _normalized(row["prompt"])


# Columns that are never compared by the leakage check: what the model should answer (and its
# references), and bookkeeping (ids, a conversation's turn number, a code task's tests).
NOT_INPUTS = frozenset({
    "completion", "chosen", "rejected", "label", "labels", "answer", "answers", "summary", "summaries",
    "target", "targets", "target_json", "output", "outputs", "response", "reference", "references",
    "solution", "canonical_solution",
    "id", "conversation", "turn", "tests", "test", "test_list", "test_setup", "challenge_tests", "entry_point",
})
_TAG_WORDS = 3  # a column whose values have at most this many words (median) names or tags a row


def _input_columns(train: list[dict], test: list[dict]) -> list[str]:
    """The columns besides the prompt that the leakage check compares (the rule is in
    :func:`shared_inputs`'s docstring), in the held-out rows' column order."""
    in_train = {c for r in train for c in r}
    columns = [c for c in dict.fromkeys(c for r in test for c in r) if c in in_train]
    found = []
    for col in columns:
        if col == "prompt" or col in NOT_INPUTS or col.endswith("_id"):
            continue  # the prompt is compared as the conversation so far, when there is one
        values = [r.get(col) for r in (*train, *test)]
        if not all(isinstance(v, str) or match_key(v) is None for v in values):
            continue  # numbers, flags, lists, dicts: no text to share
        keys = [k for k in map(match_key, values) if k is not None]
        if not keys:
            continue  # nothing to share: a closed-book set's null `context`
        words = sorted(len(k.split()) for k in keys)
        counts = Counter(keys)
        most = max(counts.values())
        if words[len(words) // 2] <= _TAG_WORDS or len(counts) == 1 or (len(keys) >= 20 and 2 * most > len(keys)):
            continue  # a tag (topic, author, language), or a value (nearly) every row carries
        found.append(col)
    return found


def shared_inputs(train, test) -> dict[str, list[int]]:
    """For each input column, the ``test`` rows whose value of it is also in ``train``: a leak
    between the splits (case and spacing ignored, as everywhere here).

    Which columns are inputs, and compared:

    * ``prompt`` always (for a conversation, ``messages`` or a turn's ``history``: the turns so far
      without the assistant's), keyed ``"prompt"`` first in the result;
    * every other column both sides have whose values are text (a ``context``, ``document``,
      ``title``, ``instruction``, a history written as text), except
    * outputs and references (:data:`NOT_INPUTS`: ``completion``, ``chosen``, ``rejected``,
      ``label``, ``answer(s)``, ``summary``, ``target``, ...) and bookkeeping (``id`` and ``*_id``,
      ``turn``, ``tests``, ``test_setup``, ``entry_point``, ...): sharing those is no leak;
    * tags and templates, which rows share by design: a column whose values are short (at most 3
      words at the median: a topic, an author, a language, a customer's name), holds one value
      throughout (a fixed instruction or system prompt), or, from 20 values up, has one value on
      more than half of the rows (the source most rows were collected from).

    Empty or missing values (NQ-open's null ``context`` in a closed-book row) never count as shared;
    a column with no value at all is not compared. :func:`find_overlap` is the prompt-only check.

    >>> vase, bin_ = "The Linden vase was made in 1901 by Ann Berg.", "The Ashby bin holds five litres."
    >>> train = [{"prompt": "Who made it?", "context": vase}, {"prompt": "How big is it?", "context": bin_}]
    >>> shared_inputs(train, [{"prompt": "When was it made?", "context": vase},
    ...                       {"prompt": "Who made it?", "context": None}])
    {'prompt': [1], 'context': [0]}
    """
    train, test = as_rows(train), as_rows(test)
    seen = {_prompt_key(r) for r in train}
    shared = {"prompt": [i for i, r in enumerate(test) if _prompt_key(r) in seen]}
    for col in _input_columns(train, test):
        values = {match_key(r.get(col)) for r in train} - {None}
        shared[col] = [i for i, r in enumerate(test) if match_key(r.get(col)) in values]
    return shared


def _a(column: str) -> str:
    return f"{'an' if column[:1].lower() in 'aeiou' else 'a'} {column}"


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _and_list(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def overlap_note(train, test, what: str = "training rows") -> tuple[list[int], str]:
    """The leakage check of a split: the ``test`` rows that share an input with ``train`` (their
    prompt, or another input column such as a ``context`` passage: see :func:`shared_inputs`), and
    one sentence that says so per column and, for a shared passage, which ``group_by`` prevents it.

    >>> overlap_note([{"prompt": "Where is  my order?"}], [{"prompt": "where is my order?"}, {"prompt": "hi"}])[1]
    '1 of 2 held-out rows have a prompt that is also in the training rows (held-out rows 0); scores on them measure memory, not skill'
    >>> vase, bin_ = "Vases are glazed inside, so they hold water.", "The Ashby bin holds five litres."
    >>> overlap_note([{"prompt": "Can it hold water?", "context": vase}, {"prompt": "How big?", "context": bin_}],
    ...              [{"prompt": "Is it glazed?", "context": vase}, {"prompt": "Hi", "context": None}])[1]
    "no held-out prompt appears in the training rows, but 1 of 2 held-out rows have a context that is also in the training rows (held-out rows 0); scores on them may measure memory, not skill: split with group_by='context'"
    """
    shared = shared_inputs(train, test)
    n = len(as_rows(test))
    leaks = {col: rows for col, rows in shared.items() if rows}
    if not leaks:
        return [], f"no held-out {_or_list(list(shared))} appears in the {what} (case and spacing ignored)"
    rows = sorted({i for idx in leaks.values() for i in idx})
    others = {col: idx for col, idx in leaks.items() if col != "prompt"}
    if "prompt" in leaks:
        parts = [f"{len(leaks['prompt'])} of {n} held-out rows have a prompt that is also in the {what} "
                 f"(held-out rows {rows_text(leaks['prompt'])})"]
        if not others:
            return rows, f"{parts[0]}; scores on them measure memory, not skill"
        head = ""
    else:
        clean = [col for col, idx in shared.items() if not idx]
        head = f"no held-out {_or_list(clean)} appears in the {what}, but "
        col, idx = next(iter(others.items()))
        parts = [f"{len(idx)} of {n} held-out rows have {_a(col)} that is also in the {what} "
                 f"(held-out rows {rows_text(idx)})"]
        others = dict(list(others.items())[1:])
    parts += [f"{len(idx)} of {n} {_a(col)} (held-out rows {rows_text(idx)})" for col, idx in others.items()]
    by = max((col for col in leaks if col != "prompt"), key=lambda col: len(leaks[col]))
    # A split can keep a passage on one side of itself, not out of rows from another file (DPO pairs).
    fix = f"split with group_by={by!r}" if what == "training rows" else f"drop those {what} or held-out rows"
    return rows, f"{head}{_and_list(parts)}; scores on them may measure memory, not skill: {fix}"


def find_overlap(train, test) -> list[int]:
    """Indices of ``test`` rows whose prompt also appears in ``train`` (a leak between splits).

    The prompt only (few-shot examples are checked against evaluated rows with it, and may share
    a passage with them); :func:`shared_inputs` and :func:`overlap_note` check every input column."""
    seen = {_prompt_key(r) for r in as_rows(train)}
    return [i for i, r in enumerate(as_rows(test)) if _prompt_key(r) in seen]


def add_warnings(report: DataReport, rows: list[dict], tokenizer=None, max_length=None, test=None,
                 template=None, max_chars: int | None = None) -> None:
    """Add to ``report`` what is worth a warning in canonical ``rows``: duplicates, pairs whose
    sides are the same, examples longer than ``max_length`` tokens, inputs shared with ``test``
    (the prompt, and each input column of :func:`shared_inputs`);
    with a ``tokenizer``, the token length of every row and their percentiles, counted with
    ``template``'s prompt (the task's) when given."""
    dup_first: dict[str, int] = {}
    dups = []
    for i, r in enumerate(rows):
        k = _key(r)
        if k in dup_first:
            dups.append(i)
        else:
            dup_first[k] = i
    if dups:
        report.warnings.append(f"{len(dups)} duplicate row(s), repeating an earlier row: {rows_text(dups)}")
    if report.shape == "preference":
        same = [i for i, r in enumerate(rows) if r["chosen"].strip() == r["rejected"].strip()]
        if same:
            report.warnings.append(
                f"chosen equals rejected in {len(same)} row(s): {rows_text(same)}; such pairs teach "
                "DPO nothing"
            )
    if tokenizer is not None:
        report.lengths = lengths = token_lengths(rows, tokenizer, template, max_chars)
        report.token_lengths = _percentiles(lengths)
        if template is not None:
            report.length_basis = f"with the {template.name!r} prompt"
        if max_length is not None:
            long = [i for i, n in enumerate(lengths) if n > max_length]
            if long:
                basis = f" {report.length_basis}" if report.length_basis else ""
                report.warnings.append(
                    f"{len(long)} example(s) are longer than max_length={max_length} tokens{basis}: "
                    f"{rows_text(long)} (longest {max(lengths)} tokens); training refuses to start on them, "
                    "since their answers would be cut: raise max_length or drop them"
                )
    if test is not None:
        for col, shared in shared_inputs(rows, test).items():
            if shared and col == "prompt":
                report.warnings.append(
                    f"{len(shared)} test row(s) have a prompt that is also in the training rows "
                    f"(test rows {rows_text(shared)}); scores on them measure memory, not skill"
                )
            elif shared:
                report.warnings.append(
                    f"{len(shared)} test row(s) have {_a(col)} that is also in the training rows (test rows "
                    f"{rows_text(shared)}); scores on them may measure memory, not skill: split with group_by={col!r}"
                )
