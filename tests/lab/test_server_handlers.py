"""ftkit's Jupyter Server extension (ftkit/lab/extension.py): its REST API on a real server.

The server is pytest-jupyter's (jp_serverapp, with the extension enabled through
jp_server_config); requests go through jp_fetch (it adds the token header) or, for requests that
must carry no token or a crafted path, straight through the test HTTP client.
"""

import base64
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
from traitlets.config import Config

from ftkit.runs import STOP_REQUEST, list_runs, new_run, write_json
from ftkit.lab.extension import RUN_ID, resolve_runs_dir

A, B = "20250101-120000-alpha", "20250102-093000-beta"
ENDPOINTS = [("GET", ""), ("GET", "/events"), ("GET", "/report"), ("POST", "/stop")]


@pytest.fixture
def server_settings() -> dict:
    return {}  # the default runs folder; a test parametrizes this to set c.FtkitServer.runs_dir


@pytest.fixture
def jp_server_config(server_settings):
    return Config({"ServerApp": {"jpserver_extensions": {"ftkit.lab.extension": True}}, **server_settings})


@pytest.fixture
def call(jp_serverapp, jp_fetch, jp_asyncio_loop):
    """``call(*parts, method=..., ...)`` -> the response, whatever its code; body parsed if JSON."""
    def fetch(*parts, **kw):
        if kw.get("method") == "POST":
            kw.setdefault("body", b"")
        response = jp_asyncio_loop.run_until_complete(jp_fetch("ftkit", "api", *parts, raise_error=False, **kw))
        return response, _json(response)
    return fetch


@pytest.fixture
def raw(jp_serverapp, http_server_client, jp_asyncio_loop, jp_base_url, jp_auth_header):
    """A request on a path sent exactly as written (no escaping); with the token unless ``auth=False``."""
    def fetch(path, method="GET", auth=True, headers=None, **kw):
        headers = {**(jp_auth_header if auth else {}), **(headers or {})}
        if method == "POST":
            kw.setdefault("body", b"")
        response = jp_asyncio_loop.run_until_complete(http_server_client.fetch(
            jp_base_url + path, method=method, headers=headers, raise_error=False, **kw))
        return response, _json(response)
    return fetch


def _json(response):
    if response.body and response.headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(response.body)
    return None


def make_run(runs: Path, run_id: str, status: str = "completed", losses=(), kind="sft", evaluation=None,
             name="alpha", max_steps=None) -> Path:
    """A run folder as the trainer leaves it, under a chosen id."""
    run = new_run(name, {"kind": kind, "settings": {"name": name, "max_steps": -1}, "device": "cpu"}, root=runs)
    folder = run.path.rename(runs / run_id)
    run.path = folder
    run.record("start", {"run_id": run_id, "step": 0, "max_steps": max_steps or 100})
    for step, loss in enumerate(losses, 1):
        run.record("log", {"step": step, "loss": loss})
    if status != "running":
        run.set_status(status, step=len(losses), max_steps=max_steps or 100)
    if evaluation:
        write_json(folder / "eval.json", evaluation)
    return folder


EVAL = {"variant": A, "metric": "exact_match", "value": 0.75, "test_rows": 8,
        "summary": [{"variant": A, "exact_match": 0.75, "n": 8}, {"variant": "zero-shot", "exact_match": 0.25, "n": 8}]}


