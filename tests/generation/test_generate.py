import threading

import pytest
import torch

from ftkit import fastpath
from ftkit.fastpath.prefix import shared_prefix
from ftkit.generation.generate import FAST, adapter_state, generate, render_prompts
from ftkit.models.loading import load_model

# Tests that assert what a fast path itself does (not only that answers stay the same).
needs_fastpath = pytest.mark.skipif(not fastpath.enabled(*FAST), reason=(
    f"asserts the generation fast path itself, which is off here: {fastpath.disabled_reason(*FAST)}"))

CONVS = [
    [{"role": "user", "content": "Where is my order?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My card was charged twice for one order."}],
]
SHOTS = [{"role": "system", "content": "You sort customer messages into queues."}]
for text, label in [("Where is my parcel", "order_status"), ("I was charged twice", "billing"),
                    ("Please change the delivery address", "address"), ("Reset my password", "account")]:
    SHOTS += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
FEW_SHOT = [SHOTS + [{"role": "user", "content": q}] for q in
            ["Where is my order? It was due last week.", "card charged twice", "How do I reset my password?",
             "I want to return the linen duvet cover, it does not fit.", "change address"]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_outputs_keep_input_order_and_count_tokens(tiny):
    model, tok = tiny
    outs = generate(model, tok, CONVS, max_new_tokens=5, batch_size=2, progress=False)
    assert len(outs) == 3
    for text, out in zip(render_prompts(tok, CONVS), outs):
        assert out.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
        assert 1 <= out.new_tokens <= 5 and out.latency_s > 0 and isinstance(out.text, str)
    assert outs[0].prompt_tokens != outs[1].prompt_tokens


def test_batched_greedy_equals_one_at_a_time(tiny):
    # Left padding with an attention mask must not change what greedy decoding produces.
    model, tok = tiny
    batched = generate(model, tok, CONVS, max_new_tokens=6, batch_size=3, progress=False)
    single = generate(model, tok, CONVS, max_new_tokens=6, batch_size=1, progress=False)
    assert [o.text for o in batched] == [o.text for o in single]
    assert tok.padding_side == "left"


def test_shared_prefix_cache_gives_the_same_greedy_outputs(tiny):
    model, tok = tiny
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in render_prompts(tok, FEW_SHOT)]
    assert shared_prefix(ids) >= 32  # the cache is really used here
    cached = generate(model, tok, FEW_SHOT, max_new_tokens=8, batch_size=2, progress=False)
    plain = generate(model, tok, FEW_SHOT, max_new_tokens=8, batch_size=2, prefix_cache=False, progress=False)
    assert [o.text for o in cached] == [o.text for o in plain]
    assert [o.prompt_tokens for o in cached] == [len(i) for i in ids]


def test_shared_prefix_leaves_each_sequence_a_token():
    assert shared_prefix([[1, 2, 3], [1, 2, 4]]) == 2
    assert shared_prefix([[1, 2], [1, 2, 3]]) == 1  # one is a prefix of the other
    assert shared_prefix([[5, 6]]) == 0 and shared_prefix([[1], [2]]) == 0


def test_sampling_is_repeatable_with_a_seed(tiny):
    model, tok = tiny
    runs = [[o.text for o in generate(model, tok, CONVS, max_new_tokens=8, do_sample=True, temperature=1.5,
                                      seed=3, progress=False)] for _ in range(2)]
    assert runs[0] == runs[1]


def test_sampling_leaves_torchs_global_random_state_alone(tiny):
    # A seed gives the sampling a generator of its own: another thread's draws from torch's
    # global state neither change the answers nor are changed by them.
    model, tok = tiny
    before = torch.random.get_rng_state()
    a = [o.text for o in generate(model, tok, CONVS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3,
                                  progress=False)]
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(100)  # the global state moves on; the seeded answers do not
    b = [o.text for o in generate(model, tok, CONVS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3,
                                  progress=False)]
    c = [o.text for o in generate(model, tok, CONVS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=4,
                                  progress=False)]
    assert a == b and a != c


