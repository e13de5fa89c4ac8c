import json
import os
import time

import pytest

from ftkit.runs import Run, list_runs, load_run, new_run, sanitize_name, write_json


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


def test_repr_reads_nothing_from_the_run_folder(tmp_path, monkeypatch):
    import ftkit.runs

    run = new_run("quiet", {"kind": "sft"}, root=tmp_path)

    def no_io(*args, **kwargs):
        raise AssertionError("repr read the run folder")

    monkeypatch.setattr(ftkit.runs, "read_run_file", no_io)
    monkeypatch.setattr(ftkit.runs, "open_run_file", no_io)
    assert repr(run) == f"Run({run.id!r})"
    with pytest.raises(AssertionError, match="read the run folder"):
        run.status  # the status is read on request, not by repr


def test_the_record_and_a_single_process_import_no_heavy_library(tmp_path):
    """The record is what `ftkit runs` and the server extension load: it must not bring torch,
    transformers or accelerate (the main-process check reads the launcher's environment)."""
    import subprocess
    import sys

    code = ("import sys, ftkit.runs as r; run = r.new_run('light', {'kind': 'sft'}, root=sys.argv[1]); "
            "run.record('log', {'step': 1, 'loss': 1.0}); run.heartbeat(1); run.set_status('completed'); "
            "assert r.is_main_process() and r.list_runs(sys.argv[1])[0].events('log')[0]['loss'] == 1.0; "
            "print(r.fingerprint([{'prompt': 'a'}]), [m for m in ('torch', 'transformers', 'datasets', 'pandas', "
            "'trl', 'peft', 'accelerate') if m in sys.modules])")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    fingerprint, loaded = out.stdout.split(" ", 1)
    assert len(fingerprint) == 16 and loaded.strip() == "[]"


def test_fingerprint_reads_a_dataset_and_a_list_alike():
    from datasets import Dataset

    from ftkit.runs import fingerprint

    rows = [{"prompt": "hi", "completion": "hello"}, {"prompt": "bye", "completion": "later"}]
    assert fingerprint(Dataset.from_list(rows)) == fingerprint(rows) == fingerprint(iter(rows))
    assert fingerprint(rows[:1]) != fingerprint(rows)


def test_a_run_keeps_its_data_record_from_its_creation(tmp_path):
    record = {"version": 1, "source": {"given": "t.csv"}, "split": {"held_out_positions": [3, 1]}}
    run = new_run("with-data", {"kind": "sft"}, root=tmp_path, data=record)
    assert run.data == record and run.status["status"] == "running"  # written before the status
    assert new_run("without", {"kind": "sft"}, root=tmp_path).data is None
    run.record_data({**record, "task": {"name": "qa"}})
    assert load_run(run.id, tmp_path).data["task"] == {"name": "qa"}
    with pytest.raises(TypeError, match="a data record is a dict"):
        run.record_data([1, 2])


# --- a hostile or damaged run folder ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["not json", "a list", "huge", "symlink", "fifo"])
def test_hostile_a_damaged_data_json_is_refused_and_the_run_still_lists(tmp_path, capsys, kind):
    from ftkit.cli import main
    from ftkit.runs import RECORD_MAX_BYTES, RunFileError

    run = new_run("r", {"kind": "sft"}, root=tmp_path)
    run.set_status("completed", step=1)
    secret = tmp_path / "secret.json"
    secret.write_text('{"source": {"given": "SECRET"}}')
    path = run.path / "data.json"
    if kind == "not json":
        path.write_bytes(b"{'source': 1}")
    elif kind == "a list":
        path.write_bytes(b"[1]")
    elif kind == "huge":
        path.write_bytes(b"")
        os.truncate(path, RECORD_MAX_BYTES + 1)
    elif kind == "symlink":
        path.symlink_to(secret)
    else:
        os.mkfifo(path)
    error = _raised_within(5, lambda: run.data)
    expected = ValueError if kind in ("not json", "a list") else RunFileError
    assert isinstance(error, expected) and "data.json" in str(error) and "SECRET" not in str(error)
    assert [r.id for r in list_runs(tmp_path)] == [run.id] and run.status["status"] == "completed"
    assert main(["runs", "--root", str(tmp_path)]) == 0 and run.id in capsys.readouterr().out


