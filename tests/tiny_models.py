"""A tiny model built from a config (fast, no network), for tests and fixtures.

Its own module rather than conftest.py: tests/widgets has a conftest.py too, and both would be
the module ``conftest``.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
CORPUS = [
    "Where is my order? It was due last week.",
    "I want to return the linen duvet cover, it does not fit.",
    "The capital of France is Paris.",
    "My card was charged twice for one order.",
    "How do I reset my password?",
    "Please change the delivery address to 12 Elm Street.",
] * 20


def make_tokenizer(chat_template: str | None = CHATML):
    """A byte-level BPE tokenizer trained in memory on a few sentences, with ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def save_tiny_model(folder: Path, chat_template: str | None = CHATML) -> Path:
    """A 2-layer Llama with random weights and the tokenizer above, saved like a hub model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = make_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- one tiny model per architecture family --------------------------------------------------

def _family_configs(vocab: int, bos: int, eos: int) -> dict:
    """Config class name and keyword arguments per family: hidden size 32, 2 layers, 2 heads, the
    tokenizer's vocabulary and special ids (each config's own defaults point at ids a 400-token
    vocabulary does not have: GPT-2's 50256, Phi-3's 32000 as pad)."""
    ids = dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=None)
    decoder = dict(ids, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=512)
    return {
        "bloom": ("BloomConfig", dict(ids, hidden_size=32, n_layer=2, n_head=2)),
        "gpt2": ("GPT2Config", dict(ids, n_embd=32, n_inner=64, n_layer=2, n_head=2, n_positions=512)),
        "llama": ("LlamaConfig", dict(decoder, num_key_value_heads=1, head_dim=16)),
        "qwen2": ("Qwen2Config", dict(decoder, num_key_value_heads=1)),
        "gemma": ("GemmaConfig", dict(decoder, num_key_value_heads=1, head_dim=16)),
        "phi3": ("Phi3Config", dict(decoder, num_key_value_heads=1, original_max_position_embeddings=512)),
        "mistral": ("MistralConfig", dict(decoder, num_key_value_heads=1, head_dim=16, sliding_window=512)),
    }



def save_tiny_family(folder: Path, family: str, tokenizer=None) -> Path:
    """A 2-layer model of one architecture family (a ``config.model_type``: ``"bloom"``, ``"gpt2"``,
    ...) with random weights and ``tokenizer`` (default: :func:`make_tokenizer`'s), saved like a
    hub model; the config's vocabulary and special ids are the tokenizer's."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tokenizer = tokenizer if tokenizer is not None else make_tokenizer()
    name, kwargs = _family_configs(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)[family]
    config = getattr(transformers, name)(**kwargs)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# google/gemma-7b-it's chat template, verbatim: no system role, the assistant is "model", and each
# turn ends with <end_of_turn>, which is not the tokenizer's end-of-sequence token (<eos>).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)


def make_gemma_tokenizer():
    """:func:`make_tokenizer`'s vocabulary with Gemma's special tokens and chat template."""
    tok = make_tokenizer(GEMMA_TEMPLATE)
    tok.add_special_tokens({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"})
    tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    return tok


class CountingTokenizer:
    """One token per word; remembers the most characters it was handed in one call."""

    model_max_length = None
    chat_template = None

    def __init__(self):
        self.most_chars = 0

    def __call__(self, texts, add_special_tokens=False):
        self.most_chars = max(self.most_chars, sum(len(t) for t in texts))
        return {"input_ids": [t.split() for t in texts]}
