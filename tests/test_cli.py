import re

import pytest

from ftkit.cli import main
from ftkit.config import load_config
from ftkit.training.events import StopFlag
from ftkit.models.loading import load_model
from ftkit.runs import list_runs, new_run
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 2


def table_rows(out: str) -> dict[str, list[str]]:
    lines = re.split(r"^variant\s", out, maxsplit=1, flags=re.M)[1].splitlines()[1:]  # after the table's header
    rows = {}
    for line in lines:
        match = re.match(r"(.+?)\s+(\d\.\d\d)\s+(\d\.\d\d-\d\.\d\d)\s+(.*)$", line)
        if not match:
            break
        rows[match[1]] = [match[2], match[3], *match[4].split()]
    return rows


def test_demo_runs_prompts_sft_and_dpo_and_writes_a_self_contained_report(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--limit", "4", "--max-steps", "2",
                 "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "480 rows" in out and "Split: 384 train / 96 test rows, stratified by label; evaluating on 4" in out
    rows = table_rows(out)
    assert list(rows) == ["zero-shot", "8-shot", "retrieved 8-shot", "LoRA SFT", "SFT + DPO"]
    # Columns: metric, CI, macro_f1, invalid_rate, prompt_tokens, new_tokens, latency_s.
    assert float(rows["8-shot"][4]) > 3 * float(rows["zero-shot"][4])  # 8 solved examples cost tokens
    for name, cells in rows.items():
        low, high = map(float, cells[1].split("-"))
        assert low <= float(cells[0]) <= high, name
    assert "8-shot vs zero-shot on exact_match:" in out and "SFT + DPO vs zero-shot on exact_match:" in out

    page = (out_dir / "report.html").read_text()
    for section in ("Summary", "Metrics with 95% confidence intervals", "Accuracy against tokens per request",
                    "Training curves", "DPO rewards", "Training cost", "Side by side"):
        assert f"<h2>{section}</h2>" in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page) and not re.search(r"<link[^>]*>", page)
    assert f"Report: {out_dir / 'report.html'}" in out
    # The demo leaves the config it ran, ready for `ftkit run`.
    config = load_config(out_dir / "config.yaml")
    assert config.sft.max_minutes == 4 and config.dpo.source == "support_routing_preferences"
    assert {r.config["kind"]: r.status["status"] for r in list_runs(out_dir / "runs")} == \
           {"sft": "completed", "dpo": "completed"}


