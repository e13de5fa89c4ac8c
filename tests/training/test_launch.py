import json

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from ftkit.cli import main
from ftkit.training.launch import accelerate_config, write_launch
from ftkit.runs import list_runs


@pytest.mark.parametrize("gpus, strategy, distributed, section", [
    (4, "ddp", "MULTI_GPU", None), (1, "ddp", "NO", None), (8, "fsdp", "FSDP", "fsdp_config"),
    (2, "deepspeed", "DEEPSPEED", "deepspeed_config"), (0, "fsdp", "NO", None),
])
def test_written_config_is_one_accelerate_itself_reads(tmp_path, gpus, strategy, distributed, section):
    plan = write_launch(tmp_path / "p.yaml", tmp_path / "launch", gpus=gpus, strategy=strategy,
                        gradient_accumulation_steps=4)
    loaded = load_config_from_file(str(plan.accelerate_config))  # raises on unknown keys
    assert loaded.distributed_type.value == distributed and loaded.num_processes == max(gpus, 1)
    assert loaded.use_cpu is (gpus == 0) and loaded.mixed_precision == ("no" if gpus == 0 else "bf16")
    for name in ("fsdp_config", "deepspeed_config"):
        assert bool(getattr(loaded, name)) is (name == section)
    if section == "deepspeed_config":
        assert loaded.deepspeed_config["zero_stage"] == 3
        assert loaded.deepspeed_config["gradient_accumulation_steps"] == 4
    if section == "fsdp_config":
        assert loaded.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plan.command[:4] == ["accelerate", "launch", "--config_file", str(plan.accelerate_config.resolve())]
    assert plan.command[4:7] == ["-m", "ftkit.cli", "train"] and plan.command[-1] == str(tmp_path / "p.yaml")
    assert plan.shell in plan.script.read_text()


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="choose one of: ddp, fsdp, deepspeed"):
        accelerate_config(2, "zero")
    with pytest.raises(ValueError, match="choose one of: no, bf16, fp16"):
        accelerate_config(2, "ddp", "fp8")
    with pytest.raises(ValueError, match="gpus must be 0"):
        accelerate_config(-1)


def write_training_config(tmp_path, model_dir, rows_per_label: int, **sft):
    """A pipeline config over small two-label data, training only (4 rows held out)."""
    rows = [{"text": f"message {i} about {label}", "label": label} for label in "ab" for i in range(rows_per_label)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "d.jsonl", "test_size": 4}, "model": {"name": str(model_dir), "device": "cpu"},
        "sft": {"max_length": 512, "logging_steps": 1, **sft}, "output": {"runs_root": str(tmp_path / "runs")},
    }))
    return config


def test_launch_runs_the_training_on_one_cpu_process_and_records_the_run(tmp_path, tiny_model_dir, capsys):
    config = write_training_config(tmp_path, tiny_model_dir, 6, max_steps=2, batch_size=4, save_steps=100)
    assert main(["launch", str(config), "--gpus", "0", "--out", str(tmp_path / "launch"), "--run"]) == 0
    assert "accelerate launch --config_file" in capsys.readouterr().out
    (run,) = list_runs(tmp_path / "runs")
    assert run.config["kind"] == "sft" and run.config["train_rows"] == 8  # the test rows stay held out
    assert run.status["status"] == "completed" and run.status["step"] == 2
    assert [e["step"] for e in run.events("log")] == [1, 2]
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_launch_refuses_an_invalid_config_before_writing_anything(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("sft: {epochz: 2}\n")
    assert main(["launch", str(tmp_path / "p.yaml"), "--gpus", "2", "--out", str(tmp_path / "launch")]) == 2
    assert "sft.epochz: unknown key (did you mean 'epochs'?)" in capsys.readouterr().err
    assert not (tmp_path / "launch").exists()


def test_two_processes_train_one_run_recorded_once(tmp_path, tiny_model_dir):
    """Two processes of one launch share one run folder; the main process writes the record."""
    import socket
    import subprocess
    import sys

    config = write_training_config(tmp_path, tiny_model_dir, 8, max_steps=3, batch_size=2, save_steps=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # accelerate launch --cpu starts one process without MPI; torchrun starts two, and the
    # trainer joins them through accelerate as it does under accelerate launch on GPUs.
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), "-m", "ftkit.cli", "train", str(config)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = list_runs(tmp_path / "runs")  # one folder, not one per process
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.id]
    assert run.status["status"] == "completed" and run.status["step"] == 3
    assert [e["step"] for e in run.events("log")] == [1, 2, 3]  # each step recorded once
    assert len(run.events("start")) == 1 and len(run.events("end")) == 1
    assert (run.checkpoints_dir / "checkpoint-2").is_dir()
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
