import html
import json

import pytest

from ftkit.config import TemplateConfig, config_from_dict
from ftkit.pipeline import build_template, run_pipeline, training_template
from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, DEFAULT_INSTRUCTION

MESSAGES = {"order": ["Where is my order?", "My parcel is late", "Has it shipped yet?", "Tracking says nothing",
                      "When will it arrive?", "Order still not here", "Is my package lost?", "Delivery date?"],
            "refund": ["I want my money back", "Refund please", "Return this lamp", "Send a return label",
                       "The rug is wrong, refund", "How do I return it?", "Money back for the mug",
                       "Return the linen cover"],
            "account": ["Reset my password", "Cannot log in", "Locked out of account", "Change my email",
                        "Two-factor code missing", "Forgot my login", "Account hacked?", "Password link broken"]}


def write_data(tmp_path):
    rows = [{"text": t, "label": label} for label, texts in MESSAGES.items() for t in texts]
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pairs = [{"prompt": t, "chosen": label, "rejected": "order" if label != "order" else "refund"}
             for label, texts in MESSAGES.items() for t in texts[:3]]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))


def tiny_config(tmp_path, model_dir, **overrides):
    write_data(tmp_path)
    values = {
        "data": {"source": "tickets.jsonl", "test_size": 6},
        "model": {"name": str(model_dir), "device": "cpu"},
        "templates": [{"kind": "zero_shot"}, {"kind": "few_shot", "k": 3}],
        "sft": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "max_length": 512},
        "dpo": {"source": "pairs.jsonl", "max_steps": 1, "batch_size": 4, "logging_steps": 1, "max_length": 512},
        "max_new_tokens": 4,
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")},
        **overrides,
    }
    return config_from_dict(values, base=tmp_path)


def test_pipeline_measures_prompts_sft_and_dpo_on_the_same_rows(tmp_path, tiny_model_dir):
    lines = []
    result = run_pipeline(tiny_config(tmp_path, tiny_model_dir), say=lines.append, progress=False)
    summary = result.evaluation.summary
    assert list(summary.index) == ["zero-shot", "3-shot", "LoRA SFT", "SFT + DPO"]
    assert set(summary["n"]) == {6}
    # The few-shot prompt carries three solved examples; the tuned models use the zero-shot prompt.
    assert summary.loc["3-shot", "prompt_tokens"] > 2 * summary.loc["zero-shot", "prompt_tokens"]
    assert summary.loc["LoRA SFT", "prompt_tokens"] == summary.loc["zero-shot", "prompt_tokens"]
    sft, dpo = result.runs
    assert sft.config["kind"] == "sft" and dpo.config["from_run"] == sft.id
    assert sft.config["template"]["name"] == "zero-shot"
    # Each run records its data: the source file, the split's held-out rows, the task and the prompts measured.
    from ftkit.data.provenance import held_out

    for run in (sft, dpo):
        assert run.data["source"]["path"] == str(tmp_path / "tickets.jsonl") and run.data["split"]["test_rows"] == 6
        assert run.data["training_template"]["name"] == "zero-shot" and run.data["task"]["name"] == "classification"
        assert [(t["name"], t["kind"], t["k"]) for t in run.data["templates"]] == \
               [("zero-shot", "zero_shot", 0), ("3-shot", "few_shot", 3)]
    assert "pairs" not in sft.data and dpo.data["pairs"]["source"]["path"] == str(tmp_path / "pairs.jsonl")
    assert held_out(sft).to_list() == held_out(dpo).to_list() and len(held_out(sft)) == 6
    for run, variant in [(sft, "LoRA SFT"), (dpo, "SFT + DPO")]:
        assert run.status["status"] == "completed"
        record = run.evaluation  # kept with the run, as ComparePanel keeps its own
        assert record["variant"] == variant and record["value"] == summary.loc[variant, "exact_match"]
        assert [r["variant"] for r in record["summary"]] == list(summary.index)
    assert all(len(result.evaluation.outputs(v)) == 6 for v in ("LoRA SFT", "SFT + DPO", "3-shot"))
    text = "\n".join(lines)
    assert "sft step 1/2  loss" in text and "dpo step 1/1  loss" in text and "margin" in text
    assert "LoRA SFT vs zero-shot on exact_match:" in text
    assert result.report.is_file() and "Side by side" in result.report.read_text()
    # The verdict: the same advice object printed and in the report.
    from ftkit.evaluation.verdict import advise

    advice = advise(result.evaluation, ["zero-shot", "3-shot"], dict(zip(["LoRA SFT", "SFT + DPO"], result.runs)))
    assert f"Verdict: {advice.conclusion}: {advice.reason}." in lines
    assert html.escape(f"Verdict: {advice.conclusion}: {advice.reason}.") in result.report.read_text()


