"""Answers to a few held-out rows while a run trains: a loss curve says the model learns, the
answers say what (a wrong label turning right, a summary taking the house format).

:func:`~ftkit.training.sft.train_sft` given ``sample_from=`` rows and ``sample_every=N`` answers
``sample_rows`` of them before the first step (the base model's answers) and every N steps, and
emits each sampling as a ``sample`` event, which the run record keeps::

    {"step": 10, "seconds": 0.41, "max_new_tokens": 13,
     "rows": [{"index": 0, "prompt": "...", "reference": "billing_issue", "answer": "billing_issue",
               "match": True}, ...]}

Each sampling is one greedy ``generate`` call over the rows together, with the training template,
the adapter on and the model in eval mode (no dropout), answers cut at :func:`answer_budget`
tokens. It leaves training as it was: train mode is restored, no gradient is kept and torch's
random state is put back, so a run's losses are the same with sampling as without (tested).

:func:`samples_html` draws the recorded events as a table (rows by sampled steps), for the
TrainPanel and the report.

>>> matches("Billing_issue ", "billing_issue"), matches("billing", "billing_issue")
(True, False)
>>> matches("anything", "a summary that is a good deal longer than any label would ever be") is None
True
"""

from __future__ import annotations

import contextlib
import html
import time
from dataclasses import dataclass, field

__all__ = ["MAX_SAMPLE_TOKENS", "SampleSet", "answer_budget", "matches", "pick_rows", "sample_answers",
           "sample_set", "samples_html"]

# Answers are cut at the longest reference plus this many tokens: enough to see a wrong answer is
# wrong (the base model rambles), little enough that a label costs ~8 decoding steps. On a CPU each
# decoding step of the adapted model costs about a tenth of a training step of 4 examples.
SLACK_TOKENS = 4
# A summary's first 48 tokens show whether it took the house format; each token more is paid at
# every sampling, inside the training time.
MAX_SAMPLE_TOKENS = 48
# A reference of at most this many words (a label, a short answer) gets a match mark; a longer
# one (a summary, a translation) has no single right wording.
SHORT_REFERENCE_WORDS = 8


@dataclass
class SampleSet:
    """The held-out rows a run answers as it trains: their index in ``sample_from``, the prompt as
    the user wrote it, the reference answer, and the conversation the model is asked (the training
    template's)."""

    indices: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    conversations: list[list[dict]] = field(default_factory=list)
    max_new_tokens: int = MAX_SAMPLE_TOKENS

    def __len__(self) -> int:
        return len(self.indices)


def pick_rows(rows: list[dict], n: int) -> list[int]:
    """``n`` row indices, in order, each with a reference not picked yet where the rows allow
    (three rows of three labels show more than three of one), then the rest in order.

    >>> pick_rows([{"completion": "a"}, {"completion": "a"}, {"completion": "b"}, {"completion": "c"}], 3)
    [0, 2, 3]
    """
    seen, first, rest = set(), [], []
    for i, row in enumerate(rows):
        key = row.get("label", _reference(row))
        (rest if key in seen else first).append(i)
        seen.add(key)
    return sorted((first + rest)[:n])


def _reference(row: dict) -> str:
    if "messages" in row:
        last = row["messages"][-1] if row["messages"] else {}
        return last.get("content", "") if last.get("role") == "assistant" else ""
    return str(row.get("completion", ""))


def _question(row: dict, template) -> tuple[str, list[dict]]:
    """What the user asked (for the table) and the conversation the model answers."""
    if "messages" in row:
        turns = list(row["messages"])
        if turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]  # the answer to compare with
        asked = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
        return asked, template.conversation(turns, row)
    return str(row.get("prompt", "")), template.messages(row)


def answer_budget(tokenizer, references: list[str]) -> int:
    """New tokens a sampling allows: the longest reference's tokens plus ``SLACK_TOKENS``, at
    most ``MAX_SAMPLE_TOKENS`` (a label: ~8; a summary: 48, its start)."""
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=0)
    return min(MAX_SAMPLE_TOKENS, longest + SLACK_TOKENS)


def sample_set(rows, template, tokenizer, n: int) -> SampleSet:
    """The first ``n`` rows of ``rows`` to answer during training (see :func:`pick_rows`), asked
    with ``template`` as training asks; empty for no rows."""
    from ftkit.data.canonical import as_rows

    rows = as_rows(rows) if rows is not None else []
    picked = pick_rows(rows, n)
    asked = [_question(rows[i], template) for i in picked]
    references = [_reference(rows[i]) for i in picked]
    return SampleSet(indices=picked, prompts=[a for a, _ in asked], references=references,
                     conversations=[c for _, c in asked], max_new_tokens=answer_budget(tokenizer, references))


