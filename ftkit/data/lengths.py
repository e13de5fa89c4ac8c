"""How long each example is: in characters before any tokenizer sees it, then in tokens.

A row longer than the model could read is found by counting characters (:func:`long_rows`), and
skipped or refused before anything tokenizes it; the rows left are rendered as training feeds them
(:func:`render_example`: the chat template, a task's prompt around the row) and counted in tokens
(:func:`token_lengths`), never more than :func:`char_limit` characters in one tokenizer call.

>>> char_limit(max_length=65_536)          # 64k tokens x 10 characters each
655360
"""

from __future__ import annotations

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_CONTEXT", "MAX_ROW_CHARS", "char_limit", "char_limit_basis", "count_tokens",
           "long_rows", "long_rows_message", "render_example", "rows_text", "token_lengths"]


def rows_text(rows: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{shown}{more}"



# --------------------------------------------------------------------------------------------
# How much text is ever handed to a tokenizer

# A fast tokenizer holds about 115 bytes per character of the text of one call: one 50 MB row took
# 5.7 GB and 48 s, then the process died. `truncation=True` does not help, since it cuts after the
# whole text is tokenized. So a row is measured in characters first, and one longer than what the
# model could read is skipped (and named, with its row number) before anything tokenizes it, as one
# would `dataset.filter` it before training; the rows left are counted in tokens and checked
# against max_length as before, so nothing that fits is lost.
# What the model could read: its context in tokens x CHARS_PER_TOKEN. Real text runs 2.4-5.9
# characters per token (the real-data slices beside the project, SmolLM2's tokenizer: worst row
# 5.9, an abstract); only runs of one character (64 spaces are one token) go past 10. So a row over
# the bound cannot fit the context whole: SFT would cut it (TRL truncates to max_length), which
# trains on a fragment, and ftkit refuses to train on cut answers anyway.
CHARS_PER_TOKEN = 10
# The context when the tokenizer does not know it (HF's 1e30 placeholder, as a GGUF-made tokenizer
# has): 32k tokens, the context of most current small models (Qwen2.5, Phi-3.5-mini; SmolLM2 8k).
DEFAULT_CONTEXT = 32_768
# And never more than a million characters in one tokenizer call, whatever the context claims
# (128k-token models x 10): about 115 MB and a second on a laptop core.
MAX_ROW_CHARS = 1_000_000
# A data set whose rows are mostly over the bound is not a few stray rows to skip: it is refused.
_MOST = 0.5


def _context(tokenizer) -> int | None:
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n <= 10_000_000 else None  # 1e30: "not known"


def char_limit(tokenizer=None, max_length: int | None = None) -> int:
    """The most characters one example may hold before it is tokenized: the model's context
    (the tokenizer's ``model_max_length``, else :data:`DEFAULT_CONTEXT`; ``max_length`` when
    longer) x :data:`CHARS_PER_TOKEN`, at most :data:`MAX_ROW_CHARS`.

    >>> char_limit(), char_limit(max_length=65_536)
    (327680, 655360)
    """
    tokens = max(_context(tokenizer) or DEFAULT_CONTEXT, max_length or 0)
    return min(MAX_ROW_CHARS, tokens * CHARS_PER_TOKEN)


def char_limit_basis(tokenizer, max_length, limit: int) -> str:
    """Where :func:`char_limit`'s bound comes from, in words, for the messages that name it.

    >>> char_limit_basis(None, None, char_limit())
    'a usual model context, 32,768 tokens, x 10 characters per token'
    """
    tokens = max(_context(tokenizer) or DEFAULT_CONTEXT, max_length or 0)
    if limit < tokens * CHARS_PER_TOKEN:
        return "the most ftkit ever tokenizes at once"
    whose = "max_length" if max_length and max_length > (_context(tokenizer) or DEFAULT_CONTEXT) else \
        "the model's context" if _context(tokenizer) else "a usual model context"
    return f"{whose}, {tokens:,} tokens, x {CHARS_PER_TOKEN} characters per token"


def _chars(value) -> int:
    """Characters of text in a cell, nested lists and dicts (a conversation's turns) included."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif hasattr(v, "tolist") and getattr(v, "ndim", 0):  # numpy arrays from Parquet
            stack.extend(v.tolist())
    return total


def long_rows(rows, limit: int) -> dict[int, tuple[int, str]]:
    """The rows whose text (every column, a conversation's turns too) is over ``limit``
    characters: ``{row: (characters, the column holding most of them)}``.

    >>> long_rows([{"text": "hi", "label": "a"}, {"text": "x" * 50, "label": "b"}], limit=20)
    {1: (51, 'text')}
    """
    found = {}
    for i, row in enumerate(rows):
        sizes = {col: _chars(v) for col, v in row.items()}
        total = sum(sizes.values())
        if total > limit:
            found[i] = (total, max(sizes, key=sizes.get))
    return found


def long_rows_message(long: dict[int, tuple[int, str]], n_rows: int, limit: int, basis: str,
                      refuse: bool = False) -> tuple[str, bool]:
    """What to say about rows over the character bound, and whether it refuses the data (most of
    the rows are over: the data is longer than the model reads, not a few stray rows; or
    ``refuse``, as a headless run does by default)."""
    idx = sorted(long)
    worst = max(idx, key=lambda i: long[i][0])
    chars, col = long[worst]
    longest = f"{chars:,} characters" if len(idx) == 1 else f"the longest, row {worst}, has {chars:,} characters"
    rows = f"row{'s' if len(idx) > 1 else ''} {rows_text(idx)} (counting from 0, as dataset[i]; {longest}, most " \
           f"in column '{col}')"
    if len(idx) > _MOST * n_rows:
        return (f"{len(idx)} of {n_rows} rows are longer than {limit:,} characters ({basis}): {rows}. The model "
                "cannot read them whole: shorten them (split long documents into passages), or use a model with a "
                "longer context; check_data and load_data take max_chars= to set the bound"), True
    if refuse:
        return (f"{rows}: longer than {limit:,} characters ({basis}); shorten or split "
                f"{'them' if len(idx) > 1 else 'it'}, or set data.long_rows: skip to leave "
                f"{'them' if len(idx) > 1 else 'it'} out"), True
    return (f"{rows}: longer than {limit:,} characters ({basis}), skipped before tokenizing; shorten or split "
            f"{'them' if len(idx) > 1 else 'it'} to train on {'them' if len(idx) > 1 else 'it'}"), False


def count_tokens(tokenizer, texts: list[str], max_chars: int = MAX_ROW_CHARS) -> list[int]:
    """Tokens in each text, without ever handing the tokenizer more than ``max_chars`` characters in
    one call: texts are batched up to that many, and a longer text is counted in pieces of it (a
    word cut at a piece's edge may count one token more; only a text over the bound, which
    :func:`ftkit.data.canonical.check_data` has already skipped, is cut).

    >>> count_tokens(lambda texts, **kw: {"input_ids": [t.split() for t in texts]}, ["a b", "c d e f"], max_chars=4)
    [2, 4]
    """
    counts = [0] * len(texts)
    batch: list[tuple[int, str]] = []
    size = 0

    def flush():
        nonlocal batch, size
        if batch:
            ids = tokenizer([t for _, t in batch], add_special_tokens=False)["input_ids"]
            for (i, _), one in zip(batch, ids):
                counts[i] += len(one)
        batch, size = [], 0

    for i, text in enumerate(texts):
        for start in range(0, max(len(text), 1), max_chars):
            piece = text[start:start + max_chars]
            if size + len(piece) > max_chars:
                flush()
            batch.append((i, piece))
            size += len(piece)
    flush()
    return counts


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


def token_lengths(rows: list[dict], tokenizer, template=None, max_chars: int | None = None) -> list[int]:
    """Tokens per example, counted on the text the chat template renders (with ``template``'s
    prompt around each row when given), never more than ``max_chars`` characters (by default
    :func:`char_limit` of the tokenizer) in one tokenizer call: see :func:`count_tokens`."""
    texts = [render_example(r, tokenizer, template) for r in rows]
    return count_tokens(tokenizer, texts, max_chars or char_limit(tokenizer))


def _quantile(ordered: list[int], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly between the two nearest (as pandas
    and numpy do by default)."""
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _percentiles(lengths: list[int]) -> dict[str, int]:
    ordered = sorted(lengths)
    return {"p50": int(_quantile(ordered, 0.5)), "p90": int(_quantile(ordered, 0.9)),
            "p99": int(_quantile(ordered, 0.99)), "max": int(ordered[-1])}
