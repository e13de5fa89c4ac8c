import json
import os
import time

import pytest

from ftkit.runs import list_runs, load_run, new_run, sanitize_name, write_json


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd", "etc-passwd"), ("My Run #2", "my-run-2"), ("", "run"), ("///", "run"),
    ("a" * 100, "a" * 60),
])
def test_run_names_cannot_escape_the_runs_folder(name, expected):
    assert sanitize_name(name) == expected


def test_new_run_records_config_status_and_events(tmp_path):
    run = new_run("../evil name", {"kind": "sft", "lr": 1e-3}, root=tmp_path)
    assert run.path.parent == tmp_path and run.id.endswith("-evil-name")
    assert run.config["lr"] == 1e-3 and "transformers" in run.config["versions"]
    assert run.status["status"] == "running"
    run.record("log", {"step": 1, "loss": 2.0})
    run.record("eval", {"step": 1, "eval_loss": 2.5})
    with open(run.path / "events.jsonl", "a") as f:
        f.write('{"event": "log", "step": 2, "lo')  # a line cut short by a crash
    assert [e["step"] for e in run.events("log")] == [1] and len(run.events()) == 2
    run.set_status("failed", error="boom")
    assert run.status["error"] == "boom"
    with pytest.raises(ValueError, match="status must be one of"):
        run.set_status("exploded")


def test_list_and_load_runs(tmp_path):
    a = new_run("alpha", {}, root=tmp_path)
    b = new_run("alpha", {}, root=tmp_path)  # same second, same name: a distinct folder
    assert a.id != b.id and {r.id for r in list_runs(tmp_path)} == {a.id, b.id}
    assert load_run(b.id, tmp_path).path == b.path
    with pytest.raises(KeyError, match="more than one run matches"):
        load_run(a.id[:8], tmp_path)
    with pytest.raises(KeyError, match="no run matches 'zzz'"):
        load_run("zzz", tmp_path)
    assert list_runs(tmp_path / "nowhere") == []


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_json(path, {"status": "running"})

    def broken(obj, f, **kw):
        f.write('{"status": "comp')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken)
    with pytest.raises(OSError):
        write_json(path, {"status": "completed"})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "running"}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left


def test_a_running_run_whose_process_died_reads_as_interrupted_with_its_last_step(tmp_path):
    import subprocess
    import sys

    run = new_run("r", {}, root=tmp_path)
    assert run.status["pid"] == os.getpid() and run.status["status"] == "running"  # this process: alive
    for step in (1, 2, 3):
        run.record("log", {"step": step, "loss": 1.0})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = json.loads((run.path / "status.json").read_text())
    write_json(run.path / "status.json", {**status, "pid": int(gone.stdout)})  # a process that has exited
    assert run.status == {**run.status, "status": "interrupted", "step": 3}
    write_json(run.path / "status.json", {**status, "host": "elsewhere", "heartbeat": time.time() - 3600})
    assert run.status["status"] == "interrupted"  # another machine: judged by the heartbeat's age
    write_json(run.path / "status.json", {**status, "host": "elsewhere", "heartbeat": time.time()})
    assert run.status["status"] == "running"


def test_a_resumed_record_keeps_each_step_once_and_skips_half_written_checkpoints(tmp_path):
    run = new_run("r", {}, root=tmp_path)
    for step in range(1, 8):  # the first stretch logged 7 steps; its last complete checkpoint was 5
        run.record("log", {"step": step, "loss": 1.0})
    for step, complete in ((5, True), (7, False)):
        folder = run.checkpoints_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text('{"global_step": 5}' if complete else '{"global_st')
    assert run.last_checkpoint().name == "checkpoint-5"  # 7 was cut short by the kill
    run.record("resume", {"step": 5})
    for step in range(6, 10):
        run.record("log", {"step": step, "loss": 0.5})
    logs = run.events("log")
    assert [e["step"] for e in logs] == list(range(1, 10))
    assert [e["loss"] for e in logs[5:]] == [0.5] * 4  # steps 6 and 7 as the resumed stretch logged them


def test_outcome_says_why_and_where_a_run_ended():
    from ftkit.runs import ENDED_BY, outcome

    assert ENDED_BY == ("time budget", "stop requested", "interrupted")
    budget = {"status": "completed", "step": 20, "max_steps": 40, "ended_by": "time budget"}
    assert outcome(budget) == "stopped by the time budget at step 20 of 40"
    assert outcome({"status": "completed", "step": 40, "max_steps": 40, "ended_by": None}) == "completed at step 40"
    # Early stopping: the trainer's own rule, not ftkit's, ended it before its planned steps.
    assert outcome({"status": "completed", "step": 12, "max_steps": 40}) == "completed at step 12 of 40"
    assert outcome({"status": "stopped", "step": 3, "max_steps": 6, "ended_by": "stop requested",
                    "stop_request": {"by": "alice from JupyterLab"}}) == \
        "stopped on request (by alice from JupyterLab) at step 3 of 6"
    assert outcome({"status": "stopped", "step": 3, "max_steps": 6, "ended_by": "interrupted"}) == \
        "stopped by a keyboard interrupt at step 3 of 6"
    assert outcome({"status": "stopped", "step": 3, "max_steps": 6}) == "stopped at step 3 of 6"  # an older record
    assert outcome({"status": "failed", "step": 2, "error": "x"}) == "failed at step 2"
    assert outcome({"status": "interrupted", "step": 5}) == \
        "interrupted (its process ended before the run did) at step 5"
    assert outcome({"status": "running"}) == "running" and outcome({}) == "unknown"


def test_a_finished_status_keeps_why_it_ended_and_reads_back_in_words(tmp_path):
    from ftkit.runs import outcome

    run = new_run("r", {}, root=tmp_path)
    run.set_status("completed", step=20, max_steps=40, ended_by="time budget")
    assert load_run(run.id, tmp_path).status["ended_by"] == "time budget"
    assert outcome(run.status) == "stopped by the time budget at step 20 of 40"
