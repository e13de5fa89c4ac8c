"""The house style of the shop's built-in examples, as checkable rules: a product blurb's layout,
a summary's case format, the support chat's tone, and the glossary a translation keeps.

Each rule is a plain function ``(answer, row) -> bool``; ``*_rule_metrics()`` turn them into
metrics ``(prediction, reference, row) -> float`` that evaluation scores like any other. The tasks
(:mod:`ftkit.tasks`) name them as the house metrics of their own example.

>>> blurb_rule_metrics()["no_exclamation"]("Made for home: Mug\\nA mug.\\nCare: wash", "")
1.0
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ftkit.data.examples import glossary

__all__ = ["ACTION_PHRASES", "BLURB_RULES", "CHAT_RULES", "CHAT_SYSTEM", "PROMISE_WORDS", "SUMMARY_FORMAT",
           "SUMMARY_RULES", "blurb_rule_metrics", "chat_rule_metrics", "glossary_prompt", "summary_rule_metrics"]


# --- creative writing: the house rules of a product blurb, each a checkable metric --------------

def _lines(text: str) -> list[str]:
    return text.strip().split("\n")


BLURB_RULES: dict[str, Callable[[str, dict], bool]] = {
    "three_lines": lambda text, row: len(_lines(text)) == 3 and all(line.strip() for line in _lines(text)),
    "opening": lambda text, row: _lines(text)[0].startswith(f"Made for home: {row.get('product', '')}"),
    "no_exclamation": lambda text, row: "!" not in text,
    "within_40_words": lambda text, row: 0 < len(text.split()) <= 40,
    "care_line": lambda text, row: len(_lines(text)) == 3 and _lines(text)[2].startswith("Care:"),
    "no_you": lambda text, row: re.search(r"\byour?\b", text, flags=re.I) is None,
}


def blurb_rule_metrics() -> dict[str, Callable]:
    """One metric per house rule, and ``all_rules`` (1.0 only when every rule holds), headline first."""
    return _rule_metrics(BLURB_RULES, "all_rules")


# --- summaries: the shop's one-line case format -------------------------------------------------

SUMMARY_FORMAT = r"[^;\n]+; [^;\n]+; [^;\n]+"
_SUMMARY_FORMAT = re.compile(SUMMARY_FORMAT, flags=re.S)

SUMMARY_RULES: dict[str, Callable[[str, dict], bool]] = {
    "within_30_words": lambda text, row: 0 < len(text.split()) <= 30,
    "house_format": lambda text, row: _SUMMARY_FORMAT.fullmatch(text.strip()) is not None,
}


def summary_rule_metrics() -> dict[str, Callable]:
    """One metric per rule of the case format (no overall one: ROUGE-L is the summaries' headline).

    >>> {name: fn("late parcel; resent; no open items", "") for name, fn in summary_rule_metrics().items()}
    {'within_30_words': 1.0, 'house_format': 1.0}
    """
    return _rule_metrics(SUMMARY_RULES)


def glossary_prompt() -> str:
    """The shop's fixed terms as a system prompt: the prompt-engineering answer to terminology."""
    terms = "\n".join(f"{g['en']} = {g['de']}" for g in glossary())
    return f"You translate for the Hearth & Co. shop. Always use these German terms:\n{terms}"

# --- chat: the shop's tone rules, checked on each answered turn ----------------------------------

ACTION_PHRASES = ("i've cancelled", "i've started a return", "i've arranged a replacement", "i've updated the address",
                  "i've issued a refund", "i've booked a collection", "i've reopened")
PROMISE_WORDS = ("guarantee", "guaranteed", "promise", "promised", "regardless", "exception", "no matter")
CHAT_SYSTEM = ("You are the customer support assistant of Hearth & Co., a home-goods web shop. Greet the customer "
               "by their first name in your first reply. Before you cancel, return, replace, refund or change "
               "anything, repeat the order number and ask the customer to confirm it. Offer only what the shop's "
               "policy allows; never promise a refund.")


def _plain(text: str) -> str:
    return text.replace("\u2019", "'").casefold()


def _acts(text: str) -> bool:
    return any(p in _plain(text) for p in ACTION_PHRASES)


_YES = re.compile(r"^\W*(yes|yep|yeah|yup|ya|correct|right|exactly|confirmed|sure|ok|okay|"
                  r"that's (right|it|correct|the one)|that is (right|correct))\b", re.I)


def _confirmed(text: str, row: dict) -> bool:
    """The answer names the order, and an earlier answer asked to confirm it, and the customer said yes."""
    order = str(row.get("order") or "").casefold()
    if not order or order not in _plain(text):
        return False
    history = row.get("history", [])
    for asked, reply in zip(history, history[1:]):
        said = _plain(asked["content"])
        if (asked["role"] == "assistant" and order in said and re.search(r"\bconfirm\b", said)
                and reply["role"] == "user" and _YES.match(_plain(reply["content"]))):
            return True
    return False


CHAT_RULES: dict[str, Callable[[str, dict], bool]] = {
    # The first answer of a conversation greets the customer by first name.
    "greets_by_name": lambda text, row: row.get("turn") != 1 or not row.get("customer") or re.search(
        rf"\b{re.escape(str(row['customer']).split()[0])}\b", text, flags=re.I) is not None,
    # An answer that acts (cancels, refunds, ...) names the order, which an earlier answer asked to confirm.
    "confirms_before_acting": lambda text, row: not _acts(text) or _confirmed(text, row),
    # Refunds only as the policy allows: never a promise.
    "no_refund_promise": lambda text, row: re.search(
        r"\b(" + "|".join(map(re.escape, PROMISE_WORDS)) + r")\b", _plain(text)) is None,
}


def _rule_metrics(rules: dict[str, Callable[[str, dict], bool]], overall: str | None = None) -> dict[str, Callable]:
    """One metric per rule, and ``overall`` (1.0 only when every rule holds), that one first."""
    def rule(name):
        def metric(prediction: str, reference: str, row: dict | None = None) -> float:
            return float(rules[name](prediction, row or {}))
        metric.__name__ = name
        return metric

    def every(prediction: str, reference: str, row: dict | None = None) -> float:
        return float(all(check(prediction, row or {}) for check in rules.values()))

    every.__name__ = overall or "every_rule"
    return {**({overall: every} if overall else {}), **{name: rule(name) for name in rules}}


def chat_rule_metrics() -> dict[str, Callable]:
    """The shop chat's tone rules, one metric each, and ``tone_rules`` (every rule kept), first.

    >>> row = {"turn": 1, "customer": "Priya", "order": "HC-10233", "history": []}
    >>> {name: fn("Hi Priya, I've cancelled order HC-10233.", "", row) for name, fn in chat_rule_metrics().items()}
    {'tone_rules': 0.0, 'greets_by_name': 1.0, 'confirms_before_acting': 0.0, 'no_refund_promise': 1.0}
    """
    return _rule_metrics(CHAT_RULES, "tone_rules")