def test_adapters_switch_off_and_on_without_reloading(tiny_model_dir, tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    base = [o.text for o in generate(model, tok, CONVS, max_new_tokens=6, progress=False)]
    base_weight = model.model.layers[0].self_attn.q_proj.weight
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():  # a strong adapter, so that it visibly changes the outputs
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    tuned = [o.text for o in generate(peft, tok, CONVS, max_new_tokens=6, progress=False)]
    off = [o.text for o in generate(peft, tok, CONVS, max_new_tokens=6, adapter=False, progress=False)]
    on = [o.text for o in generate(peft, tok, CONVS, max_new_tokens=6, adapter="default", progress=False)]
    assert off == base and tuned == on and tuned != base
    # The shared-prefix cache works through the PEFT wrapper too, adapter on and off.
    for adapter in (None, False):
        cached = generate(peft, tok, FEW_SHOT, max_new_tokens=6, adapter=adapter, progress=False)
        plain = generate(peft, tok, FEW_SHOT, max_new_tokens=6, adapter=adapter, prefix_cache=False,
                         progress=False)
        assert [o.text for o in cached] == [o.text for o in plain]
    assert peft.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight is base_weight
    with pytest.raises(ValueError, match="no adapter 'other'; the model has: default"):
        with adapter_state(peft, "other"):
            pass
    with pytest.raises(ValueError, match="the model has no PEFT adapters"):
        with adapter_state(tiny[0], "default"):
            pass


# --- frozen weights (a PEFT model, a merged run) take the trainable model's path --------------------

def _op_counts(model, tok, convs, **kw):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        outs = generate(model, tok, convs, progress=False, **kw)
    return {e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")}, [o.text for o in outs]


@needs_fastpath
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_frozen_weights_take_the_trainable_models_path(tiny_model_dir, dtype, batch_size):
    # PEFT freezes the base weights. For a frozen head torch's matmul used to broadcast the
    # weight into a batched product (in bf16 copying it whole at every prefill); generate() hands
    # the head a packed input, so the same operations run and the answers are the same.
    model, tok = load_model(tiny_model_dir, device="cpu", dtype=dtype, verbose=False)
    head = model.get_output_embeddings()
    generate(model, tok, CONVS[:1], max_new_tokens=2, progress=False)  # the first call sets things up
    for kw in ({}, {"prefix_cache": False}):
        convs = FEW_SHOT if kw else CONVS
        trainable_ops, trainable = _op_counts(model.requires_grad_(True), tok, convs, max_new_tokens=4,
                                              batch_size=batch_size, **kw)
        frozen_ops, frozen = _op_counts(model.requires_grad_(False), tok, convs, max_new_tokens=4,
                                        batch_size=batch_size, **kw)
        assert "aten::bmm" not in frozen_ops
        assert frozen_ops == trainable_ops and frozen == trainable
    assert not head._forward_pre_hooks  # the model is left as it was given


def test_head_input_is_packed_even_for_a_single_prompt():
    from ftkit.fastpath.lm_head import _packed

    one = torch.zeros(1, 57, 8)[:, -1:, :]  # is_contiguous() says yes; matmul reads the strides
    assert one.is_contiguous() and not _packed(one)
    assert not _packed(torch.zeros(3, 57, 8)[:, -1:, :]) and _packed(torch.zeros(3, 1, 8))


@needs_fastpath
def test_fewer_tokens_from_frozen_weights_are_not_reported_slower():
    # The issue: a tuned variant (frozen weights) generating 4 tokens reported twice the base
    # model's latency per request for 12. A head as wide as a real vocabulary (32k x 128, bf16)
    # makes the old copy 16 x 4M values per prefill; the fastest of several interleaved repeats
    # and a bound of 1x for a quarter of the tokens leave room for a busy machine.
    from tiny_models import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftkit.models.loading import prepare_tokenizer

    torch.manual_seed(0)
    tok = prepare_tokenizer(make_tokenizer())
    config = LlamaConfig(vocab_size=32768, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
    base = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    tuned = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    tuned.load_state_dict(base.state_dict())
    tuned.requires_grad_(False)
    convs = [[{"role": "user", "content": f"Where is my order {i}?"}] for i in range(16)]
    runs = {"base": (base, 8), "tuned": (tuned, 2)}
    best = dict.fromkeys(runs, float("inf"))
    for rep in range(6):
        for name, (model, n) in runs.items():
            outs = generate(model, tok, convs, max_new_tokens=n, progress=False)
            if rep:  # the first round warms up
                best[name] = min(best[name], sum(o.latency_s for o in outs) / len(outs))
            assert {o.new_tokens for o in outs} <= set(range(n + 1))
    assert best["tuned"] <= best["base"], best


# --- threads: one model, several generations at once -------------------------------------------

def test_two_threads_with_different_adapters_answer_as_they_do_one_after_the_other(tiny_model_dir):
    # generate() holds the model's lock while it switches the adapter (and the attention) and
    # generates, so two threads on one PEFT model never see each other's adapter state.
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    asked = {False: CONVS + FEW_SHOT, "default": FEW_SHOT + CONVS}
    alone = {a: [o.text for o in generate(peft, tok, convs, max_new_tokens=6, batch_size=2, adapter=a,
                                          progress=False)] for a, convs in asked.items()}
    assert alone[False] != alone["default"][len(FEW_SHOT):] + alone["default"][:len(FEW_SHOT)]
    got, errors = {}, []

    def work(adapter, key):
        try:
            got[key] = [o.text for o in generate(peft, tok, asked[adapter], max_new_tokens=6, batch_size=2,
                                                 adapter=adapter, progress=False)]
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(a, (a, i))) for i in range(2) for a in asked]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(got[(a, i)] == alone[a] for a in asked for i in range(2))
    assert peft.active_adapter == "default"