def test_runs_lists_a_stopped_and_a_finished_run_and_report_uses_them(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    settings = dict(max_steps=3, batch_size=4, logging_steps=1, save_steps=100)
    done = train_sft(model, tok, ROWS, config=SFTSettings(name="finished", **settings), runs_root=root)
    stop = StopFlag()
    stop.set()  # ends the run after its first step
    model2, tok2 = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    stopped = train_sft(model2, tok2, ROWS, config=SFTSettings(name="halted", **settings), stop=stop,
                        runs_root=root)
    capsys.readouterr()
    assert main(["runs", "--root", str(root)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines[done.id][1:4] == ["sft", "completed", "3"]
    assert lines[stopped.id][1:4] == ["sft", "stopped", "1"]

    report = tmp_path / "r.html"
    assert main(["report", done.id[:17], stopped.id, "--root", str(root), "--out", str(report)]) == 0
    page = report.read_text()
    assert "<h2>Training curves</h2>" in page and page.count(done.id) >= 2 and stopped.id in page


def test_report_refuses_a_run_still_running_and_names_unknown_ones(tmp_path, capsys):
    run = new_run("busy", {"kind": "sft"}, root=tmp_path)
    assert main(["report", run.id, "--root", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 1
    assert "still running" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
    assert main(["report", "nope", "--root", str(tmp_path)]) == 1
    assert "no run matches 'nope'" in capsys.readouterr().err


def test_report_evaluate_rescores_a_run_on_its_own_held_out_rows(tiny_model_dir, tmp_path, capsys):
    rows = "".join(f'{{"id": "t{i}", "text": "message {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20))
    (tmp_path / "rows.jsonl").write_text(rows)
    (tmp_path / "p.yaml").write_text(
        f"data: {{source: rows.jsonl, test_size: 6, limit: 4}}\nmodel: {{name: {tiny_model_dir}, device: cpu}}\n"
        "templates: [{kind: zero_shot}]\nmax_new_tokens: 4\n"
        "sft: {max_steps: 2, batch_size: 4, logging_steps: 1, save_steps: 100, max_length: 256}\n")
    assert main(["run", str(tmp_path / "p.yaml")]) == 0
    (run,) = list_runs(tmp_path / "runs")
    first = run.evaluation
    assert run.data["split"]["evaluated_rows"] == 4 and run.data["task"]["name"] == "classification"
    capsys.readouterr()

    report = tmp_path / "again.html"
    assert main(["report", run.id, "--root", str(tmp_path / "runs"), "--evaluate", "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert f"Evaluating {run.id} on the 4 held-out rows of {tmp_path / 'rows.jsonl'}" in out
    again = run.evaluation
    # The same rows, template and model as `ftkit run` scored: the same figure, now under the run's id.
    assert again["variant"] == run.id and again["test_rows"] == first["test_rows"] == 4
    assert again["metric"] == first["metric"] == "exact_match" and again["value"] == first["value"]
    page = report.read_text()
    assert "Side by side" in page and "reproduced from the data record" in page

    # A source that changed since: refused (exit 2, as for other data errors), naming both hashes.
    (tmp_path / "rows.jsonl").write_text(rows.replace("message 3", "message three"))
    assert main(["report", run.id, "--root", str(tmp_path / "runs"), "--evaluate", "--out", str(report)]) == 2
    err = capsys.readouterr().err
    assert "rows.jsonl changed since run" in err and run.data["source"]["sha256"] in err


def test_report_evaluate_on_a_run_without_a_data_record_says_what_to_do(tmp_path, capsys):
    run = new_run("old", {"kind": "sft"}, root=tmp_path)
    run.set_status("completed", step=1)
    assert main(["report", run.id, "--root", str(tmp_path), "--evaluate", "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert f"run {run.id} recorded no data (no data.json" in err and "Train it again with `ftkit run`" in err
    assert not (tmp_path / "r.html").exists()


def test_runs_on_an_empty_folder_says_so(tmp_path, capsys):
    assert main(["runs", "--root", str(tmp_path / "none")]) == 0
    assert "no runs under" in capsys.readouterr().out


def test_an_invalid_config_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import ftkit.pipeline

    loaded = []
    monkeypatch.setattr(ftkit.pipeline, "load_model", lambda *a, **k: loaded.append(a))
    (tmp_path / "p.yaml").write_text("model: {name: smollm2-135m-instruct, dtype: fp8}\n"
                                     "sft: {learnign_rate: 0.001}\n")
    assert main(["run", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "sft.learnign_rate: unknown key (did you mean 'learning_rate'?)" in err
    assert "model.dtype: 'fp8' is not allowed; choose one of: auto, float32, bfloat16, float16" in err
    assert loaded == []


def test_check_reads_the_data_then_measures_one_step_and_says_what_the_run_will_do(tiny_model_dir, tmp_path,
                                                                                   capsys):
    rows = "".join(f'{{"text": "message {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20))
    (tmp_path / "rows.jsonl").write_text(rows + '{"text": "Message 0 ", "label": "a"}\n')
    (tmp_path / "p.yaml").write_text(f"data: {{source: rows.jsonl, test_size: 4}}\nmodel: {{name: {tiny_model_dir}}}\n")
    assert main(["run", str(tmp_path / "p.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "21 rows" in out and "tokens per example" in out and "Split: 17 train / 4 test rows" in out
    assert "Leakage check: " in out and "valid (everything the run checks before training passed)" in out
    assert "SFT: LoRA on 17 rows" in out and re.search(r"SFT about \S+ \(\d+ step\(s\) at [\d.]+ s, one step measured here", out)
    assert not list((tmp_path / "runs").glob("*"))  # the measured step leaves no run behind


def test_check_finds_a_malformed_file_before_any_model_loads_and_says_it_once(tiny_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    import ftkit.models.loading

    monkeypatch.setattr(ftkit.models.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded for a broken file"))
    (tmp_path / "bad.csv").write_text('text,label\n"where is my order,order_status\nrefund please,refund\n')
    (tmp_path / "p.yaml").write_text(f"data: {{source: bad.csv}}\nmodel: {{name: {tiny_model_dir}}}\n")
    assert main(["run", str(tmp_path / "p.yaml"), "--check"]) == 2
    out, err = capsys.readouterr()
    assert "bad.csv is not valid CSV" in out and "NOT VALID" in out and "valid (" not in out
    assert (out + err).count("bad.csv is not valid CSV") == 1  # one error, said once


def test_a_split_that_leaks_is_reported(tiny_model_dir, tmp_path, capsys):
    rows = "".join(f'{{"text": "message {i % 6}", "label": "{"ab"[i % 2]}"}}\n' for i in range(24))
    (tmp_path / "rows.jsonl").write_text(rows)  # every message four times: a split cannot keep them apart
    (tmp_path / "p.yaml").write_text(f"data: {{source: rows.jsonl, test_size: 6}}\nmodel: {{name: {tiny_model_dir}}}\n")
    assert main(["run", str(tmp_path / "p.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Leakage check: \d of 6 held-out rows have a prompt that is also in the training rows", out)


def test_demo_rejects_an_unknown_example(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--example", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_demo_runs_the_story_on_another_task(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--task", "creative", "--model", str(tiny_model_dir), "--limit", "2",
                 "--max-steps", "1", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "(creative; headline metric all_rules:" in out and "LoRA SFT" in out
    assert "SFT + DPO" not in out  # no preference pairs for this example: no DPO stage
    saved = load_config(out_dir / "config.yaml")
    assert saved.task == "creative" and saved.data.source == "shop_blurbs" and saved.dpo is None
    assert "all_rules per variant" in (out_dir / "report.html").read_text()


def test_check_stops_on_a_missing_endpoint_key_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import ftkit.models.loading

    monkeypatch.delenv("FTKIT_TEST_NO_SUCH_KEY", raising=False)
    monkeypatch.setattr(ftkit.models.loading, "load_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was loaded"))
    config = tmp_path / "c.yaml"
    config.write_text("templates:\n  - {kind: zero_shot}\n"
                      "  - {kind: zero_shot, endpoint: {model: gpt-4o-mini, api_key_env: FTKIT_TEST_NO_SUCH_KEY}}\n")
    assert main(["run", str(config), "--check"]) == 2  # the run would refuse: --check says so, with exit 2
    out, err = capsys.readouterr()
    assert "ERROR: no API key for https://api.openai.com/v1" in out and "FTKIT_TEST_NO_SUCH_KEY" in out
    assert "NOT VALID" in out and "Traceback" not in out + err


def test_serve_is_a_command_with_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "RUN_OR_MODEL" in out and "--port" in out and "--host" in out and "checks no API key" in out


def test_export_writes_merged_weights_rescored_in_a_fresh_process_and_names_unknown_runs(tiny_model_dir, tmp_path,
                                                                                          capsys):
    import json

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    rows = [{"prompt": f"Where is order {i}?", "completion": "order_status"} for i in range(4)]
    run = train_sft(model, tok, rows, runs_root=tmp_path / "runs",
                    config=SFTSettings(max_steps=1, batch_size=2, save_steps=100))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = tmp_path / "merged"
    assert main(["export", run.id[:15], str(out), "--merged", "--check", str(held_out),
                 "--root", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert f"Exported {run.id} to {out}" in printed and (out / "config.json").is_file()
    [check] = run.export_checks
    assert check["kind"] == "merged" and check["rows"] == 2 and check["message"] in printed
    assert main(["export", "nope", str(tmp_path / "x"), "--root", str(tmp_path / "runs")]) == 1
    assert "nope" in capsys.readouterr().err


def test_export_gguf_with_quantized_types_prints_each_file_s_llamacpp_check(tiny_model_dir, tmp_path, capsys):
    import json

    from ftkit.export.llamacpp import llamacpp_available

    if not llamacpp_available():
        pytest.skip("llama.cpp is not installed (pip install 'ftkit[gguf]')")
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    rows = [{"prompt": f"Where is order {i}?", "completion": "order_status"} for i in range(4)]
    run = train_sft(model, tok, rows, runs_root=tmp_path / "runs",
                    config=SFTSettings(max_steps=1, batch_size=2, save_steps=100))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gguf"
    assert main(["export", run.id, str(out), "--gguf-type", "q8_0", "--root", str(tmp_path / "runs")]) == 2
    assert "--gguf-type writes quantized GGUF files: add --gguf" in capsys.readouterr().err
    assert main(["export", run.id, str(out), "--gguf", "--gguf-type", "q8_0", "--check", str(held_out),
                 "--root", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert (out / "model-q8_0.gguf").is_file()
    assert "f32 GGUF in llama.cpp: exact_match" in printed and "q8_0 GGUF in llama.cpp: exact_match" in printed
    assert "identical answers 4 of 4" in printed and "export (float32) checked in a fresh process" in printed