def test_list_handler_returns_runs_newest_first_with_status_metric_and_last_losses(call, runs):
    make_run(runs, A, "completed", losses=[3.0 - 0.02 * i for i in range(60)], evaluation=EVAL)
    make_run(runs, B, "running", losses=[2.5, 2.4, float("nan")], name="beta", kind="dpo", max_steps=40)
    (runs / "notes").mkdir()
    (runs / "notes" / "config.json").write_text("{}")  # not a run id: never served, so never listed

    response, body = call("runs")
    assert response.code == 200 and response.headers["Content-Type"].startswith("application/json")
    assert body["runs_dir"] == str(runs.resolve())
    assert [r["id"] for r in body["runs"]] == [B, A]
    beta, alpha = body["runs"]
    assert {k: alpha[k] for k in ("name", "kind", "status", "step", "max_steps", "device", "metric")} == {
        "name": "alpha", "kind": "sft", "status": "completed", "step": 60, "max_steps": 100, "device": "cpu",
        "metric": {"name": "exact_match", "variant": A, "value": 0.75}}
    assert len(alpha["loss"]) == 50 and alpha["loss"][0] == [11, pytest.approx(2.8)] and alpha["loss"][-1][0] == 60
    assert isinstance(alpha["started"], float) and abs(alpha["started"] - time.time()) < 600
    # A running run (this process): the step it reached, the max_steps its start event announced,
    # and a diverged loss as null (JSON has no NaN).
    assert (beta["status"], beta["kind"], beta["step"], beta["max_steps"], beta["metric"]) == ("running", "dpo", 3, 40,
                                                                                                 None)
    assert beta["loss"] == [[1, 2.5], [2, 2.4], [3, None]] and beta["stop_requested"] is False


def test_tour_handler_lists_the_guided_notebooks_in_order_with_their_contents(call):
    from ftkit.lab.extension import tour_dir

    response, body = call("tour")
    names = [nb["name"] for nb in body["notebooks"]]
    assert response.code == 200 and names == sorted(p.name for p in tour_dir().glob("[0-9][0-9]_*.ipynb"))
    assert names[0] == "00_quickstart.ipynb" and "07_chat_and_code.ipynb" in names
    first = body["notebooks"][0]["content"]
    assert first["nbformat"] == 4 and first["cells"]  # the notebook itself, ready for the contents API


def test_kernels_started_by_the_server_record_runs_where_the_handlers_look(call, runs):
    import os

    response, body = call("runs")
    assert os.environ["FTKIT_RUNS"] == body["runs_dir"] == str(runs.resolve())  # kernels inherit it


def test_list_handler_with_no_runs_folder_lists_nothing(call, runs):
    response, body = call("runs")
    assert response.code == 200 and body == {"runs_dir": str(runs.resolve()), "runs": []}


def test_run_handler_returns_config_status_and_evaluation(call, runs):
    make_run(runs, A, "stopped", losses=[2.0, 1.5], evaluation=EVAL)
    response, body = call("runs", A)
    assert response.code == 200 and set(body) == {"id", "config", "status", "evaluation", "data"}
    assert body["id"] == A and body["config"]["kind"] == "sft" and body["evaluation"] == EVAL
    assert body["status"]["status"] == "stopped" and body["status"]["step"] == 2
    assert body["data"] is None  # a run that recorded no data: the compare notebook asks for its rows


def test_run_handler_sends_a_summary_of_the_data_record(call, runs, tmp_path):
    from ftkit.data.provenance import data_record, with_prompts
    from ftkit.runs import Run

    source = tmp_path / "tickets.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "text": f"m{i}", "label": "ab"[i % 2]}) + "\n"
                              for i in range(20)))
    record = with_prompts(data_record(str(source), test_size=0.25, seed=3, stratify_by="label", limit=4),
                          task="classification")
    Run(make_run(runs, A)).record_data(record)
    response, body = call("runs", A)
    assert response.code == 200
    data = body["data"]
    assert (data["source"], data["path"], data["sha256"], data["reproducible"]) == \
           (str(source), str(source), record["source"]["sha256"], True)
    assert (data["test_rows"], data["evaluated_rows"], data["seed"], data["stratify_by"], data["task"]) == \
           (5, 4, 3, "label", "classification")
    assert "held_out_positions" not in json.dumps(body)  # the summary only: positions can be many


