"""Learning curves and the from-scratch comparison, on the tiny model."""

import pytest

from ftkit.evaluation.experiments import from_scratch, learning_curve
from ftkit.training.sft import SFTSettings

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
    import pandas as pd

    from ftkit.evaluation.experiments import LearningCurve

    hand = LearningCurve(table=pd.DataFrame({"rows": [25, 50, 100], "score": [0.2, 0.5, 0.8], "low": [0.1, 0.3, 0.6],
                                             "high": [0.3, 0.7, 0.9]}), metric="exact_match", runs=[])
    assert (hand.crossing(0.5), hand.crossing(0.5, beyond_noise=True), hand.crossing(0.95)) == (50, 100, None)
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


def test_a_task_change_adds_the_label_to_each_prompt_and_measures_who_uses_it_untrained(monkeypatch):
    import ftkit.evaluation.answering as module  # where evaluate generates its answers
    from ftkit.evaluation.evaluate import Variant
    from ftkit.evaluation.experiments import task_change
    from ftkit.generation.generate import Generation
    from ftkit.prompts import classify_zero_shot

    prompted, tuned = object(), object()  # stand-ins: one follows its label list, one learned the old labels
    asked = []

    def answer(model, tok, conversations, **kwargs):
        out = []
        for messages in conversations:
            text = messages[-1]["content"]
            asked.append(text)
            if model is prompted:
                label = "gift_card" if "gift card question" in text and "gift_card" in text else "billing_issue"
            else:
                label = "billing_issue"
            out.append(Generation(text=label, prompt_tokens=10, new_tokens=2, latency_s=0.01))
        return out

    monkeypatch.setattr(module, "generate", answer)
    old = [{"prompt": "charged twice", "completion": "billing_issue"}, {"prompt": "where is it", "completion": "order_status"}]
    new = [{"prompt": f"gift card question {i}", "completion": "?"} for i in range(10)] + \
          [{"prompt": "a card for my aunt", "completion": "?"}]
    template = classify_zero_shot(labels=["billing_issue", "order_status"])
    change = task_change([Variant(prompted, None, template, name="zero-shot"),
                          Variant(tuned, None, template, name="LoRA SFT")], new, "gift_card", old_rows=old)
    assert all("Labels: billing_issue, order_status, gift_card" in text for text in asked)  # the label was added
    assert change.table.loc["zero-shot", "new"] == 10 / 11 and change.table.loc["LoRA SFT", "new"] == 0
    assert change.table.loc["zero-shot", "old"] == 0.5 and change.table.loc["zero-shot", "new_rows"] == 11
    assert change.table.loc["zero-shot", "new_low"] > 0 and change.trained == ("LoRA SFT",)
    text = str(change)
    assert "zero-shot: 91% of 11 'gift_card' messages routed to the new label" in text and "uses it without new" in text
    assert "LoRA SFT: 0% of 11" in text and "needs labelled rows for it and another training run" in text
    with pytest.raises(ValueError, match="already a label"):
        task_change([Variant(prompted, None, template, name="zero-shot")], new, "order_status")
    with pytest.raises(ValueError, match="names no label list"):
        from ftkit.prompts import zero_shot
        task_change([Variant(prompted, None, zero_shot(), name="plain")], new, "gift_card")


def test_a_task_change_can_show_the_new_label_to_few_shot_prompts_only(monkeypatch):
    import ftkit.evaluation.answering as module  # where evaluate generates its answers
    from ftkit.evaluation.evaluate import Variant
    from ftkit.evaluation.experiments import task_change
    from ftkit.generation.generate import Generation
    from ftkit.prompts import classify_few_shot, classify_zero_shot

    seen = {}

    def answer(model, tok, conversations, **kwargs):
        for messages in conversations:
            seen.setdefault(model, messages)
        return [Generation(text="gift_card", prompt_tokens=1, new_tokens=1, latency_s=0.01) for _ in conversations]

    monkeypatch.setattr(module, "generate", answer)
    labels = ["billing_issue", "order_status"]
    train = [{"prompt": "charged twice", "completion": "billing_issue"}, {"prompt": "where", "completion": "order_status"}]
    new = [{"prompt": f"gift card {i}", "completion": "?"} for i in range(5)]
    change = task_change([Variant("zero", None, classify_zero_shot(labels=labels), name="zero-shot"),
                          Variant("few", None, classify_few_shot(train, k=2, labels=labels), name="2-shot")],
                         new, "gift_card", shots=2, trained=[])
    assert change.table.loc["zero-shot", "new_rows"] == 3  # the two shown are not asked
    answers = [m["content"] for m in seen["few"] if m["role"] == "assistant"]
    assert answers[-2:] == ["gift_card", "gift_card"] and len(answers) == 4  # old shots, then the new label's
    assert not [m for m in seen["zero"] if m["role"] == "assistant"]  # a zero-shot prompt shows no examples
