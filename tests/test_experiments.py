"""Learning curves and the from-scratch comparison, on the tiny model."""

import pytest

from ftkit.experiments import from_scratch, learning_curve
from ftkit.sft import SFTSettings

ROWS = [{"prompt": f"Where is order {i}?", "completion": "order_status" if i % 2 else "billing"} for i in range(12)]
FAST = dict(max_steps=1, batch_size=2, logging_steps=1, save_steps=100)


@pytest.fixture
def tiny(tiny_model_dir):
    from ftkit import load_model

    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_a_learning_curve_trains_nested_subsets_and_scores_each_on_the_same_rows(tiny, tmp_path):
    model, tok = tiny
    curve = learning_curve(model, tok, ROWS[:8], ROWS[8:], sizes=(2, 4, None), settings=SFTSettings(**FAST),
                           max_new_tokens=2, runs_root=tmp_path)
    assert list(curve.table["rows"]) == [2, 4, 8] and curve.metric == "exact_match"
    seen = [run.config["data_fingerprint"] for run in curve.runs]
    assert len(set(seen)) == 3 and all(run.status["status"] == "completed" for run in curve.runs)
    assert [run.config["train_rows"] for run in curve.runs] == [2, 4, 8]
    for _, line in curve.table.iterrows():
        assert line["low"] <= line["score"] <= line["high"]
    assert curve.runs[0].evaluation["test_rows"] == 4  # each evaluated on the same held-out rows
    fig = curve.figure(best_prompt=("8-shot", 0.5, 0.2, 0.8))
    assert list(fig.data[0].x) == [2, 4, 8] and fig.layout.shapes  # the prompt's band is drawn
    with pytest.raises(ValueError, match="sizes must be positive"):
        learning_curve(model, tok, ROWS, ROWS, sizes=(0,))


def test_from_scratch_trains_random_weights_fully_against_lora_on_the_pretrained_model(tiny, tmp_path):
    import torch

    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scratch = from_scratch(model, tok, ROWS[:8], ROWS[8:], minutes=0.01, max_new_tokens=2, runs_root=tmp_path,
                           scratch_learning_rate=2e-3)
    assert list(scratch.result.summary.index) == ["from scratch", "LoRA on pretrained"]
    fresh, lora = scratch.runs["from scratch"], scratch.runs["LoRA on pretrained"]
    assert fresh.config["settings"]["lora"]["full_finetune"] and not lora.config["settings"]["lora"]["full_finetune"]
    assert fresh.config["settings"]["learning_rate"] == 2e-3 and fresh.status["status"] == "completed"
    # Random weights: the scratch model shares nothing with the pretrained one; which stays unchanged.
    w = "model.embed_tokens.weight"
    assert not torch.equal(fresh.model.state_dict()[w], before[w])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
