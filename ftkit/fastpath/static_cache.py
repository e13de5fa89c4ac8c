"""A prompt prefix every row shares, run through the model once and handed to each batch's
``generate`` as a preallocated (static) cache.

Few-shot prompts repeat the same long prefix (system prompt + solved examples) in every request.
:func:`prefill` runs the longest token prefix shared by all prompts (found by
:func:`ftkit.fastpath.prefix.shared_prefix`) once; :func:`batch_cache` copies it into a
``StaticCache`` for each batch, whose rows then compute only their own suffix. The padding sits
between the prefix and the suffix; position ids come from the attention mask, so every token gets
the position it would have without the cache, and greedy outputs are the same (tested).

Static, not dynamic: a dynamic cache concatenates every new token onto the whole cache at every
step, which for a long few-shot prefix cost more than the prefix itself (``benchmarks/generation.py``).

It relies on transformers internals, checked by ``tests/fastpath/test_generation_contracts.py``: the
``layers[i].keys``/``.values`` of the cache a forward pass returns, ``StaticCache(config=,
max_cache_len=)`` and its ``update(keys, values, layer_idx)``, and ``generate`` continuing from a
cache that already holds the first positions of ``input_ids``. Off (``FTKIT_FASTPATH=0``, or an
untested transformers), :func:`ftkit.generation.generate.generate` runs every prompt whole.
"""

from __future__ import annotations

from ftkit.fastpath.prefix import forward_accepts

__all__ = ["batch_cache", "last_logits_only", "prefill"]


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_logits_only(model) -> dict:
    """``logits_to_keep=1`` where the model takes it: the shared prefix's pass only needs its
    cache, not the vocabulary's logits at every position."""
    return {"logits_to_keep": 1} if forward_accepts(type(_base(model)), "logits_to_keep") else {}


def prefill(model, prefix: list[int]):
    """The KV cache of ``prefix`` (token ids), computed in one forward pass with batch size 1."""
    import torch

    out = model(input_ids=torch.tensor([prefix], device=model.device), use_cache=True, **last_logits_only(model))
    return out.cache if hasattr(out, "cache") else out.past_key_values


def batch_cache(model, prefix_cache, batch: int, max_len: int):
    """A preallocated (static) cache of ``max_len`` positions holding ``prefix_cache`` (from
    :func:`prefill`) once per row of the batch."""
    from transformers import StaticCache

    cache = StaticCache(config=_base(model).config, max_cache_len=max_len)
    for i, layer in enumerate(prefix_cache.layers):
        cache.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return cache
