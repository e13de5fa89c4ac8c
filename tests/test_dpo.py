import pytest

from ftkit.dpo import DPOSettings, to_trl_pairs, train_dpo
from ftkit.models import load_model
from ftkit.prompts import zero_shot
from ftkit.sft import SFTSettings, train_sft

PAIRS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in [
    ("Where is my order?", "order_status", "billing"), ("I was charged twice", "billing", "order_status"),
    ("Reset my password", "account", "address"), ("Change the delivery address", "address", "account")]] * 4


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", verbose=False)


def test_dpo_from_an_sft_adapter_logs_rewards_and_widens_the_margin(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    sft = train_sft(model, tok, sft_rows, config=SFTSettings(max_steps=2, batch_size=4, save_steps=100),
                    runs_root=tmp_path)
    base, tok2 = load_model(tiny_model_dir, device="cpu", verbose=False)
    run = train_dpo(base, tok2, PAIRS, from_run=sft, runs_root=tmp_path,
                    config=DPOSettings(max_steps=6, batch_size=16, logging_steps=1, learning_rate=5e-3, beta=0.5))
    assert run.status["status"] == "completed" and run.config["from_run"] == sft.id
    logs = run.events("log")
    assert len(logs) == 6
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert all(key in e for e in logs), key
    margins = [float(e["rewards/margins"]) for e in logs]
    assert margins[-1] > margins[0] + 0.3
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    # The reference is the same weights with the adapter off: one base model in memory, whose
    # base-layer weights DPO did not touch.
    q = run.model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.base_layer.weight.requires_grad is False


def test_pairs_are_rendered_with_the_template_and_bad_rows_named():
    rows = to_trl_pairs(PAIRS[:1], zero_shot("Q: {prompt}"))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q: Where is my order?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "order_status"}]
    with pytest.raises(ValueError, match="DPO needs prompt/chosen/rejected rows .* these rows have: prompt, completion"):
        to_trl_pairs([{"prompt": "a", "completion": "b"}], zero_shot())
