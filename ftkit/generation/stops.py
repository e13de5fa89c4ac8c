"""Answers that end when they are done: where the answer a task expects ends, and a stopping
criterion that ends generation there, row by row.

A zero-shot model rarely stops where the task's answer ends: asked for a function it writes the
function, then an example, then an explanation (237 new tokens on average on a 164-task code set,
most of them after the code). Everything after the end is paid in decoding time and then cut away,
or worse, run by the code metric. A task names where its answer ends (``Task.answer_end``):

- ``"code block"`` (:func:`code_end`): after the closing fence of the first Python block when the
  answer opened a fence (the block :func:`ftkit.evaluation.sandbox.extract_code` reads); else, after
  a function, at the first line back at column 0 that is not more code (another ``def``/``class``,
  a decorator, an import, a comment): ``print(f(2))``, ``# Example`` is fine, ``This function...``;
- ``"first line"`` (:func:`line_end`): the end of the first non-blank line (a label).

The end-of-turn token ends every answer anyway (transformers' own end-of-sequence criterion).

Why not transformers' ``StopStringCriteria`` (``stop_strings=``): a stop string fires wherever it
appears, and these ends depend on what came before: a closing fence ends the answer only when a
fence was opened, ````` `` ``` `` ````` in an unfenced answer does not; a column-0 line ends a
function only after its body; ``"\\n"`` would end a label answer that starts with a blank line
empty. So :func:`stopping_criteria` is a small ``StoppingCriteria`` of our own (written here, not
a library's) that decodes each unfinished row's new tokens at each step and asks the functions
above. Decoding every step is quadratic in the answer's length, but a 384-token answer of 16 rows
costs about a tenth of a second of a fast tokenizer, beside minutes of decoding.

It returns one flag per row, so in a batch each row ends on its own: transformers then feeds a
finished row padding (its cost is that row's share of each remaining step: the batch runs until
its last row ends, or ``max_new_tokens``), and stops the whole ``generate`` call as soon as every
row has finished. The criterion records the step at which each row ended (``ended_at``), so the
token count of a row is its answer's, not the padding's.

>>> text = "```python\\ndef f(x):\\n    return 2 * x\\n```\\nThis doubles x."
>>> cut(text, "code block")
'```python\\ndef f(x):\\n    return 2 * x\\n```'
>>> cut("def f(x):\\n    return 2 * x\\n\\nprint(f(2))\\n", "code block")
'def f(x):\\n    return 2 * x\\n\\n'
>>> cut("billing_issue\\nBecause the card was charged twice.", "first line")
'billing_issue'
"""

from __future__ import annotations

import functools
import re

__all__ = ["CODE_BLOCK", "ENDS", "FIRST_LINE", "answer_end", "code_end", "cut", "line_end", "stopping_criteria"]

CODE_BLOCK = "code block"
FIRST_LINE = "first line"

# The fenced blocks extract_code reads as Python (ftkit.evaluation.sandbox): ```python, ```py, bare ```.
_PYTHON = ("python", "py", "python3", "")
_FENCE = re.compile(r"[ \t]*```[ \t]*([\w+.-]*)")
# A column-0 line that starts one of these is more code, not the end of the answer (a helper the
# function calls, a decorator, an import, a comment before the next definition).
_MORE_CODE = ("def ", "async def ", "class ", "@", "import ", "from ", "#")
_DEFINITION = ("def ", "async def ", "class ")


def line_end(text: str) -> int | None:
    """Where a one-line answer ends: the newline after the first non-blank line; None until then.

    >>> line_end("\\n billing\\nmore"), line_end("billing")
    (9, None)
    """
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    return end if end >= 0 else None


