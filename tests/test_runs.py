import json

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
