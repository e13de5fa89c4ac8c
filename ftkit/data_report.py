"""The data report: what was read, how it was mapped, what is wrong with it, and statistics.

:func:`ftkit.data.check_data` fills a :class:`DataReport`; the checks and statistics that do not
depend on how the data was read live here too: token lengths through the chat template,
duplicates, pairs with the same two sides, prompts shared between two splits (a leak).

>>> find_overlap([{"prompt": "Where is my  ORDER?"}], [{"prompt": "where is my order?"}, {"prompt": "hi"}])
[0]
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

import datasets
import pandas as pd

from ftkit.sources import as_rows

__all__ = ["DataReport", "add_warnings", "find_overlap", "overlap_note", "render_example", "rows_text",
           "token_lengths"]


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


def rows_text(rows: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{shown}{more}"



# --------------------------------------------------------------------------------------------
# Checks and statistics


def render_example(row: dict, tokenizer=None, template=None) -> str:
    """The text of one canonical example as the model sees it (via the chat template if any).

    ``template`` (a :class:`~ftkit.prompts.PromptTemplate`) renders the prompt as training will:
    its system prompt, shots and instruction around the row's ``prompt``."""
    if "messages" in row:
        messages = row["messages"]
    else:  # preference: the longer answer decides whether the pair fits
        answer = row["completion"] if "completion" in row else max(row["chosen"], row["rejected"], key=len)
        asked = template.messages(row) if template is not None else [{"role": "user", "content": row["prompt"]}]
        messages = [*asked, {"role": "assistant", "content": answer}]
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(m["content"] for m in messages)


def token_lengths(rows: list[dict], tokenizer, template=None) -> list[int]:
    """Tokens per example, counted on the text the chat template renders (with ``template``'s
    prompt around each row when given)."""
    texts = [render_example(r, tokenizer, template) for r in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _percentiles(lengths: list[int]) -> dict[str, int]:
    s = pd.Series(lengths)
    return {"p50": int(s.quantile(0.5)), "p90": int(s.quantile(0.9)),
            "p99": int(s.quantile(0.99)), "max": int(s.max())}


def _key(row: dict) -> str:
    fields_ = [f for f in ("messages", "prompt", "completion", "chosen", "rejected") if f in row]
    return json.dumps([row[f] for f in fields_], ensure_ascii=False, sort_keys=True)


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def _prompt_key(row: dict) -> str:
    """What a prompt is, ignoring case and spacing: near-duplicates count as the same prompt."""
    if "messages" in row or row.get("history"):  # a conversation, or one turn of it: the turns so far
        turns = row.get("messages") or row["history"]
        return json.dumps([(m["role"], _normalized(m["content"])) for m in turns if m["role"] != "assistant"])
    return _normalized(row["prompt"])


def overlap_note(train, test, what: str = "training rows") -> tuple[list[int], str]:
    """The leakage check of a split: the ``test`` rows whose prompt is also in ``train`` (case and
    spacing ignored), and one sentence saying so.

    >>> overlap_note([{"prompt": "Where is  my order?"}], [{"prompt": "where is my order?"}, {"prompt": "hi"}])[1]
    '1 of 2 held-out rows have a prompt that is also in the training rows (held-out rows 0); scores on them measure memory, not skill'
    """
    shared = find_overlap(train, test)
    if not shared:
        return shared, f"no held-out prompt appears in the {what} (case and spacing ignored)"
    return shared, (f"{len(shared)} of {len(as_rows(test))} held-out rows have a prompt that is also in the "
                    f"{what} (held-out rows {rows_text(shared)}); scores on them measure memory, not skill")


def find_overlap(train, test) -> list[int]:
    """Indices of ``test`` rows whose prompt also appears in ``train`` (a leak between splits)."""
    seen = {_prompt_key(r) for r in as_rows(train)}
    return [i for i, r in enumerate(as_rows(test)) if _prompt_key(r) in seen]


def add_warnings(report: DataReport, rows: list[dict], tokenizer=None, max_length=None, test=None,
                 template=None) -> None:
    """Add to ``report`` what is worth a warning in canonical ``rows``: duplicates, pairs whose
    sides are the same, examples longer than ``max_length`` tokens, prompts shared with ``test``;
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
        report.lengths = lengths = token_lengths(rows, tokenizer, template)
        report.token_lengths = _percentiles(lengths)
        if template is not None:
            report.length_basis = f"with the {template.name!r} prompt"
        if max_length is not None:
            long = [i for i, n in enumerate(lengths) if n > max_length]
            if long:
                basis = f" {report.length_basis}" if report.length_basis else ""
                report.warnings.append(
                    f"{len(long)} example(s) are longer than max_length={max_length} tokens{basis} and "
                    f"will be truncated: {rows_text(long)} (longest {max(lengths)} tokens)"
                )
    if test is not None:
        shared = find_overlap(rows, test)
        if shared:
            report.warnings.append(
                f"{len(shared)} test row(s) have a prompt that is also in the training rows "
                f"(test rows {rows_text(shared)}); scores on them measure memory, not skill"
            )
