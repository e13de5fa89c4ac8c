"""Shared-prefix attention: the same result as transformers' sdpa, the prefix attended once per batch."""

import types

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ftkit import fastpath
from ftkit.fastpath import prefix_attention
from ftkit.generation.generate import FAST, generate, render_prompts
from ftkit.models.loading import load_model
from ftkit.fastpath.prefix_attention import (
    ATTENTION,
    attend_prefix_once,
    shared_prefix_attention,
)

PREFIX, REST, HEADS, GROUPS, DIM = 7, 6, 4, 2, 8

# generate() takes the shared-prefix attention only on the fast path; the tests that call the
# attention function directly check it against sdpa either way.
FAST_ON = fastpath.enabled(*FAST)
needs_fastpath = pytest.mark.skipif(not FAST_ON, reason=(
    f"asserts that generate() takes the shared-prefix attention, which is off here: {fastpath.disabled_reason(*FAST)}"))


def _layer():
    return types.SimpleNamespace(num_key_value_groups=HEADS // GROUPS, is_causal=True, training=False)


def _inputs(dtype, q, pads=(0, 2, 5), seed=0):
    """Three rows with the same 7-token prefix, then left padding and their own tokens (the layout
    generate() gives a batch), and the boolean mask transformers builds for it: the prefix and the
    row's own earlier tokens, never padding. With ``q`` < the rest, the queries are the last ones
    (decoding); a padding position as a query sees only the prefix."""
    g = torch.Generator().manual_seed(seed)
    batch, kv = len(pads), PREFIX + REST
    key = torch.randn(batch, GROUPS, kv, DIM, generator=g)
    value = torch.randn(batch, GROUPS, kv, DIM, generator=g)
    key[:, :, :PREFIX], value[:, :, :PREFIX] = key[:1, :, :PREFIX], value[:1, :, :PREFIX]  # one prefix
    query = torch.randn(batch, HEADS, q, DIM, generator=g) * 2
    mask = torch.zeros(batch, 1, q, kv, dtype=torch.bool)
    for b, pad in enumerate(pads):
        for i in range(q):
            pos = kv - q + i
            mask[b, 0, i, :PREFIX] = True
            mask[b, 0, i, PREFIX + pad:pos + 1] = True
    return [t.to(dtype) for t in (query, key, value)] + [mask]


def _both(query, key, value, mask, n=PREFIX):
    expected, _ = sdpa_attention_forward(_layer(), query, key, value, mask, scaling=DIM ** -0.5)
    token = prefix_attention._PREFIX.set(n)
    try:
        got, _ = shared_prefix_attention(_layer(), query, key, value, mask, scaling=DIM ** -0.5)
    finally:
        prefix_attention._PREFIX.reset(token)
    return got, expected


@pytest.fixture
def flash_calls(monkeypatch):
    calls = []
    flash = prefix_attention._FLASH_CPU

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return flash(*args, **kwargs)

    monkeypatch.setattr(prefix_attention, "_FLASH_CPU", counted)
    return calls


def _own(mask):
    """(batch, q): the queries with a token of their own, i.e. not padding."""
    return mask[:, 0, :, PREFIX:].any(-1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("q", [REST, 1], ids=["prefill", "decode"])
def test_equals_sdpa_over_the_whole_row(flash_calls, dtype, tol, q):
    query, key, value, mask = _inputs(dtype, q)
    got, expected = _both(query, key, value, mask)
    assert got.shape == expected.shape and got.dtype == dtype
    own = _own(mask)  # outputs are (batch, q, heads, dim)
    torch.testing.assert_close(got[own].float(), expected[own].float(), atol=tol, rtol=tol)
    # A padding query's output, masked out of every real token's attention, is a plain 0.
    assert (got[~own] == 0).all() and (q == 1 or not own.all())
    # The prefix went through once for the batch: one call with the real queries of every row
    # and every head of a group stacked.
    assert flash_calls[0] == (1, GROUPS, HEADS // GROUPS * int(own.sum()), DIM) and len(flash_calls) == 2


def test_an_additive_mask_and_a_query_that_sees_only_the_prefix(flash_calls):
    query, key, value, mask = _inputs(torch.float32, REST, pads=(5, 5, 5))
    assert not mask[0, 0, 0, PREFIX:].any()  # a padding query: nothing of its own to see
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    got, expected = _both(query, key, value, additive)
    own = _own(mask)
    torch.testing.assert_close(got[own], expected[own], atol=1e-5, rtol=1e-5)
    assert flash_calls


@pytest.mark.parametrize("case", ["no prefix set", "a query misses part of the prefix", "soft-capping"])
def test_what_it_cannot_serve_exactly_goes_to_sdpa(flash_calls, case):
    query, key, value, mask = _inputs(torch.float32, REST)
    n, kwargs = PREFIX, {}
    if case == "no prefix set":
        n = 0
    elif case == "a query misses part of the prefix":  # a sliding window shorter than the prompt
        mask[:, :, -1, 0] = False
    expected, _ = sdpa_attention_forward(_layer(), query, key, value, mask, scaling=DIM ** -0.5)
    token = prefix_attention._PREFIX.set(n)
    try:
        if case == "soft-capping":
            kwargs["softcap"] = 30.0
            with pytest.raises(ValueError, match="softcap"):  # sdpa's own answer to it
                shared_prefix_attention(_layer(), query, key, value, mask, scaling=DIM ** -0.5, **kwargs)
        else:
            got, _ = shared_prefix_attention(_layer(), query, key, value, mask, scaling=DIM ** -0.5)
            torch.testing.assert_close(got, expected)
    finally:
        prefix_attention._PREFIX.reset(token)
    assert not flash_calls


SHOTS = [{"role": "system", "content": "You sort customer messages into queues, one word."}]
for text, label in [("Where is my parcel", "order_status"), ("I was charged twice", "billing"),
                    ("Please change the delivery address", "address"), ("Reset my password", "account"),
                    ("The lamp arrived broken", "damaged")]:
    SHOTS += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
QUESTIONS = ["Where is my order? It was due last week.", "card charged twice", "How do I reset my password?",
             "I want to return the linen duvet cover, it does not fit.", "change address", "broken", "hello there"]


@needs_fastpath
def test_generate_attends_the_prefix_once_and_answers_the_same(talkative, flash_calls):
    model, tok = talkative
    convs = [SHOTS + [{"role": "user", "content": q}] for q in QUESTIONS]
    cached = generate(model, tok, convs, max_new_tokens=6, batch_size=4, progress=False)
    assert flash_calls  # the shared-prefix attention served the batches
    plain = generate(model, tok, convs, max_new_tokens=6, batch_size=4, prefix_cache=False, progress=False)
    texts = [o.text for o in cached]
    assert texts == [o.text for o in plain]
    assert len(set(texts)) > 1  # answers that differ by prompt, so equality means something
    assert model.config._attn_implementation == "sdpa"  # switched back afterwards


def test_the_first_tokens_logits_equal_a_full_forward(talkative):
    # Stronger than equal greedy answers: the logits of every row's first new token, computed from
    # the cached prefix with the shared-prefix attention, equal one plain pass over the padded batch.
    from ftkit.fastpath.prefix import cache_argument, shared_prefix
    from ftkit.fastpath.static_cache import batch_cache

    model, tok = talkative
    convs = [SHOTS + [{"role": "user", "content": q}] for q in QUESTIONS[:3]]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in render_prompts(tok, convs)]
    n = shared_prefix(ids)
    width = max(len(i) - n for i in ids)
    rows = [i[:n] + [tok.pad_token_id] * (width - len(i) + n) + i[n:] for i in ids]
    mask = torch.tensor([[1] * n + [0] * (width - len(i) + n) + [1] * (len(i) - n) for i in ids])
    input_ids = torch.tensor(rows)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        prefix = model(input_ids=input_ids[:1, :n], use_cache=True).past_key_values
        cache = batch_cache(model, prefix, len(ids), n + width + 1)
        with attend_prefix_once(model, n):
            assert model.config._attn_implementation == ATTENTION
            cached = model(input_ids=input_ids[:, n:], attention_mask=mask, position_ids=positions[:, n:],
                           **{cache_argument(model) or "past_key_values": cache}).logits[:, -1]
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_the_model_is_left_as_it_was(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    with pytest.raises(RuntimeError, match="stop"), attend_prefix_once(model, 40):
        assert model.config._attn_implementation == ATTENTION
        raise RuntimeError("stop")
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")  # not sdpa: left alone
    with attend_prefix_once(model, 40):
        assert model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")
    with attend_prefix_once(model, 0):  # nothing shared
        assert model.config._attn_implementation == "sdpa"


# Which families take the shared-prefix attention: BLOOM (ALiBi) has no sdpa path and no attention
# interface (it loads as eager, which transformers cannot switch); it generates as before.
SWITCHES = {"bloom": False, "gpt2": True, "llama": True, "qwen2": True, "gemma": True, "phi3": True, "mistral": True}


@pytest.mark.parametrize("family", list(SWITCHES))
def test_each_family_answers_the_same_with_the_prefix_attended_once(family, tmp_path, flash_calls):
    from tiny_models import make_gemma_tokenizer, make_tokenizer, save_tiny_family

    tokenizer = make_gemma_tokenizer() if family == "gemma" else make_tokenizer()
    model, tok = load_model(save_tiny_family(tmp_path, family, tokenizer), device="cpu", dtype="float32",
                            verbose=False)
    torch.manual_seed(0)
    with torch.no_grad():  # weights drawn wide enough that answers differ by prompt
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    implementation = model.config._attn_implementation
    convs = [SHOTS[1:] + [{"role": "user", "content": q}] for q in QUESTIONS]  # Gemma's template: no system turn
    cached = [o.text for o in generate(model, tok, convs, max_new_tokens=5, batch_size=4, progress=False)]
    used = bool(flash_calls)
    plain = [o.text for o in generate(model, tok, convs, max_new_tokens=5, batch_size=4, prefix_cache=False,
                                      progress=False)]
    assert cached == plain and len(set(cached)) > 1
    assert used is (SWITCHES[family] and FAST_ON)  # the plain path never takes it
    assert model.config._attn_implementation == implementation


def test_a_mask_shared_by_the_batch_is_broadcast(flash_calls):
    # A mask with batch dimension 1 (every row padded alike) serves all rows.
    query, key, value, mask = _inputs(torch.float32, REST, pads=(2, 2, 2))
    got, expected = _both(query, key, value, mask[:1])
    own = _own(mask)
    torch.testing.assert_close(got[own], expected[own], atol=1e-5, rtol=1e-5)
    assert flash_calls[0] == (1, GROUPS, HEADS // GROUPS * int(own.sum()), DIM)


@needs_fastpath
def test_the_mask_is_laid_out_once_per_forward_pass(talkative, monkeypatch):
    # Every layer of a pass gets the same mask: its layout is computed by the first and reused.
    model, tok = talkative
    computed, passes = [], []
    lay_out = prefix_attention._lay_out
    monkeypatch.setattr(prefix_attention, "_lay_out", lambda *a: computed.append(1) or lay_out(*a))
    hook = model.register_forward_pre_hook(lambda *a: passes.append(1))
    try:
        convs = [SHOTS + [{"role": "user", "content": q}] for q in QUESTIONS[:4]]
        cached = generate(model, tok, convs, max_new_tokens=4, batch_size=4, progress=False)
    finally:
        hook.remove()
    assert model.config.num_hidden_layers > 1
    assert len(computed) == len(passes) - 1  # every pass but the shared prefix's own, which has no cache yet
    plain = generate(model, tok, convs, max_new_tokens=4, batch_size=4, prefix_cache=False, progress=False)
    assert [o.text for o in cached] == [o.text for o in plain]
