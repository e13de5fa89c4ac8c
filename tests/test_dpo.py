import datasets
import pytest
import torch

from ftkit.dpo import DPOSettings, to_trl_pairs, train_dpo
from ftkit.models import load_model
from ftkit.runs import list_runs
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
    # Before the first update the reference is the SFT policy itself: the rewards are 0.
    [check] = run.events("reference_check")
    assert abs(check["rewards/chosen"]) < 1e-4 and abs(check["rewards/rejected"]) < 1e-4
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
    # A DPO run exports like an SFT run: merged weights, checked against the adapter first.
    folder = run.export(tmp_path / "dpo-merged", merged=True, rows=PAIRS[:4])
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()


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


def test_a_reference_that_is_not_the_sft_model_stops_dpo_before_it_learns_nothing(tiny, tmp_path, monkeypatch):
    from trl import DPOTrainer

    model, tok = tiny
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    sft = train_sft(model, tok, sft_rows, runs_root=tmp_path,
                    config=SFTSettings(max_steps=4, batch_size=4, save_steps=100, learning_rate=5e-2))
    init = DPOTrainer.__init__

    def base_as_reference(self, *args, **kwargs):  # the known failure: the reference is the base model
        init(self, *args, **kwargs)
        self.model.delete_adapter("ref")

    monkeypatch.setattr(DPOTrainer, "__init__", base_as_reference)
    with pytest.raises(ValueError, match="DPO's first-step check failed: .* the rewards must be about 0, but "
                                         r"they are [+-]\d\.\d+ \(chosen\).* Pass the base model and from_run"):
        train_dpo(model, tok, PAIRS, from_run=sft, runs_root=tmp_path, config=DPOSettings(max_steps=2, batch_size=4))
    failed = [r for r in list_runs(tmp_path) if r.config["kind"] == "dpo"][0]
    assert failed.status["status"] == "failed" and "first-step check failed" in failed.status["error"]
    assert failed.events("log") == []  # stopped before the first step


def test_dpo_preflight_checks_every_pair(tiny_tokenizer):
    from ftkit.dpo import preflight

    pairs = PAIRS[:2] + [{"prompt": "a", "chosen": "same  answer", "rejected": "same answer"},
                         {"prompt": "b", "chosen": "yes", "rejected": " "},
                         {"prompt": "c " * 100, "chosen": "yes", "rejected": "no"}]
    rows = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                                        "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    problems = preflight(tiny_tokenizer, rows, max_length=64).problems
    assert problems[0].startswith("1 pair(s) have an empty chosen or rejected answer (rows 3)")
    assert problems[1].startswith("1 pair(s) have the same chosen and rejected answer (rows 2)")
    assert problems[2].startswith("1 pair(s) are longer than max_length=64 tokens (rows 4)")
    assert len(problems) == 3 and preflight(tiny_tokenizer, rows.select(range(2)), max_length=64).problems == []
