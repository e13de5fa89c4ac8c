import pytest

from ftkit.generate import generate, render_prompts
from ftkit.models import load_model

CONVS = [
    [{"role": "user", "content": "Where is my order?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My card was charged twice for one order."}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", verbose=False)


def test_outputs_keep_input_order_and_count_tokens(tiny):
    model, tok = tiny
    outs = generate(model, tok, CONVS, max_new_tokens=5, batch_size=2, progress=False)
    assert len(outs) == 3
    for conv, text, out in zip(CONVS, render_prompts(tok, CONVS), outs):
        assert out.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
        assert 1 <= out.new_tokens <= 5 and out.latency_s > 0 and isinstance(out.text, str)
    assert outs[0].prompt_tokens != outs[1].prompt_tokens


def test_batched_greedy_equals_one_at_a_time(tiny):
    # Left padding with an attention mask must not change what greedy decoding produces.
    model, tok = tiny
    batched = generate(model, tok, CONVS, max_new_tokens=6, batch_size=3, progress=False)
    single = generate(model, tok, CONVS, max_new_tokens=6, batch_size=1, progress=False)
    assert [o.text for o in batched] == [o.text for o in single]
    assert tok.padding_side == "left"  # restored
