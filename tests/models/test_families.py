"""Each architecture family end to end, on a tiny model built from its config: load, prompt, LoRA
SFT with the default targets, evaluate, merged export reloaded by plain transformers.

What a family needs beyond the general handling is in ``ftkit.models.families.FAMILIES``; these tests are
the reason for each entry there (and for the entries that say nothing is needed).
"""

import json
import warnings

import pytest
import torch
from tiny_models import make_gemma_tokenizer, make_tokenizer, save_tiny_family

from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.export.merged import export_run
from ftkit.models.families import FAMILIES, family_notes, lora_targets
from ftkit.models.loading import load_model
from ftkit.prompts import zero_shot
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]]

LLAMA_LIKE = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
CHATML = ("<|im_start|>user\nWhere is my order?<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>")
# GPT-2 and BLOOM have no chat template on the Hub: they are saved without one here too.
PLAIN = ("user: Where is my order?\nassistant:", "<|im_end|>")
GEMMA = ("<bos><start_of_turn>user\nWhere is my order?<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>")

# family: the layers LoRA's default targets adapt, the tokenizer the model is saved with, and
# (the first prompt as the model reads it, the token that ends an answer).
CASES = {
    "bloom": (["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"], lambda: make_tokenizer(None), PLAIN),
    "gpt2": (["c_attn", "c_fc", "c_proj"], lambda: make_tokenizer(None), PLAIN),  # Conv1D layers
    "llama": (LLAMA_LIKE, make_tokenizer, CHATML),
    "qwen2": (LLAMA_LIKE, make_tokenizer, CHATML),
    "gemma": (LLAMA_LIKE, make_gemma_tokenizer, GEMMA),
    "phi3": (["down_proj", "gate_up_proj", "o_proj", "qkv_proj"], make_tokenizer, CHATML),
    "mistral": (LLAMA_LIKE, make_tokenizer, CHATML),
}


def _stops(config) -> list:
    ids = config.eos_token_id
    return ids if isinstance(ids, list) else [ids]


def _load(folder, family):
    """Load as a user would; a family saved without a chat template gets the plain one, with a warning."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model, tok = load_model(folder, device="cpu", dtype="float32", verbose=False)
    fallback = [w for w in seen if "no chat template" in str(w.message)]
    assert len(fallback) == (1 if CASES[family][2] is PLAIN else 0), [str(w.message) for w in seen]
    return model, tok


@pytest.mark.parametrize("family", list(CASES))
def test_a_family_loads_prompts_trains_evaluates_and_exports(family, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layers, tokenizer, (first_prompt, end) = CASES[family]
    model, tok = _load(save_tiny_family(tmp_path / "model", family, tokenizer()), family)
    assert model.config.model_type == family and family_notes(model) is FAMILIES[family]

    # The prompt, through the chat template (or the plain fallback); each answer ends with `end`.
    template = zero_shot()
    assert template.render(ROWS[0], tok) == first_prompt
    assert tok.eos_token == end and tok.eos_token_id in _stops(model.generation_config)

    # LoRA SFT with the default targets: the layers PEFT adapts are the ones lora_targets announced.
    assert lora_targets(model) == layers
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = train_sft(model, tok, ROWS, template=template, runs_root=tmp_path / "runs", config=SFTSettings(
            max_steps=3, batch_size=4, logging_steps=1, save_steps=100, learning_rate=5e-2))
    conv1d = [w for w in seen if "fan_in_fan_out is set to False but the target module is `Conv1D`" in str(w.message)]
    assert bool(conv1d) is (family == "gpt2")  # PEFT sets fan_in_fan_out for GPT-2's Conv1D itself, and says so
    assert run.status["status"] == "completed" and run.status["step"] == 3
    losses = [e["loss"] for e in run.events("log")]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert lora_targets(run.model) == layers
    adapted = {n.rsplit(".lora_B", 1)[0] for n, _ in run.model.named_parameters() if ".lora_B" in n}
    assert len(adapted) == len(layers) * 2 + (family == "gpt2") * 2  # 2 blocks; GPT-2 has c_proj twice a block
    lora_b = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: every adapter trained
    assert f"status{end}\n]]" in run.events("preflight")[0]["text"]  # the end of each answer is learned
    saved = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is (family == "gpt2")  # PEFT sets it itself for GPT-2's Conv1D

    # Evaluate the tuned model against its base (the same weights, adapter off).
    result = evaluate([Variant(run.model, tok, template, name="tuned", max_new_tokens=4),
                       Variant(run.model, tok, template, name="base", adapter=False, max_new_tokens=4)],
                      ROWS, metrics=["exact_match"], n_boot=50, progress=False, interactive_rows=0)
    assert list(result.summary.index) == ["tuned", "base"] and len(result.table) == len(ROWS)
    assert result.table["tuned: exact_match"].isin([0.0, 1.0]).all()

    # Export merged; plain transformers loads it and answers with the adapter's greedy tokens.
    # The export loads the base model again, whose own tokenizer has no template (GPT-2, BLOOM):
    # the run's saved tokenizer carries the one it trained with, so no warning repeats.
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        folder = export_run(run, tmp_path / "merged", merged=True, rows=ROWS)
    assert not [w for w in again if "no chat template" in str(w.message)]
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    plain_tok = AutoTokenizer.from_pretrained(folder)
    assert type(plain).__name__ == type(model).__name__ and not any("lora" in n for n, _ in plain.named_parameters())
    assert template.render(ROWS[0], plain_tok) == first_prompt and plain_tok.eos_token == end
    assert plain_tok.eos_token_id in _stops(plain.generation_config)  # it stops where ftkit's generate did
    texts = [template.render(r, tok) for r in ROWS]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    greedy = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        tuned, merged = run.model.generate(**enc, **greedy), plain.generate(**enc, **greedy)
    assert torch.equal(tuned, merged)


def test_every_family_in_the_table_is_tested_and_says_why():
    assert set(FAMILIES) == set(CASES)
    assert all(f.note for f in FAMILIES.values())
    assert family_notes("gemma").end_of_turn == "<end_of_turn>" and family_notes("no-such-family") is None
