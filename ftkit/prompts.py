"""Prompt templates rendered to chat messages.

A template turns one row into the messages the model sees; the model's chat template then turns
those into text (see :func:`ftkit.generate.render_prompts`).

>>> classify_messages("my parcel is late", ["order_status", "billing_issue"])[1]["content"]
'Labels: order_status, billing_issue\\nMessage: my parcel is late\\nAnswer with the label only.'
"""

from __future__ import annotations

DEFAULT_CLASSIFY_SYSTEM = "You sort messages into exactly one of the given labels."


def classify_messages(text: str, labels: list[str], *, system: str | None = DEFAULT_CLASSIFY_SYSTEM,
                      shots: list[tuple[str, str]] = ()) -> list[dict]:
    """Zero-shot (no ``shots``) or few-shot classification as chat messages.

    Each shot is a ``(text, label)`` pair shown as an earlier user/assistant exchange, so the
    model sees the exact answer format before the real question. Pass ``system=None`` to leave
    the system prompt to the model's chat template (SmolLM2's then inserts its own default).
    """
    def ask(t: str) -> dict:
        return {"role": "user",
                "content": f"Labels: {', '.join(labels)}\nMessage: {t}\nAnswer with the label only."}

    messages = [] if system is None else [{"role": "system", "content": system}]
    for shot_text, shot_label in shots:
        messages += [ask(shot_text), {"role": "assistant", "content": shot_label}]
    return messages + [ask(text)]
