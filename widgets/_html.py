"""HTML for the panels: every piece of user data is escaped before it reaches an HTML widget.

A row may hold ``<script>`` or ``<img onerror=...>``; shown through these helpers it is text.

>>> pre("<b>hi</b>")
"<pre class='ftkit-pre'>&lt;b&gt;hi&lt;/b&gt;</pre>"
"""

from __future__ import annotations

import html
import traceback

import pandas as pd

# Long cells wrap instead of widening the panel; long tables scroll inside it.
_TABLE_STYLE = ("<style>.ftkit-table td,.ftkit-table th{text-align:left;vertical-align:top;"
                "white-space:pre-wrap;max-width:28em;padding:2px 6px}</style>")


def esc(value) -> str:
    """``value`` as text that HTML shows literally (quotes escaped too, for attributes)."""
    return html.escape(str(value), quote=True)


def pre(text: str) -> str:
    """Preformatted, escaped text: rendered prompts, pre-flight reports."""
    return f"<pre class='ftkit-pre'>{esc(text)}</pre>"


def folded(text: str, limit: int = 300) -> str:
    """Escaped preformatted text; a long one shows its start, with the rest folded below."""
    text = str(text)
    if len(text) <= limit:
        return pre(text)
    return (f"<details><summary>{esc(text[:120])}… ({len(text)} characters)</summary>{pre(text)}</details>")


def turn(text: str, history: str = "") -> str:
    """A conversation's user turn, escaped, with the turns before it folded above it."""
    if not history:
        return folded(text)
    n = history.count("\n\n") + 1
    return f"<details><summary>{n} earlier turn{'s' if n > 1 else ''}</summary>{pre(history)}</details>{folded(text)}"


def table(frame: pd.DataFrame, max_height: str = "24em", float_format: str = "{:.3f}") -> str:
    """A DataFrame as an escaped HTML table (pandas escapes every cell and header)."""
    body = frame.to_html(escape=True, classes="ftkit-table", border=0, na_rep="",
                         float_format=float_format.format)
    return f"{_TABLE_STYLE}<div style='max-height:{max_height};overflow:auto'>{body}</div>"


def error(message: str, err: BaseException | None = None) -> str:
    """A short message in red, with the full error folded below it."""
    details = ""
    if err is not None:
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        details = f"<details><summary>details</summary>{pre(trace)}</details>"
    return f"<div class='ftkit-error' style='color:#b00020;white-space:pre-wrap'>{esc(message)}</div>{details}"


def note(message: str) -> str:
    """A one-line status message."""
    return f"<div class='ftkit-note'>{esc(message)}</div>"
