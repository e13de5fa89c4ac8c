"""`ftkit run --check` checks what the run will check, with the config's own templates and settings,
and a stranger's own data runs right the first time: `--check` passes and the run succeeds, or both
refuse before any training and name what to change.

The model here is a tiny Llama built from a config with the embedded model's own tokenizer, so
token counts (and so every length check) are those of the embedded model, at a tiny model's speed.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from ftkit.data import examples
from ftkit.cli import main
from ftkit.config import load_config
from ftkit.prompts import few_shot
from ftkit.runs import list_runs


def write_config(folder, values: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def code_rows(n: int, body_lines: int) -> list[dict]:
    body = "\n".join(f"    x = x + {i}" for i in range(body_lines))
    return [{"prompt": f"Write add{i}(x) that adds {i}.", "completion": f"def add{i}(x):\n{body}\n    return x",
             "tests": [f"assert add{i}(0) == {sum(range(body_lines))}"]} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- 1. --check says what the run would refuse, and the run refuses before any prompt is asked -----

def test_check_fails_where_the_run_would_refuse_and_the_run_refuses_before_the_baselines(model_dir, tmp_path,
                                                                                          capsys):
    data = write_jsonl(tmp_path / "code.jsonl", code_rows(10, 60))  # answers of ~500 tokens
    config = write_config(tmp_path, {"data": {"source": "code.jsonl", "test_size": 2},
                                     "model": {"name": str(model_dir)}, "task": "code",
                                     "sft": {"max_length": 256}})
    assert data.is_file()
    code, out = run(["run", str(config), "--check"], capsys)
    assert code == 2, out
    assert re.search(r"ERROR: sft: \d+ example\(s\) have (an answer cut short|no trained tokens)", out)
    assert "max_length=256" in out and "Raise max_length" in out
    assert "valid (" not in out

    code, out = run(["run", str(config)], capsys)
    assert code == 2, out
    assert "the run would stop before training" in out and "Raise max_length" in out
    assert "Prompt baselines" not in out  # refused before minutes of prompting, not after


# --- 2. lengths are counted with the config's own templates -----------------------------------------

def test_check_counts_tokens_with_the_configs_templates_not_the_tasks(model_dir, tmp_path, capsys):
    passage = " ".join(["The shop opens at nine and closes at five on weekdays."] * 25)  # ~300 tokens
    rows = [{"question": f"When does shop {i} open?", "answer": "at nine", "context": passage + f" Shop {i}."}
            for i in range(12)]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    # The config's own prompt reads the passage twice: about twice the task's own QA prompt.
    values = {"data": {"source": "qa.jsonl", "test_size": 2}, "model": {"name": str(model_dir)}, "task": "qa",
              "templates": [{"kind": "zero_shot", "name": "twice",
                             "instruction": "Text: {context}\n\nAgain: {context}\n\nQuestion: {prompt}"}],
              "sft": {"max_length": 450}}
    code, out = run(["run", str(write_config(tmp_path, values)), "--check"], capsys)
    assert code == 2, out
    lengths = re.search(r"prompt 'twice': median (\d+), longest (\d+) tokens", out)
    assert lengths and int(lengths[2]) > 550, out  # both passages are counted
    assert "ERROR: sft:" in out and "max_length=450" in out  # the task's own prompt (~300 tokens) would fit

    values["sft"]["max_length"] = 1024
    code, out = run(["run", str(write_config(tmp_path, values)), "--check"], capsys)
    assert code == 0, out
    assert "valid (" in out


# --- 3. a task's declared lengths apply unless the config says otherwise ----------------------------

def test_the_tasks_max_length_applies_in_ftkit_run_unless_the_config_sets_one(model_dir, tmp_path, capsys):
    from ftkit.models.loading import load_tokenizer
    from ftkit.pipeline import plan, prepare_data

    write_jsonl(tmp_path / "code.jsonl", code_rows(10, 3))
    tokenizer = load_tokenizer(model_dir)
    config = load_config(write_config(tmp_path, {"data": {"source": "code.jsonl", "test_size": 2}, "task": "code",
                                                 "model": {"name": str(model_dir)}, "dpo": None}))
    p = plan(config, prepare_data(config, tokenizer, lambda _: None))
    assert p.sft.max_length == 768
    # the answers' length from the training answers (short functions here), within the task's 256
    assert p.max_new_tokens < p.task.max_new_tokens and p.answer_length.startswith("95th percentile")
    config = load_config(write_config(tmp_path, {"data": {"source": "code.jsonl", "test_size": 2}, "task": "code",
                                                 "model": {"name": str(model_dir)}, "sft": {"max_length": 300}}))
    assert plan(config, prepare_data(config, tokenizer, lambda _: None)).sft.max_length == 300


def test_run_help_says_what_happens_to_a_row_over_max_length(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "max_length: 0" in text and "raised to the longest training example when that is longer" in text
    assert "A value you set is kept" in text and "the run refuses to start and names those rows" in text


# --- 6. a quick first run of one's own config --------------------------------------------------------

def test_limit_and_max_steps_bound_the_training_rows_and_steps_too(model_dir, tmp_path, capsys):
    rows = [{"text": f"message number {i} about {'billing' if i % 2 else 'delivery'}",
             "label": "billing" if i % 2 else "delivery"} for i in range(40)]
    write_jsonl(tmp_path / "labels.jsonl", rows)
    config = write_config(tmp_path, {"data": {"source": "labels.jsonl"}, "model": {"name": str(model_dir)},
                                     "templates": [{"kind": "zero_shot"}], "sft": {"epochs": 3}})
    code, out = run(["run", str(config), "--limit", "2", "--max-steps", "1"], capsys)
    assert code == 0, out
    assert "evaluating on 2; training on 2" in out
    assert "SFT: LoRA on 2 rows" in out
    (sft,) = list_runs(tmp_path / "runs")  # 10. the runs folder is the config's, not the current folder's
    assert sft.status["step"] == 1 and sft.status["status"] == "completed"
    assert (tmp_path / "report.html").is_file()


def test_check_says_when_the_runs_budget_ends_training_sooner_and_refuses_a_negative_one(model_dir, tmp_path,
                                                                                            capsys):
    rows = [{"text": f"message number {i} about {'billing' if i % 2 else 'delivery'}",
             "label": "billing" if i % 2 else "delivery"} for i in range(40)]
    write_jsonl(tmp_path / "labels.jsonl", rows)
    config = write_config(tmp_path, {"data": {"source": "labels.jsonl"}, "model": {"name": str(model_dir)},
                                     "templates": [{"kind": "zero_shot"}], "sft": {"max_steps": 100000}})
    code, out = run(["run", str(config), "--check", "--max-minutes", "0.01"], capsys)
    assert code == 0, out
    # Training is never boxed under a minute: 100,000 steps of a tiny model do not fit in it.
    steps = re.search(r"the run's 0.01-minute budget ends it sooner, after about (\d+) step", out)
    assert steps and 0 < int(steps.group(1)) < 100000, out
    code, out = run(["run", str(config), "--check", "--max-minutes", "0"], capsys)
    assert code == 0 and "budget" not in out, out
    code, out = run(["run", str(config), "--check", "--max-minutes", "-1"], capsys)
    assert code == 2 and "--max-minutes: -1 is not 0 (no budget) or a number of minutes" in out, out


def test_limit_must_be_a_positive_whole_number(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "c.yaml"), "--limit", "0"])
    assert "expected a whole number of at least 1" in capsys.readouterr().err


# --- 8. the terminal table shows every metric ---------------------------------------------------------

def test_the_terminal_table_shows_every_metric_of_the_config(model_dir, tmp_path, capsys):
    rows = [{"question": f"What is {i} plus one?", "answer": str(i + 1)} for i in range(10)]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    config = write_config(tmp_path, {"data": {"source": "qa.jsonl", "test_size": 2}, "task": "qa", "sft": None,
                                     "model": {"name": str(model_dir)}, "max_new_tokens": 4,
                                     "metrics": ["token_f1", "squad_exact_match", "chrf"]})
    code, out = run(["run", str(config)], capsys)
    assert code == 0, out
    header = next(line for line in out.splitlines() if line.startswith("variant"))
    assert header.split()[:5] == ["variant", "token_f1", "95%", "CI", "squad_exact_match"]
    assert "chrf" in header.split()


# --- 9. few-shot on conversations shows whole conversations ----------------------------------------

def test_chat_few_shot_shows_whole_short_conversations_never_turns_of_another(model_dir):
    from ftkit.data.canonical import chat_turns, load_data

    chats = load_data(examples.path("shop_chat"), verbose=False)
    train, test = chats.select(range(10)), chats.select(range(10, 12))
    template = few_shot(train, k=2, seed=0)
    turn = chat_turns(test)[2]  # a later turn: its own earlier turns come before it
    messages = template.messages(turn)
    assert messages[0]["role"] == "system" and "Example conversations" in messages[0]["content"]
    # The real conversation follows the system prompt, turn for turn, and nothing else does.
    assert messages[1:] == [*turn["history"][:-1], {"role": "user", "content": turn["prompt"]}] or \
        messages[1:] == [m for m in turn["history"] if m["role"] != "system"]
    shown = messages[0]["content"]
    for shot in template.shots:  # each shot is a whole conversation from training, every turn shown
        assert all(m["content"] in shown for m in shot["messages"] if m["role"] != "system")
        assert any(shot["messages"] == r["messages"] for r in train)
    lengths = sorted(sum(len(m["content"]) for m in r["messages"]) for r in train)
    assert all(sum(len(m["content"]) for m in s["messages"]) <= lengths[len(lengths) // 2] for s in template.shots)


# --- 10. relative paths in a config resolve against its folder -------------------------------------

def test_output_paths_resolve_against_the_configs_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    config = load_config(write_config(folder, {"output": {"runs_root": "my-runs", "report": "out/report.html"}}))
    monkeypatch.chdir(tmp_path)
    assert config.output.runs_root == str(folder / "my-runs")
    assert config.output.report == str(folder / "out" / "report.html")


def test_a_dumped_config_reads_back_to_the_same_paths(tmp_path):
    from ftkit.config import dump_config

    config = load_config(write_config(tmp_path / "a", {"output": {"runs_root": "runs"}}))
    again = load_config(dump_config(config, tmp_path / "a" / "copy.yaml"))
    assert again.output.runs_root == config.output.runs_root == str(tmp_path / "a" / "runs")


# --- every built-in example and every real-data slice ------------------------------------------------

TASK_EXAMPLES = ["support_routing", "shop_qa", "shop_translation", "shop_summaries", "shop_blurbs", "shop_chat",
                 "shop_code"]
# (file under ../shared/realdata, what a stranger would write besides the source, what both refuse on)
ASK_TASK = "set task: in the config"
SLICES = {
    "banking77-10": ("banking77/banking77_test_10labels.jsonl", {}, None),
    "banking77-77": ("banking77/banking77_test_sample2000_77labels.jsonl", {}, None),
    # free text both sides (a JSON answer, an instruction's answer), preference pairs: no task to infer
    "restaurant8k": ("restaurant8k/restaurant8k_test_sample2000.jsonl",
                     {"data": {"mapping": {"prompt": "text", "completion": "target_json"}}}, ASK_TASK),
    "hh-rlhf": ("hh_rlhf_harmless/hh_rlhf_harmless_base_test_singleturn.jsonl", {}, ASK_TASK),
    "self-instruct": ("self_instruct_seed/seed_tasks_175.jsonl", {}, ASK_TASK),
    "self-instruct as creative": ("self_instruct_seed/seed_tasks_175.jsonl", {"task": "creative"}, None),
    "ntrex": ("translation_ntrex/ntrex128_en-de_sample400.jsonl", {}, None),
    "nq-open": ("qa/nq_open_dev_sample.jsonl", {}, None),
    "scitldr": ("summarization/scitldr_a_train_sample.jsonl",
                {"data": {"mapping": {"prompt": "document", "completion": "summary"}}}, None),
    "poems": ("creative_writing/public_domain_poems_sample.jsonl", {}, None),  # longer than the task's 256
    "mbpp": ("mbpp/mbpp_sample.jsonl", {}, None),
    "sgd-chat": ("chat_multiturn/sgd_test_sample.jsonl", {}, None),
}


def check_then_run(config, capsys, refused: str | None = None) -> tuple[int, str]:
    """--check, then the run with the same bounds: both pass, or (``refused``: the key they must
    name) both refuse before any prompt is asked, naming what to change."""
    bounds = ["--max-steps", "1", "--limit", "2"]
    code, out = run(["run", str(config), "--check", *bounds], capsys)
    assert code == (2 if refused else 0), out
    if refused:
        errors = " ".join(line for line in out.splitlines() if line.startswith("ERROR:"))
        assert refused in errors and "NOT VALID" in out, out
        again, run_out = run(["run", str(config), *bounds], capsys)
        assert again == 2 and refused in run_out and "Prompt baselines" not in run_out, run_out
        return code, out
    assert re.search(r"Estimate: about (\d+m)?\d+s in all", out), out
    assert "grad_norm" not in out and "{'loss'" not in out  # its measured step prints no trainer dicts
    again, run_out = run(["run", str(config), *bounds], capsys)
    assert again == 0, run_out
    assert "Report: " in run_out
    return code, out


@pytest.mark.parametrize("example", TASK_EXAMPLES)
def test_every_built_in_example_checks_and_runs(example, model_dir, tmp_path, capsys):
    config = write_config(tmp_path, {"data": {"source": example}, "model": {"name": str(model_dir)},
                                     "task": examples.info(example).task})
    code, out = check_then_run(config, capsys)
    assert code == 0, out  # the shop's own examples are the kit's promise: they must run


@pytest.mark.parametrize("name", list(SLICES))
def test_every_real_data_slice_checks_and_then_runs_or_names_what_to_change(name, realdata, model_dir, tmp_path,
                                                                            capsys):
    file, extra, refused = SLICES[name]
    values = {"data": {"source": str(realdata / file), **extra.get("data", {})},
              "model": {"name": str(model_dir)}, **{k: v for k, v in extra.items() if k != "data"}}
    check_then_run(write_config(tmp_path, values), capsys, refused)


def test_a_template_naming_a_column_the_rows_lack_is_refused_by_check_and_run(model_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(8)])
    config = write_config(tmp_path, {"data": {"source": "qa.jsonl", "test_size": 2}, "task": "qa",
                                     "model": {"name": str(model_dir)},
                                     "templates": [{"kind": "zero_shot", "instruction": "{passage}\n{prompt}"}]})
    code, out = run(["run", str(config), "--check"], capsys)
    assert code == 2 and "instruction uses {passage}, but the row has no such field" in out, out
    code, out = run(["run", str(config)], capsys)
    assert code == 2 and "{passage}" in out and "Traceback" not in out


def test_a_length_left_to_the_task_grows_to_the_longest_training_example_and_a_set_one_refuses(model_dir, tmp_path,
                                                                                                capsys):
    write_jsonl(tmp_path / "code.jsonl", code_rows(10, 60))  # answers of ~500 tokens; the code task says 768
    values = {"data": {"source": "code.jsonl", "test_size": 2}, "model": {"name": str(model_dir)},
              "task": "summarization", "sft": {"max_steps": 1}}  # summarization's 512 is too short for them
    code, out = run(["run", str(write_config(tmp_path, values)), "--check"], capsys)
    assert code == 0, out
    fitted = re.search(r"sft: max_length (\d+): the summarization task's 512 raised to fit the longest training "
                       r"example \((\d+) tokens\)", out)
    assert fitted and int(fitted[1]) % 64 == 0 and int(fitted[2]) <= int(fitted[1]) < int(fitted[2]) + 64, out
    assert f"max_length {fitted[1]}" in out.split("The run will")[1]  # the run trains with it
    code, out = run(["run", str(write_config(tmp_path, values))], capsys)
    assert code == 0, out
    (sft,) = list_runs(tmp_path / "runs")
    assert sft.config["settings"]["max_length"] == int(fitted[1])

    values["sft"]["max_length"] = 512  # said by the config: refused, not changed
    code, out = run(["run", str(write_config(tmp_path, values)), "--check"], capsys)
    assert code == 2 and "max_length=512" in out and "raised to fit" not in out, out


def test_qa_pairs_without_the_passage_are_refused_by_name_not_with_a_traceback(model_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}?", "answer": f"a{i}", "context": f"Passage {i}."}
                                        for i in range(8)])
    write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q{i}?", "chosen": f"a{i}", "rejected": "no"} for i in range(4)])
    config = write_config(tmp_path, {"data": {"source": "qa.jsonl", "test_size": 2}, "task": "qa",
                                     "model": {"name": str(model_dir)}, "dpo": {"source": "pairs.jsonl"}})
    for argv in (["run", str(config), "--check"], ["run", str(config)]):
        code, out = run(argv, capsys)
        assert code == 2 and "dpo: the 'zero-shot' prompt cannot be filled from the pairs" in out, out
        assert "{context}" in out and "Traceback" not in out


def test_a_hosted_templates_placeholders_are_checked_too(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FTKIT_TEST_KEY", "not-a-real-key")
    write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(8)])
    config = write_config(tmp_path, {
        "data": {"source": "qa.jsonl", "test_size": 2}, "task": "qa", "model": {"name": str(model_dir)}, "sft": None,
        "templates": [{"kind": "zero_shot"},
                      {"kind": "zero_shot", "name": "hosted", "instruction": "{passage}\n{prompt}",
                       "endpoint": {"model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "FTKIT_TEST_KEY"}}]})
    code, out = run(["run", str(config), "--check"], capsys)
    assert code == 2 and "templates: 'hosted': instruction uses {passage}" in out, out


def test_limit_bounds_the_dpo_pairs_too_and_ftkit_train_refuses_as_ftkit_run_does(model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "dpo", {"data": {"source": "support_routing"}, "model": {"name": str(model_dir)},
                                             "dpo": {"source": "support_routing_preferences"}})
    code, out = run(["run", str(config), "--check", "--limit", "3", "--max-steps", "1"], capsys)
    assert code == 0 and "DPO: from the SFT adapter on 3 pairs" in out, out

    write_jsonl(tmp_path / "code.jsonl", code_rows(10, 60))
    config = write_config(tmp_path, {"data": {"source": "code.jsonl", "test_size": 2}, "task": "code",
                                     "model": {"name": str(model_dir)}, "sft": {"max_length": 256}})
    code, out = run(["train", str(config)], capsys)
    assert code == 2 and "max_length=256" in out and not list((tmp_path / "runs").glob("*"))
