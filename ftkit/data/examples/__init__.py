"""Small built-in datasets written for ftkit, so every notebook runs offline on real-looking data.

>>> names()[:4]
['general_probes', 'shop_blurbs', 'shop_chat', 'shop_code']
>>> ds = load("support_routing", verbose=False)
>>> ds.column_names[:3]
['prompt', 'completion', 'label']
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.data.canonical import load_data

if TYPE_CHECKING:
    import datasets


__all__ = ["Example", "glossary", "info", "labels", "load", "names", "path", "policies"]


@dataclass(frozen=True)
class Example:
    name: str
    filename: str
    task: str
    description: str


_EXAMPLES = {
    e.name: e
    for e in [
        Example(
            name="support_routing",
            filename="support_routing.jsonl",
            task="classification",
            description=(
                "Customer messages to a home-goods web shop, each routed to one of 8 queues "
                "(order_status, cancel_order, return_refund, damaged_item, billing_issue, "
                "account_access, change_address, product_question). 480 rows, 60 per label."
            ),
        ),
        Example(
            name="shop_qa",
            filename="shop_qa.jsonl",
            task="qa",
            description=(
                "Customer questions answered from Hearth & Co.'s own policy handbook (shop_policies.md: "
                "returns, shipping zones, warranty, care, gift cards ...), which a base model cannot know. "
                "Short answers taken word for word from the policy; each row keeps its policy section as "
                "`context` for the open-book prompt."
            ),
        ),
        Example(
            name="shop_translation",
            filename="shop_translation.jsonl",
            task="translation",
            description=(
                "The shop's English product, care, shipping and support texts with German translations "
                "that use its fixed terminology (shop_glossary.jsonl); `terms` lists the glossary entries "
                "each row must use."
            ),
        ),
        Example(
            name="shop_summaries",
            filename="shop_summaries.jsonl",
            task="summarization",
            description=(
                "Support conversations, each summarized in the shop's one-line case format: "
                "'<customer problem>; <action taken>; <open item>', at most 30 words."
            ),
        ),
        Example(
            name="shop_blurbs",
            filename="shop_blurbs.jsonl",
            task="creative",
            description=(
                "Product facts and blurbs in the shop's house style, with checkable rules: three lines, "
                "'Made for home: <product>' first, a 'Care:' line last, no exclamation marks, no 'you', "
                "at most 40 words."
            ),
        ),
        Example(
            name="shop_chat",
            filename="shop_chat.jsonl",
            task="chat",
            description=(
                "The shop's support chat: multi-turn conversations (2 to 5 customer turns) in which the "
                "assistant keeps the shop's tone rules: it greets the customer by name, confirms the order "
                "number before acting, and never promises a refund outside the policy."
            ),
        ),
        Example(
            name="shop_code",
            filename="shop_code.jsonl",
            task="code",
            description=(
                "Small Python tasks from the shop's back office (prices, discounts, shipping fees, return "
                "windows, order ids), each with a reference solution and assert tests that score an answer "
                "by running it in a sandbox."
            ),
        ),
        Example(
            name="support_routing_new_queue",
            filename="support_routing_new_queue.jsonl",
            task="classification",
            description=(
                "32 customer messages for a ninth queue the routing example does not have, gift_card: "
                "the task-change test adds the label to each prompt and measures which variants use it "
                "without new training (ftkit.evaluation.experiments.task_change)."
            ),
        ),
        Example(
            name="general_probes",
            filename="general_probes.jsonl",
            task="probes",
            description=(
                "120 short questions outside every shop task (facts, arithmetic, format instructions, "
                "another classification, reading), each with a mechanical check: the same probes before "
                "and after fine-tuning measure what tuning cost in flexibility (ftkit.evaluation.flexibility.flexibility)."
            ),
        ),
        Example(
            name="support_routing_preferences",
            filename="support_routing_preferences.jsonl",
            task="preference",
            description=(
                "Preference pairs for the same routing task, for DPO: a new customer message, the "
                "correct queue as `chosen` and the most confusable wrong queue as `rejected`."
            ),
        ),
    ]
}


def names() -> list[str]:
    """The names of the built-in examples."""
    return sorted(_EXAMPLES)


def info(name: str) -> Example:
    """What an example holds: its task kind and a description."""
    try:
        return _EXAMPLES[name]
    except KeyError:
        raise KeyError(f"no built-in example {name!r}; choose one of: {', '.join(names())}") from None


def path(name: str) -> Path:
    """The example's file inside the installed package (read it, never write it)."""
    return Path(str(files(__name__).joinpath("data", info(name).filename)))


def load(name: str, verbose: bool = True, **kwargs) -> datasets.Dataset:
    """Load a built-in example in its canonical shape (keyword arguments go to ``load_data``)."""
    return load_data(path(name), verbose=verbose, **kwargs)


def glossary() -> list[dict]:
    """The shop's fixed English -> German terminology: ``[{"en": ..., "de": ...}, ...]``."""
    import json

    text = files(__name__).joinpath("data", "shop_glossary.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def policies() -> str:
    """The shop's policy handbook (Markdown), the knowledge the QA example asks about."""
    return files(__name__).joinpath("data", "shop_policies.md").read_text(encoding="utf-8")


def labels(name: str) -> list[str]:
    """The sorted label set of a labelled example."""
    return sorted(set(load(name, verbose=False)["label"]))
