"""Nothing lost: a stopped or killed run resumes where it was, with the state it had."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ftkit.training.events import EventBus, StopFlag
from ftkit.models.loading import load_model
from ftkit.runs import list_runs, load_run
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address"),
    ("My parcel never came", "order_status"), ("Refund the double charge", "billing")]] * 3


def settings(**kw):
    # A decaying schedule and a step of two accumulated passes: every piece of state matters.
    base = dict(max_steps=5, batch_size=4, micro_batch_size=2, logging_steps=1, save_steps=1, learning_rate=5e-3,
                trl={"lr_scheduler_type": "linear"})
    return SFTSettings(**{**base, **kw})


def checkpoint_state(run, step):
    folder = run.checkpoints_dir / f"checkpoint-{step}"
    optimizer = torch.load(folder / "optimizer.pt", weights_only=False)
    scheduler = torch.load(folder / "scheduler.pt", weights_only=False)
    return load_file(folder / "adapter_model.safetensors"), optimizer["state"], scheduler


def test_stop_then_resume_restores_weights_optimizer_schedule_and_data_order(tiny_model_dir, tmp_path):
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    straight = train_sft(model, tok, ROWS, config=settings(), runs_root=tmp_path / "a")

    stop, bus = StopFlag(), EventBus()
    bus.on("log", lambda e: stop.set() if e["step"] == 2 else None)
    cut = train_sft(model, tok, ROWS, config=settings(), bus=bus, stop=stop, runs_root=tmp_path / "b")
    k = cut.status["step"]  # the stop lands after the step it was asked in (2) or the next one
    assert cut.status["status"] == "stopped" and 2 <= k <= 3
    resumed = train_sft(model, tok, ROWS, config=settings(), resume=cut)
    assert resumed.status["status"] == "completed" and resumed.status["step"] == 5

    adapter_a, moments_a, schedule_a = checkpoint_state(straight, k + 1)
    adapter_b, moments_b, schedule_b = checkpoint_state(resumed, k + 1)
    assert adapter_a.keys() == adapter_b.keys()
    for name in adapter_a:
        assert torch.allclose(adapter_a[name], adapter_b[name], atol=1e-6), name
    assert moments_a.keys() == moments_b.keys()
    for i in moments_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(moments_a[i][key], moments_b[i][key], atol=1e-7), (i, key)
        assert float(moments_a[i]["step"]) == float(moments_b[i]["step"]) == k + 1
    assert schedule_a["last_epoch"] == schedule_b["last_epoch"] and schedule_a["_last_lr"] == schedule_b["_last_lr"]
    # Same losses step by step: the resumed run saw the same batches in the same order.
    losses_a = [e["loss"] for e in straight.events("log")]
    losses_b = [e["loss"] for e in resumed.events("log")]
    assert [e["step"] for e in resumed.events("log")] == [1, 2, 3, 4, 5]
    assert losses_b == pytest.approx(losses_a, abs=1e-4)


CONFIG = """
data: {{source: {data}, test_size: 2, stratify_by: null}}
task: creative
model: {{name: {model}, device: cpu, dtype: float32}}
templates: [{{kind: zero_shot}}]
sft: {{name: killed, max_steps: {steps}, batch_size: 2, logging_steps: 1, save_steps: 5, learning_rate: 0.001}}
output: {{runs_root: {runs}}}
"""


def _ftkit(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ftkit", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_a_killed_run_reads_as_interrupted_and_resumes_to_its_planned_end(tiny_model_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({**r, "prompt": f"{r['prompt']} #{i}"}) + "\n" for i, r in enumerate(ROWS)))
    runs = tmp_path / "runs"
    steps = 60  # more than it reaches before the kill: the run is cut in the middle
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(data=data, model=tiny_model_dir, steps=steps, runs=runs))

    trainer = _ftkit("train", str(config))
    deadline = time.time() + 300
    run = None
    # Kill without warning as soon as the second checkpoint folder appears: most likely while it
    # is being written, so the resume must pass over a half-written checkpoint.
    while time.time() < deadline:
        found = list_runs(runs)
        if found and len(list(found[0].checkpoints_dir.glob("checkpoint-*"))) >= 2:
            run = found[0]
            break
        assert trainer.poll() is None, trainer.stdout.read()
        time.sleep(0.1)
    assert run is not None, "no checkpoint within the time limit"
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()

    killed = load_run(run.id, runs)
    status, checkpoint = killed.status, killed.last_checkpoint()  # the last one written in full
    assert status["status"] == "interrupted" and status["step"] >= 5
    assert status["pid"] == trainer.pid  # the record named the process that died
    listing = subprocess.run([sys.executable, "-m", "ftkit", "runs", "--root", str(runs)], capture_output=True,
                             text=True, timeout=120)
    line = next(x for x in listing.stdout.splitlines() if x.startswith(run.id))
    assert "interrupted" in line and str(status["step"]) in line.split()

    resumed = _ftkit("train", str(config), "--resume", run.id[:18])
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-3000:]
    assert [r.id for r in list_runs(runs)] == [run.id]  # the same record, not a new run
    done = load_run(run.id, runs)
    assert done.status["status"] == "completed" and done.status["step"] == steps
    assert [e["step"] for e in done.events("log")] == list(range(1, steps + 1))  # each step once
    assert len(done.events("resume")) == 1 and (done.adapter_dir / "adapter_model.safetensors").is_file()
    assert done.events("resume")[0]["step"] == int(checkpoint.name.split("-")[1]) >= 5


def test_resume_refuses_a_run_that_is_not_interrupted(tiny_model_dir, tmp_path):
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    runs = tmp_path / "runs"
    run = train_sft(model, tok, ROWS, config=settings(max_steps=1), runs_root=runs)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(data=data, model=tiny_model_dir, steps=1, runs=runs))
    from ftkit.cli import main

    assert main(["train", str(config), "--resume", run.id]) == 1
    assert main(["train", str(config), "--resume", "nope"]) == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times come from /proc")
def test_hostile_resume_accepts_a_running_record_whose_pid_now_belongs_to_another_process(tmp_path):
    from types import SimpleNamespace

    from ftkit.cli import _resumable
    from ftkit.runs import new_run, write_json

    run = new_run("cut", {"kind": "sft"}, root=tmp_path)
    run.record("log", {"step": 3, "loss": 1.0})
    config = SimpleNamespace(output=SimpleNamespace(runs_root=str(tmp_path)), dpo=None)
    with pytest.raises(ValueError, match="is running"):
        _resumable(config, run.id)  # its process (this one) still runs it
    # The trainer died and its pid went to another process (here: this one, started at another time).
    status = json.loads((run.path / "status.json").read_text())
    boot, ticks = status["process_start"].rsplit("/", 1)
    write_json(run.path / "status.json", {**status, "process_start": f"{boot}/{int(ticks) - 1}"})
    assert _resumable(config, run.id).status == {**status, "process_start": f"{boot}/{int(ticks) - 1}",
                                                 "status": "interrupted", "step": 3}
