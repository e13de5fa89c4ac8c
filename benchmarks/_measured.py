"""The one writer of ``docs/measured.json``: every benchmark records the figures it prints.

    from _measured import record            # a script in benchmarks/ imports it by its own folder
    record("generation", {"batched_vs_one_at_a_time": 6.2, ...})

``record`` replaces the benchmark's entry, and only that one, with the figures, the machine that
measured them (CPU model, cores, native bfloat16, torch threads, GPU, Python, torch and
transformers releases), the date and the command line, so the README's figures can be checked
against what was last measured (``tests/test_figures.py``) and a rerun updates them in one place.
A figure is a number, a ``[mean, low, high]`` list (a value with its 95% interval) or a short
string; numbers are kept to 4 decimals, the README shows them rounded.

Set ``FTKIT_MEASURED=0`` to run a benchmark without writing the file (a trial run with small
arguments), or ``FTKIT_MEASURED=path`` to write another file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["PATH", "load", "machine", "record", "slug", "split_key"]

PATH = Path(__file__).resolve().parents[1] / "docs" / "measured.json"

ABOUT = [
    "Figures measured by the scripts in benchmarks/, one entry per benchmark: its figures by name, the machine",
    "that measured them, the date and where they come from ('source'). A benchmark rewrites its own entry when it",
    "runs (benchmarks/_measured.py record(); FTKIT_MEASURED=0 runs it without writing). Entries whose source says",
    "'from README' were copied from the README's text before the scripts wrote this file; the next run of that",
    "script replaces them. Do not edit a figure by hand: run the benchmark.",
    "The README and the notebooks' markdown quote a figure as <!-- measured: BENCHMARK.FIGURE --> right before the",
    "number, e.g. '<!-- measured: demo.lora_sft -->0.96 [0.90-1.00]'. tests/test_figures.py checks that the number",
    "written there is this file's value rounded to the decimals shown (a [mean, low, high] figure is written as its",
    "mean alone, as 'mean [low-high]' or as 'mean [low, high]'), and that the README quotes each figure once.",
]


def slug(name: str) -> str:
    """A variant's or scenario's name as a figure name: ``"SFT + DPO"`` -> ``"sft_dpo"``, ``"8-shot"`` -> ``"8_shot"``."""
    return "_".join("".join(c if c.isalnum() else " " for c in str(name).lower()).split())


def split_key(key: str) -> tuple[str, str]:
    """``"scenarios/qa.lora_sft"`` -> ``("scenarios/qa", "lora_sft")``: a figure's name has no dot."""
    benchmark, _, figure = key.rpartition(".")
    if not benchmark or not figure:
        raise ValueError(f"{key!r} is not BENCHMARK.FIGURE")
    return benchmark, figure


def load(path: str | Path | None = None) -> dict:
    """The file as a dict (``{"about": [...], "benchmarks": {}}`` when it does not exist yet)."""
    path = Path(path or PATH)
    if not path.exists():
        return {"about": ABOUT, "benchmarks": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What measured the figures. Reads torch's thread count and GPU only if the benchmark loaded torch."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "native_bf16": "avx512_bf16" in _cpu_flags() or "amx_bf16" in _cpu_flags(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "trl": _version("trl"),
        "peft": _version("peft"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    info["fastpath"] = os.environ.get("FTKIT_FASTPATH", "1") != "0"
    return info


def _plain(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    number = float(value)  # numpy and torch scalars too
    return int(number) if number.is_integer() and abs(number) < 1e15 else round(number, 4)


def record(benchmark: str, figures: dict, *, path: str | Path | None = None, note: str = "") -> Path | None:
    """Write ``figures`` as the entry ``benchmark`` of docs/measured.json, with the machine and the date.

    Other entries are kept. Returns the file written, or None under ``FTKIT_MEASURED=0``.

    >>> record("generation", {"batched_vs_one_at_a_time": 6.2}, path=tmp / "measured.json")  # doctest: +SKIP
    """
    target = os.environ.get("FTKIT_MEASURED", "")
    if target == "0":
        return None
    path = Path(path or target or PATH)
    bad = [name for name in figures if "." in str(name) or not str(name)]
    if bad:
        raise ValueError(f"figure names must be non-empty and without dots: {bad}")
    data = load(path)
    data["about"] = ABOUT
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "?"
    entry = {
        "source": f"written by benchmarks/{script}" if script.endswith(".py") else f"written by {script}",
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "figures": _plain(dict(figures)),
    }
    if note:
        entry["note"] = note
    data.setdefault("benchmarks", {})[benchmark] = entry
    data["benchmarks"] = dict(sorted(data["benchmarks"].items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"figures recorded in {path} (entry {benchmark!r})")
    return path
