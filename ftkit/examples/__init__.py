"""Small built-in datasets written for ftkit, so every notebook runs offline on real-looking data.

>>> names()
['support_routing', 'support_routing_preferences']
>>> ds = load("support_routing", verbose=False)
>>> ds.column_names[:3]
['prompt', 'completion', 'label']
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import datasets

from ftkit.data import load_data


__all__ = ["Example", "info", "labels", "load", "names", "path"]


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


def labels(name: str) -> list[str]:
    """The sorted label set of a labelled example."""
    return sorted(set(load(name, verbose=False)["label"]))
