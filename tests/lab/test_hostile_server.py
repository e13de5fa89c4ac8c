"""The server extension against a hostile runs folder: anyone who can write into it (a shared
folder, a run folder copied from someone else) can put symbolic links, FIFOs, folders, huge or
garbage files there, and swap them while the server reads.

What must hold: no answer ever carries a file from outside the run folder, nothing blocks the
server's event loop (JupyterLab's own /api/status keeps answering), a damaged run is marked and
never hides the others, and the server's Authorizer decides who may stop a run. The reads
themselves (ftkit.runs.Run over open_run_file) are fuzzed with hypothesis at the end.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_server.auth.authorizer import Authorizer
from traitlets.config import Config

from ftkit.runs import DATA, EXPORT_CHECK, STOP_REQUEST, Run, RunFileError, new_run, read_run_file

A, B = "20250101-120000-alpha", "20250102-093000-beta"
SECRET = "root:x:0:0:SECRET"  # what a file outside the runs folder holds; never in any answer


class ReadOnlyAuthorizer(Authorizer):
    """A deployment whose users may look (``read``) but not act (``write``, ``execute``)."""

    asked: list = []

    def is_authorized(self, handler, user, action, resource):
        ReadOnlyAuthorizer.asked.append((handler.request.method, action, resource))
        return action == "read"


@pytest.fixture
def server_settings() -> dict:
    return {}


@pytest.fixture
def jp_server_config(server_settings):
    return Config({"ServerApp": {"jpserver_extensions": {"ftkit.lab.extension": True}, **server_settings}})


@pytest.fixture
def call(jp_serverapp, jp_fetch, jp_asyncio_loop):
    """``call(*parts, method=..., ...)`` -> (response, parsed JSON body or None), whatever the code."""
    def fetch(*parts, **kw):
        if kw.get("method") == "POST":
            kw.setdefault("body", b"")
        response = jp_asyncio_loop.run_until_complete(jp_fetch(*parts, raise_error=False, **kw))
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return response, json.loads(response.body) if response.body and is_json else None
    return fetch


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the runs folder, shaped like every record, so a followed link would parse."""
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"event": "log", "step": 1, "loss": 1.0, "status": "running", "metric": SECRET,
                                "value": 1.0, "variant": SECRET, "secret": SECRET,
                                "checks": [{"kind": "merged", "dtype": SECRET, "passed": True}]}) + "\n")
    return path


def make_run(runs: Path, run_id: str, status: str = "completed", losses=(1.0, 0.9)) -> Path:
    """A run folder as the trainer leaves it, under a chosen id."""
    run = new_run("alpha", {"kind": "sft", "settings": {"name": run_id[16:], "max_steps": 10}, "device": "cpu"},
                  root=runs)
    run.path = run.path.rename(runs / run_id)
    run.record("start", {"step": 0, "max_steps": 10})
    for step, loss in enumerate(losses, 1):
        run.record("log", {"step": step, "loss": loss})
    if status != "running":
        run.set_status(status, step=len(losses), max_steps=10)
    return run.path


# --- 1. a record that is a symbolic link out ---------------------------------------------------------

def test_hostile_export_check_symlink_out_is_never_shown(call, runs, secret):
    folder = make_run(runs, A)
    (folder / EXPORT_CHECK).symlink_to(secret)
    response, _ = call("ftkit", "api", "runs", A, "report")
    assert response.code == 404 and SECRET.encode() not in response.body
    assert [r["id"] for r in call("ftkit", "api", "runs")[1]["runs"]] == []  # not listed either
    with pytest.raises(RunFileError, match="export-check.json in run .* is a symbolic link"):
        Run(folder).export_checks  # the record refuses it too, whoever asks


# --- 2. a file swapped between a regular file and a link while the sidebar polls -----------------

SWAPPER = """
import os, shutil, sys
folder, name, outside = sys.argv[1:]
while True:
    os.symlink(outside, os.path.join(folder, ".link"))
    os.replace(os.path.join(folder, ".link"), os.path.join(folder, name))
    shutil.copy(os.path.join(folder, f".{name}.inside"), os.path.join(folder, ".file"))
    os.replace(os.path.join(folder, ".file"), os.path.join(folder, name))
"""


