"""A shared prefix, found once: the tokens every row of a batch has in common.

Prompts of one task start alike (the chat template, the system prompt, a label list or few-shot
examples), so training (:mod:`ftkit.fastpath.sft_prefix`), batched generation (the static-cache
prefix in :mod:`ftkit.generation.generate`) and the shared-prefix attention all compute those
tokens once instead of once per row. They find the prefix here, with one threshold each for the
two costs it must beat, and ask the model class here how it takes a cache.

>>> shared_prefix([[1, 2, 3], [1, 2, 4]])
2
>>> shared_prefix([[1, 2], [1, 2, 3]])   # each row keeps at least one token of its own
1
"""

from __future__ import annotations

import functools
import inspect

__all__ = ["MIN_CACHED_PREFIX", "MIN_SHARED_PREFIX", "cache_argument", "forward_accepts", "shared_prefix",
           "shared_prefix_of_batch"]

# Training: a prefix shorter than this is not worth a second forward call.
MIN_SHARED_PREFIX = 8
# Generation: below this, building and expanding a static cache costs more than the prefix itself.
MIN_CACHED_PREFIX = 32


def shared_prefix(sequences: list[list[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token of its own."""
    if len(sequences) < 2:
        return 0
    first, n = sequences[0], min(len(s) for s in sequences) - 1
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in sequences):
            return i
    return max(n, 0)


def shared_prefix_of_batch(ids, mask, keep) -> int:
    """The leading tokens every row of a right-padded training batch (tensors ``ids``, ``mask``)
    has in common and that need no logits (``keep`` marks the positions whose logits count):
    the logit at position i predicts token i+1, so every kept logit must come after the prefix.
    0 for a single row or under :data:`MIN_SHARED_PREFIX`."""
    if ids.shape[0] < 2:
        return 0
    same = ((ids == ids[:1]) & (mask == 1)).all(0)
    common = int(same.long().cumprod(0).sum())
    first_kept = int(keep.long().argmax(1).min()) if keep.any(1).all() else 0
    shared = min(common, first_kept, ids.shape[1] - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


@functools.cache
def forward_accepts(cls, name: str) -> bool:
    """Whether the model class's forward takes the argument ``name`` (its signature read once)."""
    return name in inspect.signature(cls.forward).parameters


def cache_argument(model) -> str | None:
    """The argument under which the model's forward takes a KV cache: transformers renamed
    ``past_key_values`` to ``cache`` during the 5.x series; None for a model that takes neither."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return next((a for a in ("cache", "past_key_values") if forward_accepts(type(base), a)), None)
