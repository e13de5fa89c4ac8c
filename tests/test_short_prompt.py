"""The short prompt: a tuned classifier trained and asked without the label list."""

import json

import pytest

from ftkit.config import ConfigError, TemplateConfig, config_from_dict
from ftkit.pipeline import build_template, run_pipeline, training_template
from ftkit.prompts import (CLASSIFY_INSTRUCTION, CLASSIFY_SHORT_INSTRUCTION, CLASSIFY_SYSTEM, LONG_LABEL_LIST,
                           SHORT_PROMPT, without_label_list)

MANY = [f"label_{i:02d}" for i in range(LONG_LABEL_LIST + 1)]
TRAIN = [{"prompt": f"message {i}", "completion": MANY[i % len(MANY)], "label": MANY[i % len(MANY)]}
         for i in range(2 * len(MANY))]


def _templates(config, labels):
    return [build_template(t, TRAIN, labels) for t in config.templates]


def test_the_short_prompt_leaves_out_the_label_list_and_keeps_the_system_prompt(tiny_tokenizer):
    full = build_template(TemplateConfig(kind="with_system"), TRAIN, MANY)
    short = without_label_list(full)
    row = {"prompt": "I was charged twice"}
    assert short.name == SHORT_PROMPT and short.instruction == CLASSIFY_SHORT_INSTRUCTION
    assert short.messages(row) == [{"role": "system", "content": CLASSIFY_SYSTEM},
                                   {"role": "user", "content": "Message: I was charged twice\nAnswer with the label only."}]
    assert not any(label in short.render(row, tiny_tokenizer) for label in MANY)
    assert all(label in full.render(row, tiny_tokenizer) for label in MANY)
    assert short.token_count(row, tiny_tokenizer) < full.token_count(row, tiny_tokenizer) / 2


def test_sft_template_names_the_short_prompt_of_the_template_it_would_train_on():
    config = config_from_dict({"templates": [{"kind": "with_system"}, {"kind": "few_shot", "k": 2}],
                               "sft": {"template": SHORT_PROMPT}})  # validates: the name is known
    labels = ["billing", "refund"]
    chosen = training_template(config, _templates(config, labels), labels)
    assert chosen.name == SHORT_PROMPT and chosen.system == CLASSIFY_SYSTEM and not chosen.shots
    with pytest.raises(ConfigError, match="short prompt.*no labels"):
        training_template(config, [build_template(t, TRAIN, []) for t in config.templates], [])


def test_a_long_label_list_trains_on_the_short_prompt_by_default_a_short_one_does_not():
    config = config_from_dict({"templates": [{"kind": "zero_shot"}]})
    assert training_template(config, _templates(config, MANY), MANY).name == SHORT_PROMPT
    few = MANY[:LONG_LABEL_LIST]
    assert training_template(config, _templates(config, few), few).instruction == CLASSIFY_INSTRUCTION
    # Another template named, or an instruction of the config's own: kept as it is.
    named = config_from_dict({"templates": [{"kind": "zero_shot"}], "sft": {"template": "zero-shot"}})
    assert training_template(named, _templates(named, MANY), MANY).instruction == CLASSIFY_INSTRUCTION
    own = config_from_dict({"templates": [{"kind": "zero_shot", "instruction": "Pick from {labels}: {prompt}"}]})
    assert training_template(own, _templates(own, MANY), MANY).name == "zero-shot"


MESSAGES = {"order": ["Where is my order?", "My parcel is late", "Has it shipped yet?", "Tracking says nothing",
                      "When will it arrive?", "Order still not here"],
            "refund": ["I want my money back", "Refund please", "Return this lamp", "Send a return label",
                       "The rug is wrong, refund", "How do I return it?"],
            "account": ["Reset my password", "Cannot log in", "Locked out of account", "Change my email",
                        "Two-factor code missing", "Forgot my login"]}


def test_the_tuned_model_is_served_with_the_short_prompt_it_trained_on(tmp_path, tiny_model_dir, tiny_tokenizer):
    from ftkit.models.tuned import run_template

    rows = [{"text": t, "label": label} for label, texts in MESSAGES.items() for t in texts]
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = config_from_dict({
        "data": {"source": "tickets.jsonl", "test_size": 6},
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "templates": [{"kind": "zero_shot"}],
        "sft": {"template": SHORT_PROMPT, "max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100,
                "max_length": 256},
        # No max_new_tokens: the run's answer length, from its training answers, holds the longest label
        # (a cap inside a label would cut it, constrained or not).
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")},
    }, base=tmp_path)
    lines = []
    result = run_pipeline(config, say=lines.append, progress=False)
    [run] = result.runs
    trained_on = run_template(run)
    assert trained_on.name == SHORT_PROMPT and trained_on.instruction == CLASSIFY_SHORT_INSTRUCTION
    evaluation = result.evaluation
    tokens = list(evaluation.column("LoRA SFT", "prompt_tokens"))
    texts = [trained_on.render({"prompt": p}, tiny_tokenizer) for p in evaluation.table["input"]]
    # Served with the prompt it trained on: its tokens are that prompt's, and it holds no label list.
    assert tokens == [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert not any("Labels:" in t or "account, order, refund" in t for t in texts)
    assert (evaluation.column("LoRA SFT", "prompt_tokens") < evaluation.column("zero-shot", "prompt_tokens")).all()
    # Constrained to the labels, both answer only with one: no invalid answers.
    assert set(evaluation.summary["invalid_rate"]) == {0.0}
    assert any("answers constrained to the 3 labels" in line for line in lines)
    assert any("'short prompt' prompt: no label list" in line for line in lines)


def test_constrained_answers_are_as_long_as_the_longest_label_past_the_tasks_cap(tmp_path, tiny_tokenizer):
    from ftkit.preparation import plan, prepare_data

    # Labels of 15+ tokens in the tiny tokenizer (as banking77's run to 17 in SmolLM2's): over classification's cap of 12.
    labels = ["change_the_delivery_address", "return_the_linen_duvet_cover", "reset_my_password"]
    rows = [{"text": f"message {i}", "label": labels[i % 3]} for i in range(30)]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    values = {"data": {"source": "rows.jsonl", "test_size": 6}, "task": "classification", "sft": None,
              "output": {"runs_root": str(tmp_path / "runs")}}
    prepared = prepare_data(config_from_dict(values, base=tmp_path), tiny_tokenizer, lambda _: None)
    longest = max(len(tiny_tokenizer(x, add_special_tokens=False)["input_ids"]) for x in labels)
    p = plan(config_from_dict(values, base=tmp_path), prepared)
    assert longest > p.task.max_new_tokens and p.max_new_tokens == longest + 1
    assert p.answer_length == f"the longest label ({longest} tokens) + 1: answers are constrained to the labels"
    free = plan(config_from_dict({**values, "constrain_labels": False}, base=tmp_path), prepared)
    assert free.max_new_tokens == p.task.max_new_tokens  # asked freely: the old rule, capped at the task's
