"""TRL's trainers keep the figures they log in private attributes; the fast losses that stand in
for TRL's (:mod:`ftkit.fastpath.sft_loss`, :mod:`ftkit.fastpath.dpo_lean`) write them here, under
TRL's names, so that a run logs the same figures on either path.

Each private name read or written below has a contract test
(``tests/fastpath/test_training_contracts.py``): ``_metrics`` (a ``{"train", "eval"}`` dict of
lists that ``log()`` averages and clears), ``_total_train_tokens`` (the running token count behind
``num_tokens``) and ``_tp_size`` (tensor-parallel ranks, which see the same tokens).

>>> from collections import defaultdict
>>> from types import SimpleNamespace
>>> trainer = SimpleNamespace(_metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
>>> figures(trainer, "train")["entropy"].append(0.5)
>>> count_train_tokens(trainer, 12), train_tokens(trainer), dict(figures(trainer, "train"))
(12, 12, {'entropy': [0.5]})
"""

from __future__ import annotations

__all__ = ["count_train_tokens", "figures", "train_tokens"]


def figures(trainer, mode: str) -> dict[str, list]:
    """The figures TRL's next ``log()`` averages for ``mode`` (``"train"`` or ``"eval"``): a dict of
    lists, one value appended per batch."""
    return trainer._metrics[mode]


def count_train_tokens(trainer, tokens: int) -> int:
    """Add a training batch's ``tokens`` (gathered over the processes) to TRL's running count, as
    TRL counts them (once per tensor-parallel group); return the count."""
    trainer._total_train_tokens += int(tokens) // trainer._tp_size
    return trainer._total_train_tokens


def train_tokens(trainer) -> int:
    """TRL's running count of training tokens (what ``num_tokens`` logs)."""
    return trainer._total_train_tokens
