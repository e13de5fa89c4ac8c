import pytest
import torch

from ftkit.dpo import DPOSettings, to_trl_pairs, train_dpo
from ftkit.models import load_model
from ftkit.prompts import zero_shot
from ftkit.sft import SFTSettings, train_sft

PAIRS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in [
    ("Where is my order?", "order_status", "billing"), ("I was charged twice", "billing", "order_status"),
    ("Reset my password", "account", "address"), ("Change the delivery address", "address", "account")]] * 4


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_dpo_from_an_sft_adapter_logs_rewards_and_widens_the_margin(tiny, tmp_path):
    model, tok = tiny
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    sft = train_sft(model, tok, sft_rows, config=SFTSettings(max_steps=2, batch_size=4, save_steps=100),
                    runs_root=tmp_path)
    # train_sft left `model` as it was: DPO continues the SFT adapter on the same base model.
    run = train_dpo(model, tok, PAIRS, from_run=sft, runs_root=tmp_path,
                    config=DPOSettings(max_steps=6, batch_size=16, logging_steps=1, learning_rate=5e-3, beta=0.5))
    assert run.status["status"] == "completed" and run.config["from_run"] == sft.id
    logs = run.events("log")
    assert len(logs) == 6
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert all(key in e for e in logs), key
    margins = [float(e["rewards/margins"]) for e in logs]
    assert margins[-1] > margins[0] + 0.3
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    # One base model in memory: the DPO model's base layers are the caller's very tensors, which
    # neither SFT nor DPO changed, and the caller's model has no adapter layers.
    q = run.model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.base_layer.weight is model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_before)
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_pairs_are_rendered_with_the_template_and_bad_rows_named():
    rows = to_trl_pairs(PAIRS[:1], zero_shot("Q: {prompt}"))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q: Where is my order?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "order_status"}]
    with pytest.raises(ValueError, match="DPO needs prompt/chosen/rejected rows .* these rows have: prompt, completion"):
        to_trl_pairs([{"prompt": "a", "completion": "b"}], zero_shot())


def test_dpo_preflight_shows_the_first_pair_and_refuses_a_run_without_an_adapter(tiny_tokenizer, tmp_path):
    from ftkit.dpo import preflight
    from ftkit.runs import new_run

    check = preflight(tiny_tokenizer, to_trl_pairs(PAIRS, zero_shot()))
    assert check.problems == [] and check.notes == ["16 preference pairs"]
    assert "chosen: [[order_status]]" in check.example and "rejected: [[billing]]" in check.example
    empty = new_run("sft", {}, root=tmp_path)
    check = preflight(tiny_tokenizer, to_trl_pairs(PAIRS, zero_shot()), from_run=empty)
    assert check.problems == [f"run {empty.id} has no saved adapter to continue (status: running)"]
    with pytest.raises(ValueError, match="pre-flight check failed:\nrun .* has no saved adapter"):
        train_dpo(None, tiny_tokenizer, PAIRS, from_run=empty, runs_root=tmp_path)
