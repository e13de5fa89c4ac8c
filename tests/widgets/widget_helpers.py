"""Small labelled rows, and ways to read a panel in a test: its widgets, HTML and buttons."""

from __future__ import annotations

import html

import ipywidgets as w

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
LABELS = ["account", "address", "billing", "order_status"]
ROWS = [{"prompt": p, "completion": c, "label": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address"),
    ("My parcel is late", "order_status"), ("Refund the double charge", "billing"),
    ("I cannot log in", "account"), ("Ship it to my new flat", "address")]]


def walk(widget):
    """Every widget inside ``widget`` (itself included)."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def html_values(panel) -> list[str]:
    """The value of every HTML widget in the panel: what the browser renders as markup."""
    return [x.value for x in walk(panel) if isinstance(x, w.HTML)]


def text(panel) -> str:
    """All the panel's HTML with entities decoded, for asserting on messages."""
    return html.unescape("\n".join(html_values(panel)))


def find_button(panel, css: str | None = None, description: str | None = None) -> w.Button:
    found = [x for x in walk(panel) if isinstance(x, w.Button)
             and (css is None or css in x._dom_classes) and (description is None or x.description == description)]
    assert len(found) == 1, f"{len(found)} buttons match {css or description!r}"
    return found[0]


def assert_escaped(panel) -> None:
    """No payload reaches the HTML raw, and at least one is shown (escaped) as text."""
    values = html_values(panel)
    for payload in XSS:
        assert not any(payload in v for v in values), payload
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in v or "&lt;img src=x onerror=alert(1)&gt;" in v
               for v in values)