@pytest.mark.parametrize("name, route", [("events.jsonl", ("events",)), ("eval.json", ())])
def test_hostile_file_swapped_for_a_symlink_while_polled_never_serves_the_outside_file(call, runs, secret,
                                                                                        name, route):
    folder = make_run(runs, A)
    inside = (folder / "events.jsonl").read_bytes() if name == "events.jsonl" else \
        json.dumps({"variant": A, "metric": "exact_match", "value": 0.5}).encode()
    (folder / f".{name}.inside").write_bytes(inside)
    # Another process, as a hostile writer would be: it swaps with atomic renames, as fast as it can.
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(folder), name, str(secret)])
    try:
        answers = [call("ftkit", "api", "runs", A, *route)[0] for _ in range(200)]
    finally:
        swapper.kill()
        swapper.wait()
    leaked = [r for r in answers if SECRET.encode() in r.body]
    assert not leaked, f"{len(leaked)} of {len(answers)} answers held the outside file"
    assert {r.code for r in answers} <= {200, 404}


@pytest.mark.parametrize("name, route", [("events.jsonl", ("events",)), ("eval.json", ()),
                                         ("status.json", ()), (EXPORT_CHECK, ("report",))])
def test_hostile_file_swapped_for_a_symlink_right_after_the_check_is_not_followed(call, runs, secret, monkeypatch,
                                                                                  name, route):
    import ftkit.lab.extension

    folder = make_run(runs, A)
    found = ftkit.lab.extension.find_run

    def find_then_swap(base, run_id):  # the worst moment for a swap: between the check and the read
        run = found(base, run_id)
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(secret)
        return run

    monkeypatch.setattr(ftkit.lab.extension, "find_run", find_then_swap)
    response, _ = call("ftkit", "api", "runs", A, *route)
    assert SECRET.encode() not in response.body and response.code in (200, 404)


# --- 3. a FIFO must not block the server ---------------------------------------------------------

