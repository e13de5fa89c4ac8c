"""The generation fast paths (ftkit.fastpath.prefix_attention, static_cache, lm_head): one contract
test per library internal they rely on, and their equivalence with the plain transformers path.

A contract test fails, by name, when an upgrade of torch or transformers moves or changes what
the fast path uses; its message says what to do. The equivalence tests switch FTKIT_FASTPATH
themselves, so they compare the two paths whatever the environment says.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from ftkit import fastpath
from ftkit.generation.generate import generate

FEW_SHOT = [{"role": "system", "content": "You sort customer messages into queues, one word."}]
for text, label in [("Where is my parcel", "order_status"), ("I was charged twice", "billing"),
                    ("Please change the delivery address", "address"), ("Reset my password", "account")]:
    FEW_SHOT += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
QUESTIONS = ["Where is my order? It was due last week.", "card charged twice", "How do I reset my password?",
             "I want to return the linen duvet cover, it does not fit.", "change address"]
CONVS = [FEW_SHOT + [{"role": "user", "content": q}] for q in QUESTIONS]


def broken(symbol: str, library: str, user: str, problem: str):
    pytest.fail(f"{symbol}: {problem}. {user} relies on it. Fix: set FTKIT_FASTPATH=0 to take the plain "
                f"{library} path, or install {library}{fastpath.TESTED[library]} (the release lines in "
                "ftkit.fastpath.TESTED); widen TESTED only once these tests pass on the new release", pytrace=False)


def parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# --- contracts: ftkit.fastpath.prefix_attention ---------------------------------------------------

def test_contract_aten_flash_attention_for_cpu_returns_output_and_logsumexp():
    symbol, user = "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu", "ftkit.fastpath.prefix_attention"
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        broken(symbol, "torch", user, "not found in this torch")
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = torch.zeros(2, 1, 4, 5)
    try:  # the call prefix_attention makes: positional dropout and causality, keyword mask and scale
        result = op(q, k, v, 0.0, False, attn_mask=mask, scale=8 ** -0.5)
    except (RuntimeError, TypeError) as err:
        broken(symbol, "torch", user, f"no longer takes (query, key, value, dropout_p, is_causal, *, attn_mask, "
                                      f"scale): {err}")
    if not (isinstance(result, tuple) and len(result) == 2 and result[1].shape == (2, 3, 4)):
        broken(symbol, "torch", user, "no longer returns (output, logsumexp of shape batch x heads x queries)")
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(result[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result[1], torch.logsumexp(q @ k.transpose(-1, -2) * 8 ** -0.5, -1),
                               atol=1e-5, rtol=1e-5)


def test_contract_can_set_attn_implementation(tiny_model_dir):
    symbol, user = "transformers.PreTrainedModel._can_set_attn_implementation", "ftkit.fastpath.prefix_attention"
    from transformers import PreTrainedModel

    from ftkit.models.loading import load_model

    if not callable(getattr(PreTrainedModel, "_can_set_attn_implementation", None)):
        broken(symbol, "transformers", user, "not found in this transformers")
    model, _ = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    if model._can_set_attn_implementation() is not True:
        broken(symbol, "transformers", user, "takes arguments now, or says a Llama model cannot switch")
    if parameters(PreTrainedModel.set_attn_implementation)[:2] != ["self", "attn_implementation"]:
        broken("transformers.PreTrainedModel.set_attn_implementation", "transformers", user,
               "no longer takes (attn_implementation)")


def test_contract_sdpa_attention_forward():
    symbol, user = "transformers.integrations.sdpa_attention.sdpa_attention_forward", "ftkit.fastpath.prefix_attention"
    try:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
    except ImportError as err:
        broken(symbol, "transformers", user, f"cannot be imported: {err}")
    names = parameters(sdpa_attention_forward)
    expected = ["module", "query", "key", "value", "attention_mask", "dropout", "scaling", "is_causal"]
    if names[:len(expected)] != expected:
        broken(symbol, "transformers", user, f"its parameters are {names}, not {expected}")


def test_contract_attention_and_mask_interfaces():
    symbol, user = "transformers.masking_utils.AttentionMaskInterface / sdpa_mask", "ftkit.fastpath.prefix_attention"
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as err:
        broken(symbol, "transformers", user, f"cannot be imported: {err}")
    for registry in (AttentionInterface, AttentionMaskInterface):
        if parameters(registry.register)[-2:] != ["key", "value"]:
            broken(f"{registry.__name__}.register", "transformers", user, "no longer takes (key, value)")
    if not callable(sdpa_mask):
        broken(symbol, "transformers", user, "sdpa_mask is not a function")


# --- contracts: ftkit.fastpath.static_cache ------------------------------------------------------

def test_contract_static_cache_constructor_and_update():
    symbol, user = "transformers.StaticCache", "ftkit.fastpath.static_cache"
    from transformers import StaticCache

    init = parameters(StaticCache.__init__)
    if "config" not in init or "max_cache_len" not in init:
        broken(symbol, "transformers", user, f"StaticCache(config=, max_cache_len=) is gone; it takes {init}")
    update = parameters(StaticCache.update)
    if update[:4] != ["self", "key_states", "value_states", "layer_idx"]:
        broken(f"{symbol}.update", "transformers", user, f"no longer takes (keys, values, layer_idx): {update}")


def test_contract_a_forward_passs_cache_has_layers_with_keys_and_values(tiny_model_dir):
    symbol, user = "transformers cache .layers[i].keys / .values", "ftkit.fastpath.static_cache"
    from ftkit.fastpath.static_cache import batch_cache, prefill
    from ftkit.models.loading import load_model

    model, _ = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    with torch.no_grad():
        cache = prefill(model, [1, 2, 3, 4, 5])
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        broken(symbol, "transformers", user, f"the cache a forward pass returns ({type(cache).__name__}) has no "
                                             "layers with keys and values")
    if layers[0].keys.shape[-2] != 5:
        broken(symbol, "transformers", user, "a layer's keys are no longer (batch, heads, positions, dim)")
    copied = batch_cache(model, cache, 3, 9)
    torch.testing.assert_close(copied.layers[0].keys[:, :, :5], layers[0].keys.expand(3, -1, -1, -1))


# --- equivalence: the fast paths against the plain transformers path -------------------------------

def _answers(monkeypatch, switch: str, model, tok, convs, **kw) -> list[str]:
    monkeypatch.setenv(fastpath.ENV, switch)
    return [o.text for o in generate(model, tok, convs, progress=False, **kw)]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_fast_and_plain_paths_give_the_same_greedy_answers(talkative, monkeypatch, batch_size):
    model, tok = talkative
    fast = _answers(monkeypatch, "1", model, tok, CONVS, max_new_tokens=6, batch_size=batch_size)
    plain = _answers(monkeypatch, "0", model, tok, CONVS, max_new_tokens=6, batch_size=batch_size)
    assert fast == plain and len(set(fast)) > 1  # answers that differ by prompt, so equality means something


def test_fast_and_plain_paths_agree_for_frozen_weights_in_bfloat16(tiny_model_dir, monkeypatch):
    # Frozen weights are what the contiguous head exists for; bfloat16 is where torch copied them.
    from ftkit.models.loading import load_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="bfloat16", verbose=False)
    model.requires_grad_(False)
    convs = CONVS + [[{"role": "user", "content": q}] for q in QUESTIONS]
    fast = _answers(monkeypatch, "1", model, tok, convs, max_new_tokens=4, batch_size=3)
    plain = _answers(monkeypatch, "0", model, tok, convs, max_new_tokens=4, batch_size=3)
    assert fast == plain


def test_the_contiguous_head_gives_the_same_logits(talkative):
    from ftkit.fastpath.lm_head import contiguous_lm_head

    model, tok = talkative
    enc = tok(["Where is my order?", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = model(**enc, logits_to_keep=1).logits
        with contiguous_lm_head(model):
            fast = model(**enc, logits_to_keep=1).logits
    torch.testing.assert_close(fast, plain)
    assert not model.get_output_embeddings()._forward_pre_hooks  # removed afterwards


def test_the_plain_path_takes_no_fast_path(talkative, monkeypatch):
    # FTKIT_FASTPATH=0: no static cache, no shared-prefix attention, no hook on the head.
    import ftkit.fastpath.prefix_attention as prefix_attention
    import ftkit.fastpath.static_cache as static_cache

    model, tok = talkative
    used = []
    monkeypatch.setattr(static_cache, "prefill", lambda *a, **k: used.append("prefill"))
    monkeypatch.setattr(prefix_attention, "attend_prefix_once", lambda *a, **k: used.append("attention"))
    hooks = []
    head = model.get_output_embeddings()
    register = head.register_forward_pre_hook
    monkeypatch.setattr(head, "register_forward_pre_hook", lambda *a, **k: hooks.append(1) or register(*a, **k))
    _answers(monkeypatch, "0", model, tok, CONVS, max_new_tokens=3)
    assert not used and not hooks