def test_events_handler_reads_on_from_an_offset_and_holds_back_a_half_written_line(call, runs):
    folder = make_run(runs, A, "running", losses=[2.0, 1.9])
    response, body = call("runs", A, "events")
    assert response.code == 200 and [e["event"] for e in body["events"]] == ["start", "log", "log"]
    size = (folder / "events.jsonl").stat().st_size
    assert body["offset"] == size and body["more"] is False

    with open(folder / "events.jsonl", "a") as f:  # the trainer goes on: two lines and half a third
        f.write(json.dumps({"event": "log", "step": 3, "loss": 1.8}) + "\n")
        f.write(json.dumps({"event": "log", "step": 4, "loss": 1.7}) + "\n")
        f.write('{"event": "log", "step": 5, "lo')
    response, body = call("runs", A, "events", params={"offset": size})
    assert [e["step"] for e in body["events"]] == [3, 4]  # only the new ones, not the half line
    held = body["offset"]
    assert held == (folder / "events.jsonl").stat().st_size - len('{"event": "log", "step": 5, "lo')

    assert call("runs", A, "events", params={"offset": held})[1] == {"events": [], "offset": held, "more": False}
    with open(folder / "events.jsonl", "a") as f:
        f.write('ss": 1.6}\n')
    response, body = call("runs", A, "events", params={"offset": held})
    assert body["events"] == [{"event": "log", "step": 5, "loss": 1.6}]


@pytest.mark.parametrize("offset", ["-1", "abc", "1e3", "99999999", "\u00b2"])
def test_events_handler_refuses_a_bad_offset_with_400(call, runs, offset):
    make_run(runs, A, losses=[2.0])
    response, body = call("runs", A, "events", params={"offset": offset})
    assert response.code == 400 and "offset" in body["message"]


def _policy(response) -> dict[str, str]:
    parts = [p.strip().split(" ", 1) for p in response.headers["Content-Security-Policy"].split(";")]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


def test_report_handler_serves_the_escaped_report_with_only_its_own_scripts_allowed(call, runs):
    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    folder = make_run(runs, A, "completed", losses=[2.0, 1.5, 1.2], evaluation={
        **EVAL, "summary": [{"variant": hostile, "exact_match": 0.5, "n": 8}]})
    config = json.loads((folder / "config.json").read_text())
    write_json(folder / "config.json", {**config, "base_model": hostile})

    response = call("runs", A, "report")[0]
    page = response.body.decode()
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&lt;img src=x onerror" in page  # shown, as text
    assert "<img" not in page and "<script>alert" not in page  # in the tables and the charts' JSON alike
    policy = _policy(response)
    assert policy["default-src"] == "'none'" and "unsafe" not in policy["script-src"]
    assert policy["frame-ancestors"] == "'self'" and policy["sandbox"] == "allow-scripts allow-downloads"
    # The charts (plotly.js inlined) run: each inline script is allowed by its hash, and nothing else.
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.DOTALL)
    assert scripts and any("Plotly.newPlot" in s for s in scripts)
    allowed = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts}
    assert set(policy["script-src"].split()) == allowed
    assert '<meta http-equiv="Content-Security-Policy"' in page  # for a page shown through srcdoc


def test_report_handler_without_charts_allows_no_script(call, runs):
    make_run(runs, A, "completed")  # nothing logged, no evaluation: no chart
    response = call("runs", A, "report")[0]
    assert response.code == 200 and "<script" not in response.body.decode()
    assert _policy(response)["script-src"] == "'none'"


def test_stop_handler_writes_a_request_for_a_running_run_and_refuses_a_finished_one(call, runs, jp_serverapp):
    running = make_run(runs, A, "running", losses=[2.0])
    make_run(runs, B, "completed", losses=[2.0], name="beta")

    response, body = call("runs", A, "stop", method="POST")
    assert response.code == 202 and body == {"id": A, "stop_requested": True}
    request = json.loads((running / STOP_REQUEST).read_text())
    assert "JupyterLab" in request["by"] and request["pid"] == os.getpid() and time.time() - request["time"] < 60
    assert call("runs")[1]["runs"][1]["stop_requested"] is True

    response, body = call("runs", B, "stop", method="POST")
    assert response.code == 409 and f"run {B} is completed" in body["message"]
    assert not (runs / B / STOP_REQUEST).exists()