def matches(answer: str, reference: str) -> bool | None:
    """Whether ``answer`` is ``reference``, ignoring case and spacing; None for a long reference,
    where a different wording may be as right."""
    if len(reference.split()) > SHORT_REFERENCE_WORDS:
        return None
    return " ".join(answer.split()).casefold() == " ".join(reference.split()).casefold()


def sample_answers(model, tokenizer, samples: SampleSet, step: int) -> dict:
    """Answer ``samples`` with ``model`` as it is now (the adapter on), greedily and in one batch;
    return the ``sample`` event's payload for ``step``. Eval mode while it generates, the model's
    mode and torch's random state restored after."""
    import torch

    from ftkit.generation.generate import generate

    t0 = time.perf_counter()
    was_training = model.training
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    # Greedy decoding draws no random numbers, but a backend's kernel choice or a warm-up might:
    # the data order of later epochs comes from torch's global generator, so it is put back.
    with torch.random.fork_rng(devices=cuda), _eval_mode(model, was_training):
        outs = generate(model, tokenizer, samples.conversations, max_new_tokens=samples.max_new_tokens,
                        batch_size=max(1, len(samples)), progress=False)
    rows = [{"index": i, "prompt": p, "reference": r, "answer": o.text, "match": matches(o.text, r)}
            for i, p, r, o in zip(samples.indices, samples.prompts, samples.references, outs)]
    return {"step": step, "seconds": time.perf_counter() - t0, "max_new_tokens": samples.max_new_tokens,
            "rows": rows}


@contextlib.contextmanager
def _eval_mode(model, was_training: bool):
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --- the table -------------------------------------------------------------------------------------

CELL_CHARS = 60  # a longer answer is cut in the cell and shown whole on hover
_CHANGED = "background:#fff3a3"
_MATCH, _MISS = "\u2713", "\u2717"


def _cut(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def samples_html(events: list[dict]) -> str:
    """The ``sample`` events as one HTML table: a line per held-out row (its prompt and reference),
    a column per sampled step. An answer that changed since the step before is highlighted; a
    short reference's answer carries a check mark when it matches, a cross when not. Every piece
    of text is escaped (answers are model output, prompts the user's data). Empty without events.

    >>> samples_html([{"step": 0, "rows": [{"index": 3, "prompt": "<b>hi</b>", "reference": "x",
    ...                                     "answer": "y", "match": False}]}]).count("&lt;b&gt;")
    2
    """
    events = [e for e in events if e.get("rows")]
    if not events:
        return ""
    order: list[int] = []
    rows: dict[int, dict] = {}
    for event in events:
        for row in event["rows"]:
            if row.get("index") not in rows:
                order.append(row.get("index"))
                rows[row.get("index")] = row
    esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    cell = "border:1px solid #ddd;padding:2px 6px;vertical-align:top;text-align:left"
    head = "".join(f"<th style='{cell}'>{h}</th>" for h in ("#", "prompt", "reference"))
    head += "".join(f"<th style='{cell}'>step {esc(e.get('step'))}</th>" for e in events)
    body = []
    for index in order:
        first = rows[index]
        line = [f"<td style='{cell}'>{esc(index)}</td>",
                f"<td style='{cell}' title='{esc(first.get('prompt', ''))}'>{esc(_cut(first.get('prompt', '')))}</td>",
                f"<td style='{cell}' title='{esc(first.get('reference', ''))}'>"
                f"{esc(_cut(first.get('reference', '')))}</td>"]
        before = None
        for event in events:
            row = next((r for r in event["rows"] if r.get("index") == index), None)
            if row is None:
                line.append(f"<td style='{cell}'></td>")
                continue
            answer = str(row.get("answer", ""))
            changed = before is not None and answer != before
            mark = {True: f" <span class='ftkit-match'>{_MATCH}</span>",
                    False: f" <span class='ftkit-miss' style='color:#b00020'>{_MISS}</span>"}.get(row.get("match"), "")
            css = " class='ftkit-changed'" if changed else ""
            style = f"{cell};{_CHANGED}" if changed else cell
            line.append(f"<td{css} style='{style}' title='{esc(answer)}'>{esc(_cut(answer)) or '<i>(empty)</i>'}"
                        f"{mark}</td>")
            before = answer
        body.append("<tr>" + "".join(line) + "</tr>")
    return ("<table class='ftkit-samples' style='border-collapse:collapse;font-size:0.85rem'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
