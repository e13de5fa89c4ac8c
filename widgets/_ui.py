"""Buttons whose errors land in the panel, not in the kernel's log."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w

from ftkit.widgets import _html


def button(description: str, action: Callable[[], object], messages: w.HTML, *, css: str | None = None,
           tooltip: str = "", style: str = "") -> w.Button:
    """A button that calls ``action()``; if it raises, ``messages`` shows a short error with the
    details folded below, and the panel stays usable."""
    b = w.Button(description=description, tooltip=tooltip, button_style=style)
    if css:
        b.add_class(css)
    run = guarded(action, messages)
    b.on_click(lambda _: run())
    return b


def guarded(action: Callable[[], object], messages: w.HTML) -> Callable[..., None]:
    """``action`` wrapped so that an exception is shown in ``messages`` instead of raised; extra
    arguments (an observer's change) are ignored."""

    def call(*_):
        try:
            action()
        except Exception as err:  # noqa: BLE001 - shown to the user, who can fix and click again
            messages.value = _html.error(str(err) or type(err).__name__, err)

    return call