def test_stop_handler_stops_a_training_in_progress_after_its_step(call, runs, tiny_model_dir):
    from ftkit.training.events import EventBus
    from ftkit.models.loading import load_model
    from ftkit.training.sft import SFTSettings, train_sft

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    rows = [{"prompt": f"Where is my order {i}?", "completion": "order_status"} for i in range(8)]
    bus = EventBus()
    bus.on("log", lambda e: time.sleep(0.05))  # a slow subscriber (a chart): steps a human could stop
    done = {}
    settings = SFTSettings(max_steps=5000, max_minutes=0.5, batch_size=2, logging_steps=1, save_steps=100000)
    thread = threading.Thread(target=lambda: done.update(run=train_sft(model, tok, rows, config=settings, bus=bus,
                                                                         runs_root=runs)))
    thread.start()
    try:
        run = _wait_for_a_logged_step(runs)
        response, body = call("runs", run.id, "stop", method="POST")
        assert response.code == 202, body
        seen = run.events("log")[-1]["step"]
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive() and "run" in done
    status = done["run"].status
    assert status["status"] == "stopped" and status["step"] <= seen + 3
    assert "JupyterLab" in status["stop_request"]["by"]
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (run.checkpoints_dir / f"checkpoint-{status['step']}").is_dir()  # a resume starts right there


