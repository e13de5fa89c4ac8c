"""Attention over a prompt prefix that every row of a batch shares, computed once for the batch.

A few-shot prompt puts the same long prefix (system prompt + solved examples) in front of every
request. :func:`ftkit.generation.generate.generate` already runs that prefix through the model once and starts
each batch from a cache holding it; but every row's queries still attended to their own copy of
the prefix's keys and values, with a padding mask and, for grouped-query attention, the keys and
values repeated per query head: for a long few-shot prompt that attention is most of a batch's
time on a CPU (``benchmarks/generation.py``).

Here attention is split in two and put back together exactly (the "cascade" or Hydragen
decomposition of softmax attention):

* the shared prefix: the queries of all rows and all heads of a key/value group are stacked into
  one long query block, attended against the prefix's keys and values once (batch 1, no mask:
  every prompt token sees the whole prefix);
* the rest (padding, each row's own suffix, the generated tokens): each row against its own keys,
  with the model's mask;

and the two partial results are merged with their log-sum-exps: ``out = (o1 e^(l1-m) + o2
e^(l2-m)) / (e^(l1-m) + e^(l2-m))``, ``m = max(l1, l2)``. Equal to attention over the whole row up
to floating-point rounding (tested against ``sdpa`` in float32).

It is registered with transformers' ``AttentionInterface`` (with ``sdpa``'s mask) and switched
on only for the duration of :func:`attend_prefix_once`, on a CPU model that uses ``sdpa``. Any
call it cannot serve exactly goes to transformers' own ``sdpa`` unchanged: no shared prefix, no
mask, a layer whose mask hides part of the prefix (a sliding window shorter than the prompt),
soft-capping or attention sinks, dropout, another device.

Written here rather than taken from a library: FlashInfer's cascade attention and vLLM's prefix
caching do this on GPUs only; transformers has no shared-prefix attention.

It relies on private names, each checked by ``tests/fastpath/test_generation_contracts.py``: torch's
``aten._scaled_dot_product_flash_attention_for_cpu`` (the output and the log-sum-exp of each
query), transformers' ``PreTrainedModel._can_set_attn_implementation``,
``transformers.integrations.sdpa_attention.sdpa_attention_forward`` and
``masking_utils.sdpa_mask``. :func:`ftkit.generation.generate.generate` takes this path only when
``ftkit.fastpath.enabled("torch", "transformers")``; otherwise transformers' own ``sdpa`` runs.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from accelerate.utils import is_peft_model

__all__ = ["ATTENTION", "attend_prefix_once", "shared_prefix_attention"]

ATTENTION = "ftkit_shared_prefix"
_PREFIX: contextvars.ContextVar[int] = contextvars.ContextVar("ftkit_shared_prefix", default=0)
# The mask laid out in this forward pass (_mask_layout), with what it was laid out for: every layer
# of a pass gets the same mask tensor, so its layout is computed once per pass, not once per layer.
# Cleared when the model's next forward pass starts (attend_prefix_once hooks it).
_LAYOUT: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("ftkit_shared_prefix_layout", default=None)
# Returns the attention output and the log-sum-exp of each query's scores (float32).
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                            is_causal=None, **kwargs):
    """An ``AttentionInterface`` function: ``sdpa``'s result, with the first ``n`` key positions
    (the shared prefix, ``n`` set by :func:`attend_prefix_once`) attended once for the batch.

    ``query`` is (batch, heads, q, dim); ``key``/``value`` (batch, kv_heads, kv, dim), the prefix
    the same in every row; ``attention_mask`` boolean or additive, (batch, 1, q, kv).
    """
    n = _PREFIX.get()
    if (not n or _FLASH_CPU is None or attention_mask is None or query.device.type != "cpu" or dropout
            or key.shape[2] <= n or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None
            or query.shape[1] % key.shape[1]):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, **kwargs)
    batch, heads, q, dim = query.shape
    groups = key.shape[1]
    per_group = heads // groups * q  # query rows per key/value head: its query heads, each q long
    layout = _mask_layout(attention_mask, n, batch, heads // groups, groups, q, query.dtype)
    if layout is None:  # some query does not see the whole prefix
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, **kwargs)
    rest, seen, kept = layout
    # Query head h reads key/value head h // (heads // groups), as transformers' repeat_kv lays them out.
    grouped = query.reshape(batch, groups, per_group, dim)

    # 1. The prefix, once: every row's queries stacked, batch 1, nothing masked; padding queries
    # skipped (`kept`, see _mask_layout).
    stacked = grouped.transpose(0, 1).reshape(1, groups, batch * per_group, dim)
    if kept is None:
        out_prefix, lse_prefix = _FLASH_CPU(stacked, key[:1, :, :n], value[:1, :, :n], 0.0, False, scale=scaling)
    else:
        out_kept, lse_kept = _FLASH_CPU(stacked[:, :, kept], key[:1, :, :n], value[:1, :, :n], 0.0, False,
                                        scale=scaling)
        out_prefix = stacked.new_zeros(stacked.shape).index_copy_(2, kept, out_kept)
        lse_prefix = lse_kept.new_zeros(stacked.shape[:3]).index_copy_(2, kept, lse_kept)
    out_prefix = out_prefix.reshape(groups, batch, per_group, dim).transpose(0, 1)
    lse_prefix = lse_prefix.reshape(groups, batch, per_group).transpose(0, 1)

    # 2. The rest of each row, query heads packed per key/value head.
    out_rest, lse_rest = _FLASH_CPU(grouped, key[:, :, n:], value[:, :, n:], 0.0, False,
                                    attn_mask=rest, scale=scaling)
    # A query that sees nothing beyond the prefix comes back as 0 with a log-sum-exp of 0: weigh it 0.
    lse_rest = lse_rest.masked_fill(~seen.expand_as(lse_rest), float("-inf"))

    # 3. Merge the two softmaxes.
    top = torch.maximum(lse_prefix, lse_rest)
    w_prefix = (lse_prefix - top).exp_().unsqueeze(-1)
    w_rest = (lse_rest - top).exp_().unsqueeze(-1)
    out = (out_prefix.float() * w_prefix + out_rest.float() * w_rest) / (w_prefix + w_rest)
    out = out.to(query.dtype).reshape(batch, heads, q, dim)
    return out.transpose(1, 2).contiguous(), None


def _mask_layout(mask, n: int, batch: int, per_head: int, groups: int, q: int, dtype):
    """The model's mask as the shared-prefix attention reads it (:func:`_lay_out`), computed once
    per forward pass: the layers after the first get the same mask tensor and reuse it."""
    key = (n, batch, per_head, groups, q, dtype)
    last = _LAYOUT.get()
    if last is not None and last[0] is mask and last[1] == key:
        return last[2]
    layout = _lay_out(mask, n, batch, per_head, groups, q, dtype)
    _LAYOUT.set((mask, key, layout))
    return layout


def _lay_out(mask, n: int, batch: int, per_head: int, groups: int, q: int, dtype):
    """``(rest, seen, kept)``, or None when some query does not see the whole prefix (then sdpa
    serves the call): ``rest`` the additive mask over each row's own keys, laid out like the
    grouped queries (batch, 1|groups, per_head * q, keys); ``seen`` which of those queries see any
    of them; ``kept`` the stacked queries the prefix is attended for (None: all)."""
    boolean = mask.dtype == torch.bool
    head = mask[..., :n]
    if not (head.all() if boolean else (head == 0).all()):
        return None
    rest = mask[..., n:]
    seen = rest.any(-1) if boolean else (rest > torch.finfo(rest.dtype).min).any(-1)  # (1|batch, 1|heads, q)
    seen = seen.expand(batch, seen.shape[1], q)
    if boolean:
        rest = torch.zeros(rest.shape, dtype=dtype, device=rest.device).masked_fill_(~rest, float("-inf"))
    rest = rest.expand(batch, rest.shape[1], q, rest.shape[-1])
    if rest.shape[1] == 1:
        rest = rest.repeat(1, 1, per_head, 1)
        seen = seen.repeat(1, 1, per_head)
    else:  # a per-head mask: its heads into the grouped layout
        rest = rest.reshape(batch, groups, per_head * q, rest.shape[-1])
        seen = seen.reshape(batch, groups, per_head * q)
    # A query that sees nothing of its own is padding (left of its row's first token): its output
    # is masked out of every real token's attention, so the prefix is not attended for it (a
    # sizeable share of a left-padded batch's queries) and it comes out 0.
    keep = seen.any(1).reshape(-1)
    return rest.to(dtype), seen, None if bool(keep.all()) else keep.nonzero().squeeze(1)


_registered = False


def _register():
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION, shared_prefix_attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same masks as sdpa
        _registered = True


def _switchable(model) -> bool:
    return (_FLASH_CPU is not None and model.device.type == "cpu"
            and getattr(model.config, "_attn_implementation", None) == "sdpa"
            and getattr(model, "_can_set_attn_implementation", lambda: False)())


@contextlib.contextmanager
def attend_prefix_once(model, n: int):
    """Within the ``with``, the model attends to its first ``n`` cached positions once per batch
    (:func:`shared_prefix_attention`); afterwards it is as it was. A model this does not apply
    to (not on a CPU, not using ``sdpa``, no attention interface) runs unchanged.

    >>> with attend_prefix_once(model, n_prefix):      # doctest: +SKIP
    ...     out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache)
    """
    base = model.get_base_model() if is_peft_model(model) else model
    if n <= 0 or not _switchable(base):
        yield model
        return
    _register()
    token = _PREFIX.set(n)
    new_pass = base.register_forward_pre_hook(_forget_layout)
    try:
        base.set_attn_implementation(ATTENTION)
        yield model
    finally:
        base.set_attn_implementation("sdpa")
        new_pass.remove()
        _PREFIX.reset(token)
        _LAYOUT.set(None)  # let the last pass's mask go


def _forget_layout(module, args):
    _LAYOUT.set(None)