@pytest.mark.parametrize("name, damage", [("config.json", b"{not json"), ("config.json", b"[]"),
                                          ("eval.json", b"\xff garbage"), ("events.jsonl", b"[" * 100_000)])
def test_hostile_one_malformed_record_marks_its_run_and_never_breaks_the_listing(tmp_path, capsys, name, damage):
    from ftkit.cli import main

    fine, broken = new_run("fine", {"kind": "sft"}, root=tmp_path), new_run("broken", {"kind": "sft"}, root=tmp_path)
    fine.set_status("completed", step=3)
    broken.set_status("completed", step=2)
    (broken.path / name).write_bytes(damage)
    assert sorted(r.id for r in list_runs(tmp_path)) == sorted([broken.id, fine.id])  # both listed
    assert repr(load_run(broken.id, tmp_path)) == f"Run({broken.id!r})"
    assert main(["runs", "--root", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {fine.id, broken.id} and lines[fine.id].split()[1:4] == ["sft", "completed", "3"]
    if name != "events.jsonl":  # a damaged line of events is skipped, the run reads on
        assert f"cannot be read: {name} " in lines[broken.id]

def test_hostile_malformed_status_json_marks_its_run_and_ftkit_runs_lists_the_others(tmp_path, capsys):
    from ftkit.cli import main

    fine, broken = new_run("fine", {"kind": "sft"}, root=tmp_path), new_run("broken", {"kind": "sft"}, root=tmp_path)
    fine.set_status("completed", step=3)
    (broken.path / "status.json").write_text("{'status': 'completed'}")  # edited by hand, Python-style
    assert broken.status == {"status": "unknown", "unreadable": "status.json is not valid JSON: Expecting property "
                             "name enclosed in double quotes: line 1 column 2 (char 1)"}
    assert main(["runs", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {fine.id, broken.id} and lines[fine.id].split()[1:4] == ["sft", "completed", "3"]
    assert "unknown" in lines[broken.id] and "status.json is not valid JSON: Expecting property" in lines[broken.id]


@pytest.mark.parametrize("damage", [b"", b"[1, 2]", b"\xff\xfe garbage", b"[" * 100_000,
                                    b'{"step": ' + b"9" * 5000 + b"}"])  # too deep, too long a number
def test_hostile_any_damaged_status_reads_as_unknown_with_the_reason(tmp_path, damage):
    run = new_run("r", {}, root=tmp_path)
    (run.path / "status.json").write_bytes(damage)
    status = run.status
    assert status["status"] == "unknown" and status["unreadable"].startswith("status.json")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder", "huge"])
def test_hostile_a_record_that_is_not_a_regular_file_is_refused_with_the_marker_unread(tmp_path, kind):
    from ftkit.runs import RECORD_MAX_BYTES, RunFileError, read_run_file

    run = new_run("r", {}, root=tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text('{"variant": "v", "metric": "SECRET", "value": 1}')
    path = run.path / "eval.json"
    if kind == "symlink":
        path.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open would wait for ever
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"")
        os.truncate(path, RECORD_MAX_BYTES + 1)
    why = {"symlink": "is a symbolic link", "fifo": "is a FIFO", "folder": "is a folder", "huge": "holds more than"}
    for read in (lambda: run.evaluation, lambda: read_run_file(run.path, "eval.json")):
        error = _raised_within(5, read)  # a read that waits on the FIFO fails here instead of hanging
        assert isinstance(error, RunFileError) and f"eval.json in run {run.id} {why[kind]}" in str(error)
        assert "SECRET" not in str(error)
    assert run.status["status"] == "running"  # the other records read as before


def _raised_within(seconds: float, fn) -> BaseException | None:
    """What ``fn()`` raised (None if nothing), run in a daemon thread; fails if it takes longer."""
    import threading

    box = {}

    def target():
        try:
            fn()
            box["error"] = None
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert "error" in box, f"the read still waits after {seconds} s"
    return box["error"]


def test_hostile_a_run_folder_that_is_a_symlink_is_not_read_through(tmp_path):
    from ftkit.runs import RunFileError

    elsewhere = new_run("elsewhere", {"secret": "SECRET"}, root=tmp_path / "outside")
    (tmp_path / "runs").mkdir()
    link = tmp_path / "runs" / elsewhere.id
    link.symlink_to(elsewhere.path, target_is_directory=True)
    with pytest.raises(RunFileError, match=f"run folder {elsewhere.id} is a symbolic link"):
        Run(link).config
    for read in (lambda run: run.events(), lambda run: run.events_since(0), lambda run: run.evaluation):
        with pytest.raises(RunFileError, match="is a symbolic link"):
            read(Run(link))
    assert Run(link).status["status"] == "unknown" and "symbolic link" in Run(link).status["unreadable"]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times come from /proc")
def test_hostile_a_reused_pid_reads_as_interrupted_and_an_old_record_keeps_todays_rule(tmp_path):
    import subprocess
    import sys

    from ftkit.runs import _process_start

    run = new_run("r", {}, root=tmp_path)
    run.record("log", {"step": 4, "loss": 1.0})
    recorded = json.loads((run.path / "status.json").read_text())
    assert recorded["pid"] == os.getpid() and recorded["process_start"] == _process_start(os.getpid())
    assert run.status["status"] == "running"
    # This process holds the recorded pid, but started at another time: the pid was given again.
    boot, ticks = recorded["process_start"].rsplit("/", 1)
    for other in (f"{boot}/{int(ticks) + 1}", f"another-boot/{ticks}"):  # later, or after a reboot
        write_json(run.path / "status.json", {**recorded, "process_start": other})
        assert run.status["status"] == "interrupted" and run.status["step"] == 4, other
    # Someone else's process with the recorded pid (pid 1, init): its start time says it is not ours.
    write_json(run.path / "status.json", {**recorded, "pid": 1})
    assert run.status["status"] == "interrupted"
    # A record from before the start time was kept: the pid alone decides, as it always did.
    write_json(run.path / "status.json", {k: v for k, v in recorded.items() if k != "process_start"})
    assert run.status["status"] == "running"
    # Another live process, recorded with its own start time: running.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_json(run.path / "status.json", {**recorded, "pid": child.pid, "process_start": _process_start(child.pid)})
        assert run.status["status"] == "running"
    finally:
        child.kill()
        child.wait()
    assert run.status["status"] == "interrupted"


def test_hostile_an_endless_line_in_events_is_skipped_so_a_follower_moves_on(tmp_path):
    from ftkit.runs import RECORD_MAX_BYTES

    run = new_run("r", {}, root=tmp_path)
    path = run.path / "events.jsonl"
    with open(path, "wb") as f:  # no newline for 20 MiB (sparse: zeros), then one honest event
        f.truncate(20 << 20)
        f.seek(0, 2)
        f.write(b'\n{"event": "log", "step": 1, "loss": 1.0}\n')
    events, offset, more = run.events_since(0, max_bytes=1 << 20)
    assert events == [] and offset == (1 << 20) + RECORD_MAX_BYTES and more  # read no more than that
    seen = []
    while more:  # a follower asks again at once, and reaches the event after the garbage
        events, offset, more = run.events_since(offset, max_bytes=1 << 20)
        seen += events
    assert seen == [{"event": "log", "step": 1, "loss": 1.0}] and offset == path.stat().st_size