def code_end(text: str) -> int | None:
    """Where a code answer ends, as an index into ``text`` (None: not yet).

    With a fence opened before any function, just after the closing fence of the first block in
    Python (```python, ```py or bare; another language's block is read past). Without one, after a
    ``def``/``class`` whose header has ended (a line ending in ``:``) and whose body has an indented
    line: at the start of the first column-0 line that is not more code (see ``_MORE_CODE``); an
    answer that begins indented is a function body already. A line still being written ends the
    answer as soon as its start can no longer be one of those words.

    >>> code_end("Sure:\\n```python\\ndef f():\\n    return 1\\n```\\nDone")
    41
    >>> text = "def f():\\n    return 1\\n\\ndef g():\\n    return f()\\nprint(g())"
    >>> text[:code_end(text)]
    'def f():\\n    return 1\\n\\ndef g():\\n    return f()\\n'
    >>> code_end("def f():\\n    return 1\\n\\npr"), code_end("def f():\\n    return 1\\nde")
    (23, None)
    """
    fence = None  # the language of the open fenced block
    in_def = header = body = seen = False
    start = 0
    for line in text.splitlines(keepends=True):
        at, start = start, start + len(line)
        complete = line.endswith("\n")
        if fence is not None:
            close = _FENCE.match(line)
            if close and line.strip().startswith("```"):
                if fence in _PYTHON:
                    return at + line.index("```") + 3
                fence = None
            continue
        opened = _FENCE.match(line)
        if not in_def and opened and line.strip().startswith("```"):
            if not complete:  # the language is still being written
                return None
            fence = opened.group(1).lower()
            continue
        stripped = line.strip()
        if not stripped:
            continue
        first, seen = not seen, True
        if line[0] in " \t":
            if first:  # an answer that begins with the body (the prompt wrote the header)
                in_def = header = True
            body = body or (in_def and header)
            header = header or (in_def and complete and stripped.endswith(":"))
            continue
        if not in_def:
            if line.startswith(_DEFINITION):
                in_def, header, body = True, complete and stripped.endswith(":"), False
            continue
        if not (header and body):  # a header over several lines: "def f(\n    x,\n):"
            header = header or (complete and stripped.endswith(":"))
            continue
        if line.startswith(_MORE_CODE):
            if line.startswith(_DEFINITION):
                header, body = complete and stripped.endswith(":"), False
            continue
        if not complete and any(word.startswith(line) for word in _MORE_CODE):
            return None  # "de" may become "def "
        return at
    return None


ENDS = {CODE_BLOCK: code_end, FIRST_LINE: line_end}


def answer_end(text: str, kind: str | None) -> int | None:
    """Where the answer in ``text`` ends for a task whose answers end at ``kind`` (None: never)."""
    if not kind:
        return None
    if kind not in ENDS:
        raise ValueError(f"no answer end {kind!r}; answer ends are: {', '.join(ENDS)} (or None)")
    return ENDS[kind](text)


def cut(text: str, kind: str | None) -> str:
    """``text`` up to where its answer ends (the closing fence kept); all of it when it has not.

    >>> cut("def f():\\n    return 1\\nf()", "code block"), cut("a b", None)
    ('def f():\\n    return 1\\n', 'a b')
    """
    end = answer_end(text, kind)
    return text if end is None else text[:end]


def stopping_criteria(kind: str | None, tokenizer, prompt_width: int):
    """A transformers ``StoppingCriteria`` that ends each row once its answer (the tokens after
    ``prompt_width``) has ended at ``kind``; None for no ``kind``. Its ``ended_at`` maps a row to
    the number of new tokens it had when it ended. One per ``generate`` call (it keeps state).

    >>> criteria = stopping_criteria("first line", tokenizer, input_ids.shape[1])      # doctest: +SKIP
    >>> model.generate(input_ids, stopping_criteria=StoppingCriteriaList([criteria]))  # doctest: +SKIP
    """
    if not kind:
        return None
    answer_end("", kind)  # an unknown kind fails here, not at the first step
    return _criterion_class()(kind, tokenizer, prompt_width)


@functools.cache
def _criterion_class():
    """The criterion's class, made on first use: its base class is transformers', and ``import
    ftkit`` loads no transformers."""
    import torch
    from transformers import StoppingCriteria

    class AnswerEnd(StoppingCriteria):
        """Ends each row of a batch once the text of its new tokens has ended (see the module)."""

        def __init__(self, kind: str, tokenizer, prompt_width: int):
            self.kind, self.tokenizer, self.prompt_width = kind, tokenizer, prompt_width
            self.ended_at: dict[int, int] = {}

        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[:, self.prompt_width:]
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            for row in range(input_ids.shape[0]):
                if row not in self.ended_at:
                    text = self.tokenizer.decode(new[row], skip_special_tokens=True)
                    if answer_end(text, self.kind) is not None:
                        self.ended_at[row] = new.shape[1]
                done[row] = row in self.ended_at
            return done

    return AnswerEnd
