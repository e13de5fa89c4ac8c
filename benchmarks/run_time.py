"""The whole `ftkit run` of each kind of task, timed as a person meets it: a two-line config, defaults.

    .venv/bin/python benchmarks/run_time.py [--only classification,code,...] [--sources built-in,real]
        [--no-check] [--keep DIR]

For each kind of task, on its built-in example and on a real public slice from ../shared/realdata
(skipped, with the reason, when that folder is absent), a config names the data and the task and
nothing else (a slice's column mapping where its columns are not those ftkit reads), as a stranger
would write it; ``ftkit run CONFIG --check`` and then ``ftkit run CONFIG`` run in a process of
their own on the embedded model with every default: the task's prompt variants, SFT's time box,
timing, the report. Each line gives the run's wall time from start to exit against the target,
what ``--check`` estimated, the verdict the run printed, and where a run failed, its last lines.

    classification (real: banking77 77 labels): ftkit run 6.1 min (estimate 5m10s) (target <= 10 min)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _measured import record, slug

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
TARGET_MIN = 10.0

# kind: (built-in example, (real-data file, what else a stranger writes for it, its name in words))
KINDS = {
    "classification": ("support_routing",
                       ("banking77/banking77_test_sample2000_77labels.jsonl", {}, "banking77 77 labels")),
    "qa": ("shop_qa", ("qa/nq_open_dev_sample.jsonl", {}, "NQ-Open")),
    "translation": ("shop_translation", ("translation_ntrex/ntrex128_en-de_sample400.jsonl", {}, "NTREX-128 en-de")),
    "summarization": ("shop_summaries", ("summarization/scitldr_a_train_sample.jsonl",
                                         {"mapping": {"prompt": "document", "completion": "summary"}}, "SciTLDR-A")),
    "creative": ("shop_blurbs", ("creative_writing/public_domain_poems_sample.jsonl", {}, "public-domain poems")),
    "code": ("shop_code", ("mbpp/mbpp_sample.jsonl", {}, "MBPP")),
    "chat": ("shop_chat", ("chat_multiturn/sgd_test_sample.jsonl", {}, "SGD dialogues")),
}


def configs(kinds: list[str], sources: list[str], folder: Path):
    """``(kind, source label, config path or a reason it is skipped)`` for each run."""
    for kind in kinds:
        example, (file, data_extra, words) = KINDS[kind]
        if "built-in" in sources:
            yield kind, f"built-in: {example}", _write(folder / f"{kind}-built-in", {"data": {"source": example}},
                                                        kind)
        if "real" in sources:
            path = REALDATA / file
            if not path.is_file():
                yield kind, f"real: {words}", f"{path} not found (../shared/realdata beside the checkout)"
            else:
                yield kind, f"real: {words}", _write(folder / f"{kind}-real",
                                                     {"data": {"source": str(path), **data_extra}}, kind)


def _write(folder: Path, values: dict, kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**values, "task": kind}, sort_keys=False))
    return path


def ftkit(args: list[str], cwd: Path, log: Path) -> tuple[int, float, str]:
    """Run ``ftkit ARGS`` in ``cwd``; (exit code, wall seconds, its output)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "ftkit", *args], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - t0, log.read_text(errors="replace")


def one(kind: str, label: str, config: Path, check: bool) -> dict:
    out = {"kind": kind, "source": label}
    folder = config.parent
    if check:
        code, seconds, text = ftkit(["run", "config.yaml", "--check"], folder, folder / "check.log")
        found = re.search(r"Estimate: about ((?:\d+m)?\d+s)", text)
        out["estimate"] = found.group(1) if found else None
        out["check_s"] = seconds
        if code != 0:
            out["error"] = f"--check exited {code}: " + " | ".join(text.strip().splitlines()[-3:])
            return out
    code, seconds, text = ftkit(["run", "config.yaml"], folder, folder / "run.log")
    out["minutes"] = seconds / 60
    verdict = [line.strip() for line in text.splitlines() if line.strip().lower().startswith("verdict")]
    out["verdict"] = verdict[-1] if verdict else None
    if code != 0:
        out["error"] = f"exited {code}: " + " | ".join(text.strip().splitlines()[-3:])
    return out


def line(o: dict) -> str:
    head = f"{o['kind']} ({o['source']})"
    if "skipped" in o:
        return f"{head}: skipped: {o['skipped']}"
    if "minutes" not in o:
        return f"{head}: failed before the run: {o['error']}"
    estimate = f" (--check estimated {o['estimate']})" if o.get("estimate") else ""
    failed = f"; FAILED: {o['error']}" if "error" in o else ""
    return f"{head}: ftkit run {o['minutes']:.1f} min{estimate}{failed} (target <= {TARGET_MIN:g} min)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(KINDS), help=f"comma list of: {', '.join(KINDS)}")
    ap.add_argument("--sources", default="built-in,real", help="built-in, real, or both (comma list)")
    ap.add_argument("--no-check", action="store_true", help="skip `ftkit run --check` before each run")
    ap.add_argument("--keep", default="", help="folder for the configs, logs, runs and reports (default: temporary)")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown kind(s) {', '.join(unknown)}; kinds are: {', '.join(KINDS)}")
    sources = [s.strip() for s in args.sources.split(",")]
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ftkit-run-time-"))
    outcomes = []
    for kind, label, config in configs(kinds, sources, folder):
        if not isinstance(config, Path):
            outcomes.append({"kind": kind, "source": label, "skipped": config})
            continue
        print(f"=== {kind} ({label}): {config}", flush=True)
        o = one(kind, label, config, not args.no_check)
        print(line(o), "|", o.get("verdict") or "no verdict printed", flush=True)
        outcomes.append(o)
    print(f"\nlogs, runs and reports in {folder}")
    for o in outcomes:
        if o.get("verdict"):
            print(f"{o['kind']} ({o['source']}): {o['verdict']}")
    for o in outcomes:
        print(line(o))
    for o in outcomes:  # one entry per run, so a rerun of one kind replaces only its own figures
        if "minutes" in o and "error" not in o:
            record(f"run_time/{slug(o['kind'])}_{slug(o['source'].split(':')[0])}",
                   {"minutes": o["minutes"], "check_estimate": o.get("estimate") or "none"},
                   note=f"ftkit run with a two-line config (data: {o['source']}, task), every default")


if __name__ == "__main__":
    main()
