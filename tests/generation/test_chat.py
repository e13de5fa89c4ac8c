"""Streaming chat replies and adapter checks (ftkit.generation.chat), on a tiny model built from a config."""

import copy
import threading

import pytest
import torch

from ftkit.generation.chat import adapter_effect, model_lock, next_token_logits, stream_reply, with_adapters
from ftkit.generation.generate import generate
from ftkit.models.loading import load_model, quiet_library_noise
from ftkit.runs import Run, new_run

USER = [{"role": "user", "content": "Where is my order?"}]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "My card was charged twice."}]
N = 12


def lora(model, zero: bool = False, seed: int = 1):
    """A PEFT model over a deep copy of ``model`` with a LoRA adapter: PEFT's own init (B = 0,
    no effect) when ``zero``, else random A and B."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=zero)
    with quiet_library_noise():  # PEFT asks transformers for a deprecated attribute
        return get_peft_model(copy.deepcopy(model), config)


def saved_run(root, model, tok, name: str, zero: bool = False, seed: int = 1) -> Run:
    """A finished run folder holding a real LoRA adapter for ``model`` (no training)."""
    run = new_run(name, {"kind": "sft", "base_model": "tiny"}, root=root)
    lora(model, zero, seed).save_pretrained(run.adapter_dir)
    tok.save_pretrained(run.adapter_dir)
    run.set_status("completed")
    return run


def greedy(model, tok, messages, **kw) -> str:
    return generate(model, tok, [messages], max_new_tokens=N, progress=False, **kw)[0].text


def test_greedy_stream_joins_to_exactly_what_generate_returns_in_several_chunks(talkative):
    model, tok = talkative
    for messages in (USER, CHAT):
        chunks = list(stream_reply(model, tok, messages, max_new_tokens=N))
        assert "".join(chunks) == greedy(model, tok, messages) != ""
        assert len(chunks) > 1 and all(chunks)  # streamed, not handed over at the end
    assert "".join(stream_reply(model, tok, USER, max_new_tokens=N)) != "".join(
        stream_reply(model, tok, CHAT, max_new_tokens=N))


def test_stop_strings_cut_the_stream_where_generate_cuts(talkative):
    model, tok = talkative
    full = greedy(model, tok, USER)
    words = full.split()
    stop = words[len(words) // 2]  # a word from the middle of the answer
    cut = greedy(model, tok, USER, stop_strings=[stop])
    assert "".join(stream_reply(model, tok, USER, max_new_tokens=N, stop_strings=[stop])) == cut
    assert len(cut) < len(full) and stop not in cut


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(talkative):
    model, tok = talkative
    kw = dict(max_new_tokens=N, do_sample=True, temperature=1.5, top_p=1.0)
    a = "".join(stream_reply(model, tok, USER, seed=3, **kw))
    b = "".join(stream_reply(model, tok, USER, seed=3, **kw))
    assert a == b == greedy(model, tok, USER, do_sample=True, temperature=1.5, top_p=1.0, seed=3)


def test_adapters_stream_as_generate_does_and_the_state_is_restored(talkative):
    model, tok = talkative
    peft = lora(model)
    peft.add_adapter("other", peft.peft_config["default"])  # a second adapter, zero-initialized
    peft.set_adapter("other")
    for adapter in (False, "default", "other"):
        streamed = "".join(stream_reply(peft, tok, CHAT, adapter=adapter, max_new_tokens=N))
        assert streamed == greedy(peft, tok, CHAT, adapter=adapter)
    assert peft.active_adapter == "other"
    assert greedy(peft, tok, CHAT, adapter=False) == greedy(model, tok, CHAT)  # adapters off: the base model
    assert greedy(peft, tok, CHAT, adapter="default") != greedy(model, tok, CHAT)


def test_concurrent_streams_on_one_model_never_mix_adapter_states(talkative):
    # Each generation holds the model's lock from switching its adapter to its last token, so two
    # chats on one model, consumed at the same time from two threads, answer as they do alone.
    model, tok = talkative
    peft = lora(model)
    alone = {a: greedy(peft, tok, USER, adapter=a) for a in (False, "default")}
    assert alone[False] != alone["default"]
    got, errors = {}, []

    def chat(adapter):
        try:
            got[adapter] = "".join(stream_reply(peft, tok, USER, adapter=adapter, max_new_tokens=N))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=chat, args=(a,)) for a in (False, "default") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == alone


def test_errors_in_the_generation_thread_are_raised_to_the_consumer(talkative, monkeypatch):
    model, tok = talkative
    with pytest.raises(ValueError, match="no PEFT adapters"):
        list(stream_reply(model, tok, USER, adapter="missing"))
    calls = []
    forward = type(model).forward

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("out of memory (simulated)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", failing)
    chunks = []
    with pytest.raises(RuntimeError, match="simulated"):
        for chunk in stream_reply(model, tok, USER, max_new_tokens=N):
            chunks.append(chunk)
    monkeypatch.undo()
    assert model_lock(model).acquire(blocking=False)  # the failed generation let go of the model
    model_lock(model).release()


def test_closing_the_stream_early_stops_the_generation_and_frees_the_model(talkative):
    model, tok = talkative
    stream = stream_reply(model, tok, USER, max_new_tokens=200)
    first = next(stream)
    stream.close()  # joins the generation thread, which stops at its next token
    assert first and model_lock(model).acquire(blocking=False)
    model_lock(model).release()
    assert "".join(stream_reply(model, tok, USER, max_new_tokens=N)) == greedy(model, tok, USER)


def test_adapter_effect_is_zero_for_an_untrained_lora_and_not_for_a_changed_one(talkative):
    model, tok = talkative
    untrained, changed = lora(model, zero=True), lora(model)
    assert adapter_effect(untrained, tok, "default") == 0.0
    assert adapter_effect(changed, tok, "default") > 1e-3
    assert adapter_effect(changed, tok, False) == 0.0
    assert adapter_effect(changed, tok, "default", probe="Hi") != adapter_effect(changed, tok, "default")
    with pytest.raises(ValueError, match="no PEFT adapters"):
        adapter_effect(model, tok, "default")


def test_with_adapters_shares_the_weights_and_leaves_the_model_unchanged(talkative, tmp_path):
    model, tok = talkative
    runs = [saved_run(tmp_path, model, tok, "one"), saved_run(tmp_path, model, tok, "two", zero=True)]
    flags = [p.requires_grad for p in model.parameters()]
    before = next_token_logits(model, tok)
    chat = with_adapters(model, runs)
    assert set(chat.peft_config) == {r.id for r in runs}
    assert not any("lora_" in n for n, _ in model.named_parameters())  # no LoRA layers put into model
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(next_token_logits(model, tok), before)
    base = chat.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert base is model.model.layers[0].self_attn.q_proj.weight  # one copy of the weights in memory
    assert torch.equal(next_token_logits(chat, tok, adapter=False), before)
    assert adapter_effect(chat, tok, runs[0].id) > 1e-3 and adapter_effect(chat, tok, runs[1].id) == 0.0
    assert with_adapters(model, []) is model

    more = with_adapters(chat, [runs[0], saved_run(tmp_path, model, tok, "three", seed=2)])  # a PEFT model too
    assert len(more.peft_config) == 3 and len(chat.peft_config) == 2


def test_with_adapters_refuses_what_would_hide_the_base_model(talkative, tmp_path):
    model, tok = talkative
    carrier = lora(model).get_base_model()  # LoRA layers without PEFT's switch to turn them off
    with pytest.raises(ValueError, match="cannot be turned off"):
        with_adapters(carrier, [])
    merged = lora(model)
    merged.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        with_adapters(merged, [])
    empty = new_run("empty", {"kind": "sft"}, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved adapter"):
        with_adapters(model, [empty])
    big, _ = load_model(talkative_dir_with_width(tmp_path), device="cpu", dtype="float32", verbose=False)
    with pytest.raises(ValueError, match="does not fit this model"):
        with_adapters(big, [saved_run(tmp_path, model, tok, "small")])


def talkative_dir_with_width(folder):
    """A saved tiny Llama twice as wide as the test model: an adapter trained on one does not fit the other."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from tiny_models import make_tokenizer

    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    out = folder / "wide-model"
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
