"""The check of a written export: re-scored in a fresh process next to the run's own model.

:func:`check_export` re-scores an export; it writes none (:func:`ftkit.export.merged.export_run`
does, and calls it when given ``check_rows``). It answers one question a tuned model must answer
before it leaves the notebook: **does the exported folder answer like the run?** It loads the
folder in a new Python process with plain transformers (and PEFT for an adapter), answers held-out
rows greedily with the run's template, scores them, and compares with the run's model loaded
here. Nothing of this process (a patched module, a cached tensor) can make a broken export look
right. The result is kept with the run (:meth:`ftkit.runs.Run.record_export_check`); the report
shows both scores.

>>> check = check_export(run, "router-gguf", test[:16])      # doctest: +SKIP
>>> run.export_checks[-1]["exported"], run.export_checks[-1]["in_memory"]   # doctest: +SKIP
(0.8125, 0.8125)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.export import ExportError
from ftkit.export.gguf import GGUF_FILE
from ftkit.models.tuned import load_run_model, run_template

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["EXPORT_KINDS", "ExportCheck", "check_export"]

EXPORT_KINDS = ("adapter", "merged", "gguf")


@dataclass
class ExportCheck:
    """An exported folder re-scored next to the run's model in this process: in a fresh Python
    process with transformers (engine ``transformers``, :func:`check_export`), or a GGUF file in
    llama.cpp itself (engine ``llama.cpp``, :func:`ftkit.export.llamacpp_check.check_in_llamacpp`)."""

    kind: str  # adapter | merged | gguf
    folder: str  # the exported folder; for engine llama.cpp, the GGUF file
    metric: str  # the headline: the first metric
    rows: int
    in_memory: float  # the headline score of the run's model, loaded in this process
    exported: float  # the same, of the exported folder loaded in a fresh process
    scores: dict = field(default_factory=dict)  # {"in_memory": {metric: mean}, "exported": {...}}
    answers_equal: int = 0  # rows where both answered the same text
    differ: list = field(default_factory=list)  # the first rows that differ: row, input, both answers
    dtype: str = "float32"  # of the exported weights (engine llama.cpp: of the reference it is compared with)
    seconds: float = 0.0  # the fresh process, start to finish
    time: float = 0.0
    engine: str = "transformers"  # what answered for the export: transformers | llama.cpp
    gguf_type: str = ""  # engine llama.cpp: the file's weight type (f32, f16, q8_0, q4_k_m)
    # 95% intervals: in_memory and exported [low, high]; difference [mean, low, high]
    intervals: dict = field(default_factory=dict)
    cause: str = ""  # engine llama.cpp: what makes the answers differ, when it was found
    required_identical: float = 1.0  # the share of identical answers that passes (0 for a quantized file)

    @property
    def structural(self) -> bool:
        """A cause that is not arithmetic: the chat template, the tokenizer or the end of turn."""
        return self.cause.split(":", 1)[0] in ("chat template", "tokenizer", "pre-tokenizer", "end of turn")

    @property
    def passed(self) -> bool:
        if self.engine == "llama.cpp":
            return not self.structural and self.answers_equal >= self.required_identical * self.rows
        return self.answers_equal == self.rows and self.scores.get("in_memory") == self.scores.get("exported")

    @property
    def message(self) -> str:
        if self.engine == "llama.cpp":
            return self._llamacpp_message()
        scores = (f"{self.metric} {self.exported:.3f} exported vs {self.in_memory:.3f} in memory on {self.rows} rows; "
                  f"greedy answers equal on {self.answers_equal} of {self.rows}")
        if self.passed:
            return f"{self.kind} export ({self.dtype}) checked in a fresh process: {scores}"
        shown = "; ".join(f"row {d['row']}: in memory {d['in_memory']!r}, exported {d['exported']!r}"
                          for d in self.differ[:3])
        return (f"the {self.kind} export in {self.folder} does not answer like the run's model: {scores} ({shown}). "
                f"{_HINTS[self.kind]}")

    def _llamacpp_message(self) -> str:
        low, high = (self.intervals.get("exported") or [float("nan")] * 2)
        mean, d_low, d_high = (self.intervals.get("difference") or [float("nan")] * 3)
        r_low, r_high = (self.intervals.get("in_memory") or [float("nan")] * 2)
        text = (f"{self.gguf_type} GGUF in llama.cpp: {self.metric} {self.exported:.3f} [{low:.2f}, {high:.2f}] vs "
                f"{self.in_memory:.3f} [{r_low:.2f}, {r_high:.2f}] for the run's model ({self.dtype}) "
                f"on {self.rows} rows, "
                f"difference {mean:+.3f} (95% CI {d_low:+.3f} to {d_high:+.3f}); identical answers "
                f"{self.answers_equal} of {self.rows} ({self.answers_equal / max(self.rows, 1):.0%})")
        if not self.passed:
            needed = f"; at least {self.required_identical:.0%} identical needed" if not self.structural else ""
            return (f"the {Path(self.folder).name} export does not answer in llama.cpp like the run's model: {text}"
                    f"{needed}. Cause: {self.cause or 'not found'}")
        return text + (f". Where they differ: {self.cause}" if self.cause else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "message": self.message}

    def __str__(self) -> str:
        return self.message


_HINTS = {
    "merged": "The merged weights or the tokenizer files differ from the run's; export again, or ship the adapter",
    "gguf": "The file's tensors, tokenizer or chat template differ from the merged model's; export again with "
            "dtype='float32'",
    "adapter": "The base model the adapter loads onto in a fresh process is not the one the run trained from",
}


def _export_kind(folder: Path) -> str:
    if (folder / GGUF_FILE).is_file():
        return "gguf"
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "merged"
    raise FileNotFoundError(f"{folder} holds no export: no {GGUF_FILE}, adapter_config.json or config.json. "
                            "Write one with ftkit.export.export_run(run, folder, ...)")


def _answer_rows(model, tokenizer, template, rows: list[dict], metrics, max_new_tokens: int) -> tuple[list, dict]:
    """Greedy answers to ``rows`` asked through ``template``, and each metric's per-row scores:
    the same procedure in this process and in the fresh one."""
    from ftkit.generation.generate import generate
    from ftkit.evaluation.metrics import resolve

    answers = [g.text for g in generate(model, tokenizer, [template.messages(r) for r in rows],
                                        max_new_tokens=max_new_tokens, progress=False)]
    return answers, {name: [float(fn(a, r["completion"], r)) for a, r in zip(answers, rows)]
                     for name, fn in resolve(list(metrics)).items()}


def check_export(run: Run, folder, rows, metrics=("exact_match",), *, kind: str | None = None,
                 max_new_tokens: int = 32, timeout_s: float = 1800) -> ExportCheck:
    """Load the exported ``folder`` in a fresh Python process, answer ``rows`` greedily with the
    run's template, score them with ``metrics`` (names), and compare with the run's model here.

    The fresh process uses plain transformers: ``from_pretrained(folder)`` for merged weights,
    ``from_pretrained(folder, gguf_file="model.gguf")`` for a GGUF (model and tokenizer), the base
    model plus ``PeftModel.from_pretrained(folder)`` for an adapter. Both sides run on the CPU in
    float32 (a float16 GGUF is compared with the merged weights rounded to float16, which is
    what the file holds). The result is recorded with the run (``run.export_checks``; the report
    shows it) and returned; when any answer or score differs it raises
    :class:`~ftkit.export.ExportError` saying which rows differ and how, after recording it.

    >>> check = check_export(run, "router-gguf", test[:16])     # doctest: +SKIP
    >>> print(check)                                             # doctest: +SKIP
    gguf export (float32) checked in a fresh process: exact_match 0.812 exported vs 0.812 in memory on 16 rows; ...
    """
    import gguf
    import torch

    from ftkit.data.canonical import as_rows, chat_turns
    from ftkit.evaluation.metrics import resolve

    folder = Path(folder).resolve()
    kind = kind or _export_kind(folder)
    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}, not {kind!r}")
    if any(not isinstance(m, str) for m in metrics):
        raise ValueError("check_export scores by metric name (a callable cannot be sent to another process); "
                         "use built-in names such as 'exact_match'")
    resolve(list(metrics))  # an unknown name fails here, not in the other process
    rows = chat_turns(as_rows(rows))
    if not rows or "completion" not in rows[0]:
        raise ValueError("check_export needs prompt/completion rows (or conversations) with reference answers")
    spec = {"kind": kind, "folder": str(folder), "template": run.config["template"], "rows": rows,
            "metrics": list(metrics), "max_new_tokens": max_new_tokens}
    if kind == "adapter":
        spec["base"] = _base_location(run)
    fresh = _FreshProcess(spec, timeout_s)
    try:
        dtype = "float32"
        if kind == "gguf":
            types = {t.tensor_type.name for t in gguf.GGUFReader(str(folder / GGUF_FILE)).tensors}
            dtype = "float16" if "F16" in types else "float32"
        model, tokenizer = load_run_model(run, device="cpu", dtype="float32", merged=kind != "adapter")
        if dtype == "float16":  # what the file holds: the merged weights rounded to float16
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        p.copy_(p.half().float())
        answers, scores = _answer_rows(model, tokenizer, run_template(run), rows, metrics, max_new_tokens)
    except BaseException:
        fresh.stop()
        raise
    exported = fresh.result()

    equal = [a == b for a, b in zip(answers, exported["answers"])]
    headline = metrics[0]
    check = ExportCheck(
        kind=kind, folder=str(folder), metric=headline, rows=len(rows),
        in_memory=_mean(scores[headline]), exported=_mean(exported["scores"][headline]),
        scores={"in_memory": {m: _mean(v) for m, v in scores.items()},
                "exported": {m: _mean(v) for m, v in exported["scores"].items()}},
        answers_equal=sum(equal), dtype=dtype, seconds=exported["seconds"], time=time.time(),
        differ=[{"row": i, "input": rows[i]["prompt"], "in_memory": answers[i], "exported": exported["answers"][i]}
                for i, same in enumerate(equal) if not same][:20])
    run.record_export_check(check)
    if not check.passed:
        raise ExportError(check.message)
    return check


def _mean(values) -> float:
    return sum(values) / len(values)


def _base_location(run: Run) -> str:
    """Where the fresh process finds the base model: a folder, or a Hub id already cached."""
    from ftkit.models.conversion import converted_gguf
    from ftkit.models.loading import resolve_source

    kind, location = resolve_source(run.config["base_model"])
    return str(converted_gguf(location, verbose=False)) if kind in ("embedded", "gguf") else location


class _FreshProcess:
    """The other side of :func:`check_export`, started first so that it loads and answers while
    this process does the same for the run's model (on two cores, the two sides overlap)."""

    def __init__(self, spec: dict, timeout_s: float):
        self.spec, self.timeout_s = spec, timeout_s
        self.tmp = tempfile.TemporaryDirectory(prefix="ftkit-export-check-")
        spec_path, self.out_path = Path(self.tmp.name) / "spec.json", Path(self.tmp.name) / "result.json"
        spec_path.write_text(json.dumps(spec, default=str))
        package_root = str(Path(__file__).resolve().parents[2])  # this ftkit, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        # Its messages go to a file, not a pipe: a pipe nobody reads while this side works fills up
        # with progress bars, and the other process stops writing, and answering.
        self.log_path = Path(self.tmp.name) / "stderr.txt"
        self.start = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from ftkit.export.check import _check_here; _check_here(*sys.argv[1:])",
                 str(spec_path), str(self.out_path)], stdout=subprocess.DEVNULL, stderr=log, env=env)

    def result(self) -> dict:
        try:
            self.process.wait(timeout=max(1.0, self.timeout_s - (time.perf_counter() - self.start)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise ExportError(f"the fresh process did not finish the check in {self.timeout_s:.0f} s; give fewer "
                              "rows or a larger timeout_s") from None
        seconds = round(time.perf_counter() - self.start, 2)
        try:
            if self.process.returncode != 0 or not self.out_path.is_file():
                stderr = self.log_path.read_text(errors="replace")
                tail = "\n".join(line for line in stderr.strip().splitlines() if "it/s]" not in line)
                tail = "\n".join(tail.splitlines()[-8:])
                raise ExportError(f"the {self.spec['kind']} export in {self.spec['folder']} did not load and answer "
                                  f"in a fresh process (exit code {self.process.returncode}):\n{tail}")
            return {**json.loads(self.out_path.read_text()), "seconds": seconds}
        finally:
            self.tmp.cleanup()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.tmp.cleanup()


def _check_here(spec_path: str, out_path: str) -> None:
    """The fresh process's side of :func:`check_export`: load with plain transformers, answer, score."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ftkit.models.conversion import gguf_tokenizer
    from ftkit.models.loading import prepare_tokenizer
    from ftkit.prompts import PromptTemplate

    hf_logging.disable_progress_bar()
    spec = json.loads(Path(spec_path).read_text())
    folder, kind = spec["folder"], spec["kind"]
    if kind == "gguf":
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
        tokenizer = gguf_tokenizer(Path(folder) / GGUF_FILE)
    elif kind == "merged":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    tokenizer = prepare_tokenizer(tokenizer)
    answers, scores = _answer_rows(model, tokenizer, PromptTemplate(**spec["template"]), spec["rows"],
                                  spec["metrics"], spec["max_new_tokens"])
    Path(out_path).write_text(json.dumps({"answers": answers, "scores": scores}))
