"""Move the same training to several GPUs through ``accelerate launch``, not home-made code.

:func:`write_launch` writes an Accelerate config file (the format ``accelerate config`` writes,
through Accelerate's own ``ClusterConfig``) for DDP, FSDP or DeepSpeed ZeRO-3 with one process
per GPU, and a ``launch.sh`` holding the command::

    accelerate launch --config_file accelerate.yaml -m ftkit.cli train pipeline.yaml

Every process runs ``ftkit train``: the same :func:`ftkit.pipeline.train_stages` that ``ftkit
run`` calls. TRL's trainers read the distributed state Accelerate set up, so ``train_sft`` and
``train_dpo`` need no change. ``--gpus 0`` gives one CPU process, which is how the tests run it.

>>> plan = write_launch("pipeline.yaml", "launch/", gpus=4, strategy="fsdp")   # doctest: +SKIP
>>> print(plan.shell)                                                          # doctest: +SKIP
accelerate launch --config_file launch/accelerate.yaml -m ftkit.cli train pipeline.yaml
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LaunchPlan", "accelerate_config", "run_launch", "write_launch"]

STRATEGIES = ("ddp", "fsdp", "deepspeed")
MIXED_PRECISION = ("no", "bf16", "fp16")

# FSDP with a LoRA adapter, after PEFT's FSDP guide: each decoder layer is one shard unit and
# use_orig_params stays off (PEFT's mix of frozen and trained weights saves memory only so). Rank-0-only
# loading (cpu_ram_efficient_loading) is off: ftkit.load_model materializes the weights in every
# process and moves them to its GPU, which meta tensors on the other ranks would fail. Syncing module
# states broadcasts rank 0's weights, its freshly initialized LoRA matrices included, to all ranks.
_FSDP = {
    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "fsdp_backward_prefetch": "BACKWARD_PRE",
    "fsdp_cpu_ram_efficient_loading": False,
    "fsdp_forward_prefetch": False,
    "fsdp_offload_params": False,
    "fsdp_sharding_strategy": "FULL_SHARD",
    "fsdp_state_dict_type": "SHARDED_STATE_DICT",
    "fsdp_sync_module_states": True,
    "fsdp_use_orig_params": False,
}
# ZeRO-3 shards the frozen base weights too, which is what lets a model outgrow one GPU; with
# LoRA, ZeRO-2 would shard only the (tiny) adapter's optimizer state and gradients.
_DEEPSPEED = {
    "zero_stage": 3,
    "offload_optimizer_device": "none",
    "offload_param_device": "none",
    "zero3_init_flag": False,
    "zero3_save_16bit_model": True,
}


@dataclass
class LaunchPlan:
    """The written files and the command that starts the training."""

    accelerate_config: Path
    script: Path
    command: list[str]

    @property
    def shell(self) -> str:
        return shlex.join(self.command)


def accelerate_config(gpus: int, strategy: str = "ddp", mixed_precision: str = "bf16",
                      gradient_accumulation_steps: int = 1) -> dict:
    """The Accelerate config as a dict, in the keys ``accelerate config`` writes.

    ``gpus=0`` is one CPU process (no distribution, no mixed precision).

    >>> c = accelerate_config(4, "ddp")
    >>> c["distributed_type"], c["num_processes"], c["mixed_precision"]
    ('MULTI_GPU', 4, 'bf16')
    """
    from accelerate.commands.config.config_args import ClusterConfig

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not known; choose one of: {', '.join(STRATEGIES)}")
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision {mixed_precision!r} is not known; choose one of: "
                         f"{', '.join(MIXED_PRECISION)}")
    if gpus < 0:
        raise ValueError(f"gpus must be 0 (one CPU process) or more, got {gpus}")
    cpu = gpus == 0
    if cpu:
        distributed = "NO"
    elif strategy == "fsdp":
        distributed = "FSDP"
    elif strategy == "deepspeed":
        distributed = "DEEPSPEED"
    else:
        distributed = "MULTI_GPU" if gpus > 1 else "NO"
    deepspeed = dict(_DEEPSPEED, gradient_accumulation_steps=gradient_accumulation_steps) \
        if distributed == "DEEPSPEED" else None
    config = ClusterConfig(
        compute_environment="LOCAL_MACHINE", distributed_type=distributed,
        mixed_precision="no" if cpu else mixed_precision, use_cpu=cpu, debug=False,
        num_processes=max(gpus, 1), num_machines=1, machine_rank=0, gpu_ids=None if cpu else "all",
        main_training_function="main", rdzv_backend="static", same_network=True,
        fsdp_config=dict(_FSDP) if distributed == "FSDP" else None, deepspeed_config=deepspeed,
    )
    return config.to_dict()


def write_launch(config_path, out_dir, *, gpus: int, strategy: str = "ddp",
                 mixed_precision: str = "bf16", gradient_accumulation_steps: int = 1) -> LaunchPlan:
    """Write ``accelerate.yaml`` and ``launch.sh`` into ``out_dir``; return the plan."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = accelerate_config(gpus, strategy, mixed_precision, gradient_accumulation_steps)
    accel = out / "accelerate.yaml"
    accel.write_text(yaml.safe_dump(settings, sort_keys=True))
    # Absolute paths: the script then works from any folder (a job scheduler's, say).
    command = ["accelerate", "launch", "--config_file", str(accel.resolve()), "-m", "ftkit.cli", "train",
               str(Path(config_path).resolve())]
    script = out / "launch.sh"
    script.write_text("#!/bin/sh\n# Written by `ftkit launch`; edit accelerate.yaml for more machines.\n"
                      f"exec {shlex.join(command)}\n")
    script.chmod(0o755)
    return LaunchPlan(accelerate_config=accel, script=script, command=command)


def run_launch(plan: LaunchPlan) -> int:
    """Start the plan's command and wait for it; return its exit status.

    ``accelerate`` is taken from this Python's environment first, so an unactivated virtualenv
    works too.
    """
    beside = Path(sys.executable).parent / "accelerate"
    exe = str(beside) if beside.is_file() else shutil.which("accelerate")
    if exe is None:
        raise FileNotFoundError("the `accelerate` command was not found; pip install accelerate")
    return subprocess.run([exe, *plan.command[1:]], check=False).returncode