def _wait_for_a_logged_step(runs: Path, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list_runs(runs)
        if found and found[0].status.get("status") == "running" and found[0].events("log"):
            return found[0]
        time.sleep(0.02)
    raise AssertionError("the training logged no step in time")


# --- what must never be served -------------------------------------------------------------------

TRAVERSALS = [
    "nope", "20990101-000000-missing", "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc", "..%5c..%5cetc%5cpasswd", "%2fetc%2fpasswd", "%2Fetc", f"{A}%2f..%2f..%2fetc",
    f"{A}%00", f"{A}%0a", "20250101-120000-ALPHA", "20250101-120000-", "20250101-120000-%c3%a9",
]


@pytest.mark.parametrize("method, suffix", ENDPOINTS)
@pytest.mark.parametrize("run_id", TRAVERSALS)
def test_handlers_answer_json_404_for_unknown_ids_and_traversal(raw, runs, run_id, method, suffix):
    make_run(runs, A, "running", losses=[1.0])
    response, body = raw(f"ftkit/api/runs/{run_id}{suffix}", method=method)
    assert response.code == 404 and body is not None and "message" in body
    assert b"root:" not in response.body and not (runs.parent / STOP_REQUEST).exists()


@pytest.mark.parametrize("path", [
    "ftkit/api/runs/../../../etc/passwd", "ftkit/api/runs//etc/passwd", "ftkit/api/runs/%2e%2e/%2e%2e/etc/passwd",
    f"ftkit/api/runs/{A}/../../../etc/passwd", f"ftkit/api/runs/{A}/events/../../x", "ftkit/api/nothing",
    f"ftkit/api/runs/{A}/config.json", f"ftkit/api/runs/{A}/adapter",
])
def test_handlers_answer_json_404_for_paths_outside_the_api(raw, runs, path):
    make_run(runs, A, losses=[1.0])
    response, body = raw(path)
    assert response.code == 404 and body is not None and "message" in body and b"root:" not in response.body


def test_handlers_refuse_a_run_folder_that_is_a_symlink_out_of_the_runs_folder(raw, call, runs, tmp_path):
    make_run(runs, A, losses=[1.0])
    outside = make_run(tmp_path / "elsewhere", B, "running", losses=[1.0], name="beta")
    (runs / B).symlink_to(outside, target_is_directory=True)
    for method, suffix in ENDPOINTS:
        response, body = raw(f"ftkit/api/runs/{B}{suffix}", method=method)
        assert response.code == 404 and "message" in body, (method, suffix)
    assert [r["id"] for r in call("runs")[1]["runs"]] == [A]
    assert not (outside / STOP_REQUEST).exists()


@pytest.mark.parametrize("name", ["events.jsonl", "config.json", "status.json", "eval.json"])
def test_handlers_refuse_a_run_whose_file_is_a_symlink_out(raw, call, runs, tmp_path, name):
    secret = tmp_path / "secret.txt"
    secret.write_text('{"event": "log", "step": 1, "loss": 1.0, "secret": "root:x:0:0"}\n')
    folder = make_run(runs, A, "running", losses=[1.0])
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(secret)
    for method, suffix in ENDPOINTS:
        response, body = raw(f"ftkit/api/runs/{A}{suffix}", method=method)
        assert response.code == 404 and "message" in body and b"root:" not in response.body, (name, suffix)
    assert call("runs")[1]["runs"] == []


# --- authentication -------------------------------------------------------------------------------

@pytest.mark.parametrize("method, suffix", [("GET", "ftkit/api/runs"), ("GET", "ftkit/api/tour"),
                                            *[(m, f"ftkit/api/runs/{A}{s}") for m, s in ENDPOINTS]])
def test_every_handler_refuses_a_request_without_the_token(raw, runs, method, suffix):
    make_run(runs, A, "running", losses=[1.0])
    for headers in ({}, {"Authorization": "token wrong"}):
        response, _ = raw(suffix, method=method, auth=False, headers=headers)
        assert response.code in (401, 403), (suffix, headers)
        assert b"alpha" not in response.body and b"loss" not in response.body
    assert not (runs / A / STOP_REQUEST).exists()


def test_stop_handler_refuses_a_cookie_post_without_the_xsrf_token(raw, runs):
    make_run(runs, A, "running", losses=[1.0])
    # A browser holds the login cookie the server sets on a token-authenticated request...
    response, _ = raw("ftkit/api/runs")
    cookies = "; ".join(c.split(";", 1)[0] for c in response.headers.get_list("Set-Cookie"))
    assert cookies and raw("ftkit/api/runs", auth=False, headers={"Cookie": cookies})[0].code == 200
    # ...but a POST from a page on another site carries the cookie without the XSRF token.
    response, _ = raw(f"ftkit/api/runs/{A}/stop", method="POST", auth=False, headers={"Cookie": cookies})
    assert response.code == 403 and not (runs / A / STOP_REQUEST).exists()
    # JupyterLab sends the _xsrf cookie back as a header: accepted.
    xsrf = "0123456789abcdef0123456789abcdef"
    response, body = raw(f"ftkit/api/runs/{A}/stop", method="POST", auth=False,
                         headers={"Cookie": f"{cookies}; _xsrf={xsrf}", "X-XSRFToken": xsrf})
    assert response.code == 202 and body["stop_requested"] is True and (runs / A / STOP_REQUEST).exists()


# --- the settings ---------------------------------------------------------------------------------

def test_runs_folder_setting_handler_resolution(tmp_path):
    assert resolve_runs_dir("", "/srv/nb", environ={}) == Path("/srv/nb/runs")
    assert resolve_runs_dir("", "/srv/nb", environ={"FTKIT_RUNS": "shared/runs"}) == Path("/srv/nb/shared/runs")
    assert resolve_runs_dir("/data/runs", "/srv/nb", environ={"FTKIT_RUNS": "x"}) == Path("/data/runs")
    # Every id new_run can write is one the handlers serve, including a cut name and a second run.
    for name in ("Support SFT", "a" * 59 + " b", "x"):
        first, second = new_run(name, {}, root=tmp_path), new_run(name, {}, root=tmp_path)
        assert RUN_ID.fullmatch(first.id) and RUN_ID.fullmatch(second.id), (first.id, second.id)


@pytest.mark.parametrize("server_settings, runs_env, folder", [
    ({"FtkitServer": {"runs_dir": "configured"}}, "not-this", "configured"),  # the setting wins
    ({}, "from-env", "from-env"),
])
def test_runs_folder_handler_setting_from_the_server_config_or_environment(call, jp_root_dir, folder):
    make_run(jp_root_dir / folder, A, losses=[1.0])
    body = call("runs")[1]
    assert body["runs_dir"] == str((jp_root_dir / folder).resolve()) and [r["id"] for r in body["runs"]] == [A]
