"""Where a model runs and in which precision, chosen from the hardware, in plain words.

:func:`choose_device` picks the device (CUDA, Apple MPS, CPU) and the precision for it;
:func:`describe_device` says it in one sentence (on a CPU with torch's thread count, see
:mod:`ftkit.models.threads`); :func:`model_info` tells where a loaded model came from and runs.
torch is imported when a choice is made, not when this module is: the config checks name devices
without loading it.

>>> choose_device("cpu", "float32").dtype_name
'float32'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.models import threads as _threads

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceChoice", "ModelInfo", "ModelLoadError", "choose_device", "cpu_has_native_bf16", "describe_device",
           "model_info"]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class DeviceChoice:
    """Where the model runs and in which precision, with the reason in plain words."""

    device: str  # "cuda", "mps" or "cpu"
    dtype: torch.dtype
    reason: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def trainer_precision(self) -> dict:
        """The ``bf16``/``fp16`` flags for a TRL/transformers training config.

        TRL's configs default to ``bf16=True``; on a CPU without native bf16 every bf16 operation
        is emulated, which makes a LoRA step many times slower (benchmarks/precision.py measures
        it), so the flags always come from the device.

        >>> choose_device("cpu", "float32").trainer_precision()
        {'bf16': False, 'fp16': False}
        """
        return {"bf16": self.dtype_name == "bfloat16", "fp16": self.dtype_name == "float16"}

    def __str__(self) -> str:
        return f"{self.device} ({self.dtype_name}): {self.reason}"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (x86 AVX512-BF16/AMX, Arm BF16).

    ``FTKIT_CPU_BF16=0`` (or ``1``) overrides the detection: to run as on a CPU without it, or
    where /proc/cpuinfo is not readable.
    """
    forced = os.environ.get("FTKIT_CPU_BF16", "").strip().lower()
    if forced in ("0", "1", "false", "true", "no", "yes"):
        return forced in ("1", "true", "yes")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # macOS, Windows: no cheap way to know; fp32 is the safe choice
        return False
    return _bf16_in_cpuinfo(text)


def _bf16_in_cpuinfo(text: str) -> bool:
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def _parse_dtype(dtype) -> torch.dtype | None:
    import torch

    if dtype in (None, "auto"):
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return getattr(torch, _DTYPES[str(dtype).lower()])
    except KeyError:
        raise ValueError(
            f"dtype {dtype!r} is not known; use 'auto' or one of: float32, bfloat16, float16"
        ) from None


def choose_device(device: str = "auto", dtype="auto") -> DeviceChoice:
    """Pick the device and precision for this machine.

    CUDA uses bf16 where the GPU supports it, else fp16; Apple MPS uses fp16; a CPU uses fp32
    unless it has native bf16. An explicit ``device`` or ``dtype`` wins over the automatic choice.

    >>> choose_device("cpu", "float32").device
    'cpu'
    """
    import torch

    wanted = _parse_dtype(dtype)
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    kind = str(device).split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='auto'")
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            auto, why = torch.bfloat16, f"GPU {name} supports bfloat16"
        else:
            auto, why = torch.float16, f"GPU {name} has no bfloat16, so float16"
    elif kind == "mps":
        auto, why = torch.float16, "Apple GPU (MPS) in float16"
    elif kind == "cpu":
        # The speed and the held-out accuracy of each precision are measured side by side by
        # benchmarks/precision.py, on the machine it runs on; the message states the mechanism only.
        if cpu_has_native_bf16():
            auto, why = torch.bfloat16, ("no GPU; this CPU computes bfloat16 natively, which moves half the bytes "
                                         "of float32 (benchmarks/precision.py compares the two for LoRA training "
                                         "on this machine)")
        else:
            auto, why = torch.float32, (
                "no GPU; this CPU has no native bfloat16, so float32 "
                "(bf16 would be emulated, which makes training many times slower)"
            )
    else:
        raise ValueError(f"device {device!r} is not known; use 'auto', 'cpu', 'cuda' or 'mps'")
    if wanted is not None and wanted != auto:
        auto, why = wanted, f"{str(wanted).removeprefix('torch.')} as asked (automatic choice: {why})"
    return DeviceChoice(device=str(device), dtype=auto, reason=why)


def describe_device(device: str = "auto", dtype="auto", threads: int = 0) -> str:
    """One sentence saying where models will run and why; on a CPU also how many threads torch
    uses, chosen from the cores other processes leave free (see :mod:`ftkit.models.threads`), which this
    sets, as :func:`~ftkit.models.loading.load_model` would: ``threads`` above 0 fixes the count.

    >>> describe_device("cpu", "float16").startswith("cpu (float16)")
    True
    >>> describe_device("cpu", "float32")                       # doctest: +SKIP
    'cpu (float32): no GPU; ...; 1 thread of 2 cores (other processes keep 1.0 busy)'
    """
    choice = choose_device(device, dtype)
    if choice.device.split(":")[0] != "cpu":
        return str(choice)
    return f"{choice}; {_threads.apply(threads, reuse_s=_threads.REUSE_S)}"


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from and where it runs: what runs record and trainers read."""

    source: str  # the name, folder or Hub id it was loaded from
    device: DeviceChoice


def model_info(model) -> ModelInfo:
    """The :class:`ModelInfo` of a model, also through a PEFT wrapper.

    A model that :func:`~ftkit.models.loading.load_model` did not load is described by its
    weights: the device and precision they are in, and the name in its config.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> tiny = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=8,
    ...                                     num_hidden_layers=1, num_attention_heads=2))
    >>> model_info(tiny).device.device, model_info(tiny).device.dtype_name
    ('cpu', 'float32')
    """
    from accelerate.utils import is_peft_model

    base = model.get_base_model() if is_peft_model(model) else model
    info = base.__dict__.get("_ftkit_info")
    if info is not None:
        return info
    weight = next(base.parameters())
    return ModelInfo(source=getattr(base.config, "_name_or_path", "") or type(base).__name__,
                     device=DeviceChoice(device=weight.device.type, dtype=weight.dtype,
                                         reason="as the model was given (not loaded by ftkit.load_model)"))