def test_without_training_the_prompt_baselines_are_still_reported(tmp_path, tiny_model_dir):
    config = tiny_config(tmp_path, tiny_model_dir, sft=None, dpo=None, templates=[{"kind": "zero_shot"}])
    result = run_pipeline(config, say=lambda _line: None, progress=False)
    assert result.runs == [] and list(result.evaluation.summary.index) == ["zero-shot"]
    assert "Training cost" not in result.report.read_text()


def test_templates_get_classification_defaults_only_on_labelled_data():
    train = [{"prompt": f"m{i}", "completion": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(6)]
    few = build_template(TemplateConfig(kind="few_shot", k=2), train, ["a", "b"])
    assert few.system == CLASSIFY_SYSTEM and few.instruction == CLASSIFY_INSTRUCTION and len(few.shots) == 2
    zero = build_template(TemplateConfig(kind="zero_shot"), train, ["a", "b"])
    assert zero.system is None and zero.labels == ["a", "b"]
    plain = build_template(TemplateConfig(kind="with_system", system=""), train, [])
    assert plain.system is None and plain.instruction == DEFAULT_INSTRUCTION
    assert build_template(TemplateConfig(kind="with_system"), train, []).system is None


@pytest.mark.parametrize("wanted, expected", [("", "zero-shot"), ("2-shot", "2-shot")])
def test_training_template_is_the_named_one_or_the_first_without_shots(wanted, expected):
    train = [{"prompt": f"m{i}", "completion": "x"} for i in range(4)]
    config = config_from_dict({"templates": [{"kind": "few_shot", "k": 2}, {"kind": "zero_shot"}],
                               "sft": {"template": wanted}})
    templates = [build_template(t, train, []) for t in config.templates]
    assert training_template(config, templates).name == expected


@pytest.mark.parametrize("task,headline,variant", [("qa", "token_f1", "closed book"),
                                                   ("translation", "chrf", "glossary in prompt"),
                                                   ("code", "pass_at_1", None)])
def test_a_task_brings_its_example_prompts_and_metrics(task, headline, variant, tmp_path, tiny_model_dir):
    from ftkit import tasks

    lines = []
    config = config_from_dict({
        "data": {"source": tasks.get(task).examples[0], "test_size": 0.1, "limit": 3},
        "model": {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "sft": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "max_length": 2048},  # tiny vocabulary: long
        "max_new_tokens": 4,
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")},
    }, base=tmp_path)
    assert config.task is None  # inferred from the data, and said
    result = run_pipeline(config, say=lines.append, progress=False)
    text = "\n".join(lines)
    assert f"Task: {task} (inferred:" in text and f"headline metric {headline}:" in text
    summary = result.evaluation.summary
    shots = tasks.get(task).shots
    expected = ["zero-shot", *([variant] if variant else []), f"{shots}-shot", f"retrieved {shots}-shot", "LoRA SFT"]
    assert list(summary.index) == expected
    own = tasks.get(task).on(tasks.get(task).examples[0])  # its own example: with the house metrics
    assert list(result.evaluation.metrics) == own.metric_names()
    assert result.runs[0].evaluation["metric"] == headline
    page = result.report.read_text()
    assert f"{headline} per variant" in page and f"task: {task}" in page


def test_ftkit_run_takes_conversations(tmp_path, tiny_model_dir):
    names = ["Ann", "Ben", "Cai", "Dee", "Eli", "Fay", "Gus", "Hal", "Ida", "Jo"]
    chats = [{"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Hi, it's {name}. Where is order HC-1000{i}?"},
        {"role": "assistant", "content": f"Hi {name}, order HC-1000{i} left today."},
        {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You're welcome."}]}
        for i, name in enumerate(names)]
    (tmp_path / "chats.jsonl").write_text("\n".join(json.dumps(c) for c in chats))
    lines = []
    config = config_from_dict({
        "data": {"source": "chats.jsonl", "test_size": 2},
        "model": {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "sft": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "max_length": 256},
        "max_new_tokens": 4,
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")},
    }, base=tmp_path)
    result = run_pipeline(config, say=lines.append, progress=False)
    assert "Task: chat (inferred: the rows are conversations" in "\n".join(lines)
    table = result.evaluation.table
    assert list(result.evaluation.summary.index) == ["zero-shot", "LoRA SFT"]
    assert len(table) == 4 and list(table["reference"])[1] == "You're welcome."  # 2 conversations, 2 turns each
    assert table["history"].iloc[1].startswith("user: Hi, it's")
    assert result.runs[0].status["status"] == "completed"
    assert "assistant: Hi " in result.report.read_text()  # the report shows the conversation so far


def test_a_load_while_one_prompt_is_scored_does_not_reach_its_latency(tmp_path, tiny_model_dir, monkeypatch):
    """Two identical prompts; another job runs while the first is scored (a fake clock: a forward
    pass costs 1, or 5 under the load). The run times every variant together afterwards, so both
    come out the same, and the verdict's inputs claim no difference."""
    import ftkit.evaluation.answering as evaluation  # where evaluate generates its answers
    import ftkit.pipeline as pipeline
    import ftkit.generation.timing as timing

    state = {"load": False, "now": 0.0, "scored": 0}

    def tick(module, args):
        state["now"] += 5.0 if state["load"] else 1.0

    real_load, real_generate = pipeline.load_model, evaluation.generate

    def load_with_clock(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        model.register_forward_pre_hook(tick)
        return model, tok

    def scored(*args, **kwargs):  # the first scoring pass runs beside the other job
        state["load"], state["scored"] = state["scored"] == 0, state["scored"] + 1
        try:
            return real_generate(*args, **kwargs)
        finally:
            state["load"] = False

    monkeypatch.setattr(pipeline, "load_model", load_with_clock)
    monkeypatch.setattr(evaluation, "generate", scored)
    monkeypatch.setattr(timing, "clock", lambda: state["now"])
    config = tiny_config(tmp_path, tiny_model_dir, sft=None, dpo=None,
                         templates=[{"kind": "zero_shot", "name": "plain"}, {"kind": "zero_shot", "name": "twin"}])
    lines = []
    result = run_pipeline(config, say=lines.append, progress=False).evaluation
    s = result.summary
    assert state["scored"] == 2 and s.loc["plain", "latency_s"] > 0
    assert s.loc["plain", "latency_s"] == s.loc["twin", "latency_s"]
    assert s.loc["plain", "latency_1_s"] == s.loc["twin", "latency_1_s"]
    assert not result.timing.difference("twin", "plain").significant
    assert any(line.startswith("  timed together, interleaved: 3 rounds of 6 rows") for line in lines)


# --- the answer length comes from the training answers, unless the config sets it ------------------

def test_answer_length_is_a_high_percentile_of_the_references_plus_a_margin_within_the_tasks():
    from ftkit.preparation import answer_length

    # nearest rank: the 95th percentile of 1..100 is 95; the margin a quarter of it, 24 (at least 8)
    assert answer_length(list(range(1, 101)), cap=256) == (
        119, "95th percentile of the training answers (95 tokens) + margin 24")
    # of 20 answers the 19th longest: one outlier does not set every batch's length
    assert answer_length([10] * 19 + [300], cap=256)[0] == 18
    n, why = answer_length(list(range(1, 101)), cap=64)
    assert n == 64 and "= 119, capped at the task's 64" in why
    assert answer_length([], cap=32) == (32, "the task's default (no training answers to measure)")
    assert answer_length(list(range(1, 101)), cap=64, set_to=300) == (300, "set in the config")


def test_a_run_answers_up_to_its_training_answers_length_unless_the_config_sets_one(tmp_path, tiny_tokenizer):
    from ftkit.preparation import plan, prepare_data

    # " order" is one token of the tiny tokenizer: an answer of k words is k + 1 tokens (a leading "ord", "er")
    rows = [{"prompt": f"Summarize case {i}: the customer asks about an order and waits for it.",
             "completion": " ".join(["order"] * (70 if i == 0 else 11))} for i in range(40)]
    (tmp_path / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    values = {"data": {"source": "cases.jsonl", "test_size": 6}, "task": "summarization", "sft": None,
              "output": {"runs_root": str(tmp_path / "runs")}}
    prepared = prepare_data(config_from_dict(values, base=tmp_path), tiny_tokenizer, lambda _: None)
    assert len(prepared.answer_tokens) == 34 and set(prepared.answer_tokens) <= {12, 71}
    # 34 answers: the 95th percentile is the 33rd shortest (ceil(0.95 * 34)), 12 tokens whether or not
    # the one 71-token answer was held out; + a margin of max(8, 12 / 4) = 8
    p = plan(config_from_dict(values, base=tmp_path), prepared)
    assert p.max_new_tokens == 20 < p.task.max_new_tokens
    assert p.answer_length == "95th percentile of the training answers (12 tokens) + margin 8"
    explicit = plan(config_from_dict({**values, "max_new_tokens": 48}, base=tmp_path), prepared)
    assert (explicit.max_new_tokens, explicit.answer_length) == (48, "set in the config")


def test_the_runs_budget_boxes_training_and_says_how_it_was_reckoned(tmp_path, tiny_model_dir, monkeypatch):
    import ftkit.budget
    import ftkit.pipeline

    for module in (ftkit.budget, ftkit.pipeline):  # a one-second minimum keeps the test short
        monkeypatch.setattr(module, "MIN_TRAINING_S", 1.0)
    lines = []
    config = tiny_config(tmp_path, tiny_model_dir, dpo=None, max_minutes=0.02, templates=[{"kind": "zero_shot"}],
                         sft={"max_steps": 100000, "batch_size": 4, "logging_steps": 1000, "save_steps": 100000,
                              "max_length": 512, "sample_every": 0})
    result = run_pipeline(config, say=lines.append, progress=False)
    (sft,) = result.runs
    assert sft.status["status"] == "completed" and sft.status["ended_by"] == "time budget"
    assert 0 < sft.status["step"] < 100000 and sft.config["settings"]["max_minutes"] == round(1 / 60, 2)
    budget = next(line.strip() for line in lines if line.strip().startswith("Budget: "))
    assert budget.startswith("Budget: 1s for the whole run; ") and "training gets the minimum, 1s, so the run " \
        "will pass its 1s by about" in budget
    assert "LoRA SFT" in result.evaluation.summary.index  # scored and timed after all


def test_training_keeps_its_own_shorter_limit_and_no_budget_boxes_nothing(tmp_path, tiny_model_dir):
    import time

    from ftkit.config import SFTStage
    from ftkit.pipeline import _boxed

    own = SFTStage(max_minutes=0.5)
    assert _boxed(own, time.perf_counter() + 600) is own  # 10 minutes left: its own 30 s ends it first
    assert _boxed(SFTStage(), time.perf_counter() + 600, 2 / 3).max_minutes == pytest.approx(400 / 60, abs=0.02)
    assert _boxed(SFTStage(), None).max_minutes == 0
    lines = []
    run_pipeline(tiny_config(tmp_path, tiny_model_dir, dpo=None, max_minutes=0), say=lines.append, progress=False)
    assert not [line for line in lines if "Budget" in line]


def test_baselines_past_their_share_of_the_budget_answer_a_sample_that_the_tuned_model_answers_too(
        tmp_path, tiny_model_dir, monkeypatch):
    import ftkit.budget
    import ftkit.pipeline

    for module in (ftkit.budget, ftkit.pipeline):
        monkeypatch.setattr(module, "MIN_TRAINING_S", 1.0)
    monkeypatch.setattr(ftkit.pipeline, "BASELINE_SHARE", 0.0)  # the tiny model answers 40 rows in no time
    rows = [{"text": f"{label} question number {i}", "label": label} for label in ("order", "refund", "account")
            for i in range(30)]
    (tmp_path / "many.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    lines = []
    config = tiny_config(tmp_path, tiny_model_dir, dpo=None, max_minutes=0.01, templates=[{"kind": "zero_shot"}],
                         sft={"max_steps": 2, "batch_size": 4, "logging_steps": 1, "max_length": 512})
    config.data.source = str(tmp_path / "many.jsonl")
    config.data.test_size = 40
    result = run_pipeline(config, say=lines.append, progress=False)
    summary = result.evaluation.summary
    assert list(summary.index) == ["zero-shot", "LoRA SFT"] and set(summary["n"]) == {32}
    note = "evaluated on 32 of the 40 held-out rows, a random sample answered by every variant"
    assert any(note in line for line in lines) and note in result.report.read_text()
