"""A stop any process can ask for: Run.request_stop() writes a file in the run folder, the
training process (EventCallback, given the run) stops after its current step with the adapter
saved, and a resumed stretch does not stop at once because of the old request."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from ftkit.training.events import EventBus, EventCallback, StopFlag
from ftkit.runs import STOP_REQUEST, list_runs, load_run, new_run

ROWS = [{"prompt": f"Where is my order {i}?", "completion": "order_status"} for i in range(8)]
# Many steps and a time budget: the run ends by the request, or by the budget if it failed (the
# test then fails on the status instead of waiting for thousands of steps).
SETTINGS = {"max_steps": 5000, "max_minutes": 0.75, "batch_size": 2, "logging_steps": 1, "save_steps": 100000,
            "learning_rate": 1e-3}

# The training process: the tiny model, and a subscriber that takes 50 ms a step (as a live chart
# may), so that "a few steps" is a span a test on two slow cores can observe.
TRAIN = """
import time
from ftkit.training.events import EventBus
from ftkit.models.loading import load_model
from ftkit.training.sft import SFTSettings, train_sft
model, tok = load_model({model!r}, device="cpu", dtype="float32", verbose=False)
bus = EventBus()
bus.on("log", lambda e: time.sleep(0.05))
run = train_sft(model, tok, {rows!r}, config=SFTSettings(**{settings!r}), bus=bus, runs_root={runs!r})
print("STATUS", run.status["status"], run.status["step"])
"""


def test_a_stop_request_is_a_file_in_the_run_folder_that_can_be_cleared(tmp_path):
    run = new_run("r", {}, root=tmp_path)
    assert not run.stop_requested and run.stop_request is None
    run.request_stop(by="alice")
    request = json.loads((run.path / STOP_REQUEST).read_text())
    assert request["by"] == "alice" and request["pid"] == os.getpid() and time.time() - request["time"] < 60
    assert run.stop_requested and run.stop_request == request
    assert {p.name for p in run.path.iterdir()} == {"config.json", "status.json", STOP_REQUEST}  # no temp file
    run.clear_stop_request()
    run.clear_stop_request()  # twice: nothing to clear is fine
    assert not run.stop_requested


def _step(callback, step=1):
    state, control = TrainerState(global_step=step, max_steps=100), TrainerControl()
    callback.on_step_end(SimpleNamespace(device="cpu"), state, control)
    return control


def test_event_callback_given_the_run_stops_on_its_request_and_sets_the_flag(tmp_path):
    run, bus = new_run("r", {}, root=tmp_path), EventBus()
    with_run = EventCallback(bus, StopFlag(), run=run)
    without = EventCallback(bus, StopFlag(), run.id)  # the constructor as before: no run folder to look in
    for callback in (with_run, without):
        callback.on_train_begin(SimpleNamespace(device="cpu"), TrainerState(max_steps=100), TrainerControl())
    assert with_run.run_id == run.id and not _step(with_run).should_training_stop
    run.request_stop()
    control = _step(with_run, 2)
    assert control.should_training_stop and control.should_save and with_run.stop  # saved, marked stopped
    assert not _step(without, 2).should_training_stop and not without.stop


def test_a_stop_requested_from_another_process_ends_the_run_stopped_and_a_resume_goes_on(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    code = TRAIN.format(model=str(tiny_model_dir), rows=ROWS, settings=SETTINGS, runs=str(runs))
    trainer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        run = _wait_for_a_logged_step(runs, trainer)
        run.request_stop(by="the test")
        seen = run.events("log")[-1]["step"]  # at least the step in progress when it was asked
        out, _ = trainer.communicate(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert trainer.returncode == 0, out[-3000:]
    stopped = load_run(run.id, runs)
    status = stopped.status
    # Checked at the end of each step: the step running when the request came, and at most the
    # next one if the request landed between that check and the log this test read.
    assert status["status"] == "stopped" and seen <= status["step"] <= seen + 2, (seen, status)
    assert status["stop_request"]["by"] == "the test"
    assert stopped.events("end")[-1] == {**stopped.events("end")[-1], "status": "stopped", "step": status["step"]}
    assert (stopped.adapter_dir / "adapter_model.safetensors").is_file()
    assert stopped.last_checkpoint().name == f"checkpoint-{status['step']}"  # as StopFlag: resumable right there

    # Resumed (here, in this process), it clears the old request and trains on.
    from ftkit.models.loading import load_model
    from ftkit.training.sft import SFTSettings, train_sft

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    k, flag, bus = status["step"], StopFlag(), EventBus()
    bus.on("log", lambda e: flag.set() if e["step"] >= k + 3 else None)
    resumed = train_sft(model, tok, ROWS, config=SFTSettings(**SETTINGS), bus=bus, stop=flag, resume=stopped)
    assert not resumed.stop_requested and "stop_request" not in resumed.status
    assert resumed.status["status"] == "stopped" and k + 3 <= resumed.status["step"] <= k + 4
    assert [e["step"] for e in resumed.events("log")][k - 1:k + 3] == [k, k + 1, k + 2, k + 3]


def _wait_for_a_logged_step(runs, process, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list_runs(runs)
        if found and found[0].status.get("status") == "running" and found[0].events("log"):
            return found[0]
        assert process.poll() is None, process.stdout.read()[-3000:]
        time.sleep(0.02)
    raise AssertionError("the training process logged no step in time")


def test_hostile_a_stop_request_is_neither_written_nor_read_through_a_symbolic_link(tmp_path):
    from ftkit.runs import Run, RunFileError

    run = new_run("r", {}, root=tmp_path / "runs")
    outside = tmp_path / "outside"
    outside.mkdir()
    # A run folder swapped for a link out of the runs folder: the request is not written there.
    real = run.path.rename(tmp_path / "moved")
    run.path.symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunFileError, match="is a symbolic link"):
        Run(run.path).request_stop(by="alice")
    assert list(outside.iterdir()) == []
    # A stop request that is a link (to a request elsewhere) is none, and is not read.
    run.path.unlink()
    real.rename(run.path)
    (outside / STOP_REQUEST).write_text(json.dumps({"by": "SECRET", "time": 0}))
    (run.path / STOP_REQUEST).symlink_to(outside / STOP_REQUEST)
    assert not run.stop_requested and run.stop_request is None