@pytest.mark.parametrize("name, route", [("eval.json", ()), ("events.jsonl", ("events",))])
def test_hostile_fifo_in_a_run_folder_never_blocks_the_server(jp_fetch, jp_asyncio_loop, runs, name, route):
    folder = make_run(runs, A)
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    finished = threading.Event()

    def unblock():
        # A reader that opened the FIFO waits for a writer: be that writer after 5 s, so a server
        # that blocks on it is late (and the test fails) instead of hanging for ever.
        if finished.wait(5):
            return
        while not finished.is_set():
            try:
                os.close(os.open(folder / name, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (yet)
                time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()

    async def scenario():
        started = time.monotonic()
        read = asyncio.ensure_future(jp_fetch("ftkit", "api", "runs", A, *route, raise_error=False))
        await asyncio.sleep(0.05)  # the read is on its way in the server
        status = await jp_fetch("api", "status", raise_error=False)  # JupyterLab's own API
        took = time.monotonic() - started
        return await read, status, took

    try:
        read, status, took = jp_asyncio_loop.run_until_complete(asyncio.wait_for(scenario(), 60))
    finally:
        finished.set()
    assert status.code == 200 and took < 3, f"/api/status answered after {took:.1f} s"
    assert read.code == 404  # a FIFO is no record: the run is not served


# --- 4. the server's Authorizer decides who may stop a run ----------------------------------------

@pytest.mark.parametrize("server_settings", [{"authorizer_class": ReadOnlyAuthorizer}])
def test_hostile_read_only_users_can_list_and_read_but_not_stop(call, runs):
    make_run(runs, A, "running")
    ReadOnlyAuthorizer.asked.clear()
    for route in (("runs",), ("runs", A), ("runs", A, "events"), ("runs", A, "report"), ("tour",)):
        assert call("ftkit", "api", *route)[0].code == 200, route
    response, _ = call("ftkit", "api", "runs", A, "stop", method="POST")
    assert response.code == 403 and not (runs / A / STOP_REQUEST).exists()
    assert ("POST", "write", "ftkit") in ReadOnlyAuthorizer.asked
    assert {a for a in ReadOnlyAuthorizer.asked if a[0] == "GET"} == {("GET", "read", "ftkit")}


# --- 5. a damaged status.json marks its run and hides no other -----------------------------------

def test_hostile_malformed_status_marks_its_run_in_the_listing_and_the_others_are_listed(call, runs):
    make_run(runs, A)
    make_run(runs, B)
    (runs / B / "status.json").write_text("{'status': 'completed'}")
    response, body = call("ftkit", "api", "runs")
    assert response.code == 200 and [r["id"] for r in body["runs"]] == [B, A]
    broken, fine = body["runs"]
    assert broken["status"] == "unknown" and broken["error"].startswith("status.json is not valid JSON: Expecting")
    assert fine["status"] == "completed" and "error" not in fine
    detail = call("ftkit", "api", "runs", B)[1]
    assert detail["status"]["unreadable"].startswith("status.json is not valid JSON")


@pytest.mark.parametrize("name, damage, says", [("config.json", "{not json", "config.json is not valid JSON"),
                                                ("config.json", "[1]", "config.json holds a JSON list"),
                                                ("eval.json", "{'metric': 1}", "eval.json is not valid JSON")])
def test_hostile_malformed_config_or_evaluation_marks_its_run_in_the_listing_and_the_others_are_listed(
        call, runs, name, damage, says):
    make_run(runs, A)
    make_run(runs, B)
    (runs / B / name).write_text(damage)
    response, body = call("ftkit", "api", "runs")
    assert response.code == 200 and [r["id"] for r in body["runs"]] == [B, A]
    broken, fine = body["runs"]
    assert broken["status"] == "unknown" and says in broken["error"] and "error" not in fine
    assert fine["status"] == "completed"


@pytest.mark.parametrize("damage", ["{'source': 1}", "[1]", "huge"])
def test_hostile_a_damaged_data_record_leaves_the_run_listed_with_a_note(call, runs, damage):
    from ftkit.runs import RECORD_MAX_BYTES

    make_run(runs, A)
    path = runs / A / "data.json"
    if damage == "huge":  # sparse: past the cap without a byte written
        path.write_bytes(b"")
        os.truncate(path, RECORD_MAX_BYTES + 1)
    else:
        path.write_text(damage)
    response, body = call("ftkit", "api", "runs")
    assert response.code == 200 and [r["id"] for r in body["runs"]] == [A] and "error" not in body["runs"][0]
    response, detail = call("ftkit", "api", "runs", A)
    assert response.code == 200 and detail["status"]["status"] == "completed" and detail["data"] is None
    says = "holds more than" if damage == "huge" else "data.json"
    assert says in detail["data_note"] and "cannot be reproduced" in detail["data_note"]


def test_loading_the_server_extension_imports_no_model_library(tmp_path):
    """The Jupyter server's process loads the extension at start-up and serves the runs (listing,
    detail, report page) without torch, transformers or the rest: they load with a model, never here."""
    make_run(tmp_path / "runs", A)
    code = """
import logging, sys
from pathlib import Path
from traitlets.config import Configurable
import ftkit.lab.extension as ext
from ftkit.lab.summaries import find_run, render_run_report, run_detail, runs_payload

class App(Configurable):
    pass

app = App()
app.root_dir, app.log = sys.argv[1], logging.getLogger("test")
routes = []
app.web_app = type("WebApp", (), {"settings": {"base_url": "/"}, "add_handlers": lambda self, host, r: routes.extend(r)})()
ext._load_jupyter_server_extension(app)
base = app.web_app.settings["ftkit_runs_dir"]
assert len(routes) == 7 and [r["id"] for r in runs_payload(base)["runs"]] == [sys.argv[2]]
run = find_run(base, sys.argv[2])
assert run_detail(run)["status"]["status"] == "completed" and "<html" in render_run_report(run)[0]
print([m for m in ("torch", "transformers", "datasets", "trl", "peft", "accelerate") if m in sys.modules])
"""
    env = {k: v for k, v in os.environ.items() if k != "FTKIT_RUNS"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), A], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the reads, fuzzed ---------------------------------------------------------------------------

# What the server reads in a run folder, and what an honest one holds.
HONEST = {
    "config.json": b'{"kind": "sft", "settings": {"name": "x"}, "device": "cpu", "INSIDE": 1}',
    "status.json": b'{"status": "completed", "step": 2, "INSIDE": 1}',
    "events.jsonl": b'{"event": "log", "step": 1, "loss": 1.0, "INSIDE": 1}\n',
    "eval.json": b'{"variant": "v", "metric": "m", "value": 0.5, "INSIDE": 1}',
    EXPORT_CHECK: b'{"checks": [{"kind": "merged", "INSIDE": 1}]}',
    STOP_REQUEST: b'{"by": "alice", "INSIDE": 1}',
    DATA: b'{"version": 1, "source": {"given": "t.csv", "INSIDE": 1}, "split": {"test_rows": 2}}',
}
KINDS = ["absent", "honest", "garbage", "huge", "folder", "fifo", "link inside", "link outside", "dangling link",
         "swapped"]
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _place(folder: Path, name: str, kind: str, garbage: bytes, outside: Path) -> None:
    path = folder / name
    if kind in ("honest", "swapped"):
        path.write_bytes(HONEST[name])
    elif kind == "garbage":
        path.write_bytes(garbage)
    elif kind == "huge":  # sparse: past every cap without a byte written
        path.write_bytes(b"")
        os.truncate(path, (1 << 28) + 1)
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link inside":
        (folder / f"real-{name}").write_bytes(HONEST[name])
        path.symlink_to(folder / f"real-{name}")
    elif kind == "link outside":
        path.symlink_to(outside / name)
    elif kind == "dangling link":
        path.symlink_to(outside / "nothing-here")


def _swapper(folder: Path, names: list[str], outside: Path, done: threading.Event) -> None:
    while not done.is_set():
        for name in names:
            os.symlink(outside / name, folder / f".{name}.link")
            os.replace(folder / f".{name}.link", folder / name)
            (folder / f".{name}.file").write_bytes(HONEST[name])
            os.replace(folder / f".{name}.file", folder / name)


def _within(seconds: float, fn):
    """``fn()``'s outcome, ("ok", value) or ("raised", exception), from a daemon thread; a read
    still blocked after ``seconds`` fails the test (and its thread is left to the exit)."""
    box = {}

    def target():
        try:
            box["out"] = ("ok", fn())
        except BaseException as err:  # noqa: BLE001 - handed to the test, which judges it
            box["out"] = ("raised", err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert "out" in box, f"{getattr(fn, '__name__', fn)} blocked for more than {seconds} s"
    return box["out"]


READERS = {
    "config": lambda run: run.config, "status": lambda run: run.status, "events": lambda run: run.events(),
    "events_since": lambda run: run.events_since(0), "evaluation": lambda run: run.evaluation,
    "export_checks": lambda run: run.export_checks, "stop_request": lambda run: run.stop_request,
    "stop_requested": lambda run: run.stop_requested, "data": lambda run: run.data,
    "read_run_file": lambda run: read_run_file(run.path, "status.json"),
}


@FUZZ
@given(kinds=st.fixed_dictionaries({name: st.sampled_from(KINDS) for name in HONEST}),
       garbage=st.binary(max_size=300), folder_is_link=st.booleans())
def test_hostile_fuzzed_run_folders_never_leak_block_or_raise_other_than_the_marker(kinds, garbage,
                                                                                     folder_is_link):
    from ftkit.lab.summaries import find_run, runs_payload

    with tempfile.TemporaryDirectory() as tmp:
        base, outside = Path(tmp) / "runs", Path(tmp) / "outside"
        base.mkdir()
        outside.mkdir()
        for name, content in HONEST.items():  # outside: the same records, each marked as a secret
            (outside / name).write_bytes(content.replace(b'"INSIDE"', f'"{SECRET}"'.encode()))
        real = outside / A if folder_is_link else base / A
        real.mkdir()
        if folder_is_link:  # the run folder itself a link out of the runs folder
            (base / A).symlink_to(real, target_is_directory=True)
        for name, kind in kinds.items():
            _place(real, name, kind, garbage, outside)
        done = threading.Event()
        swapped = [name for name, kind in kinds.items() if kind == "swapped"]
        swapper = threading.Thread(target=_swapper, args=(real, swapped, outside, done), daemon=True)
        swapper.start()
        try:
            run = Run(base / A)
            outcomes = {what: _within(5, lambda read=read: read(run)) for what, read in READERS.items()}
            outcomes["find_run"] = _within(5, lambda: find_run(base, A))
            outcomes["listing"] = _within(5, lambda: runs_payload(base))
        finally:
            done.set()
            swapper.join(timeout=10)

    for what, (how, value) in outcomes.items():
        assert SECRET not in repr(value), (what, kinds)
        if folder_is_link:  # then even the honest records lie outside the runs folder
            assert "INSIDE" not in repr(value), (what, kinds)
        if how == "raised":  # only the documented ones: absent, not a regular file, not JSON
            assert isinstance(value, (FileNotFoundError, RunFileError, ValueError)), (what, kinds, value)
            assert what not in ("status", "stop_request", "stop_requested", "find_run", "listing"), (what, value)
    if folder_is_link:
        assert outcomes["find_run"] == ("ok", None) and outcomes["listing"][1]["runs"] == []
        assert outcomes["config"][0] == "raised" and outcomes["status"][1]["status"] == "unknown"
