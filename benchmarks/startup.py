"""How long ftkit's light commands take to answer, and their peak memory: ``ftkit --help``,
``ftkit runs`` (on an empty runs folder), and ``ftkit run --check`` on a config with a bad number and
on a config whose data file is binary garbage. None of them needs a model library; each should
answer before torch would have finished importing.

    .venv/bin/python benchmarks/startup.py [--repeats 5]

Each command runs ``--repeats`` times in a fresh process; the time is the median wall-clock, the
memory the peak resident set of those processes (``resource.getrusage(RUSAGE_CHILDREN)``, read in a
small helper process per command, so one command's peak never shows under another's). Ends with
one line per command, e.g. ``ftkit --help seconds: 0.42 (target <= 1)``. Figures are this machine's,
as loaded as it is while it runs: run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs one command `repeats` times and prints its times and the peak resident set of its runs.
MEASURE = """
import json, resource, subprocess, sys, time
repeats, cwd, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
times, codes, last = [], [], ""
for _ in range(repeats):
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    times.append(time.perf_counter() - start)
    codes.append(proc.returncode)
    last = proc.stdout.decode(errors="replace")
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
print(json.dumps({"times": times, "codes": codes, "peak_mb": peak_kb / 1024, "output": last}))
"""


def measure(command: list[str], cwd: Path, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(repeats), str(cwd), *command], env=env,
                          stdout=subprocess.PIPE, check=True)
    return json.loads(proc.stdout)


def cases(folder: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments of ``python -m ftkit``, target)."""
    rows = folder / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"message {i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    bad_number = folder / "bad-number.yaml"
    bad_number.write_text("data: {source: rows.jsonl}\nsft: {batch_size: -3}\n")
    garbage = folder / "garbage.jsonl"
    garbage.write_bytes(bytes(range(256)) * 256)
    bad_data = folder / "bad-data.yaml"
    bad_data.write_text("data: {source: garbage.jsonl}\n")
    check = "target <= 5 s, <= 500 MB"
    return {
        "ftkit --help": (["--help"], "target <= 1"),
        "ftkit runs": (["runs", "--root", str(folder / "no-runs")], "target <= 1"),
        "ftkit run --check bad number": (["run", "--check", str(bad_number)], check),
        "ftkit run --check bad data file": (["run", "--check", str(bad_data)], check),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory(prefix="ftkit-startup-") as tmp:
        for name, (arguments, target) in cases(Path(tmp)).items():
            result = measure([sys.executable, "-m", "ftkit", *arguments], Path(tmp), args.repeats)
            seconds = statistics.median(result["times"])
            codes = sorted(set(result["codes"]))
            print(f"{name}: exit {', '.join(map(str, codes))}; last output ends: "
                  f"{result['output'].strip().splitlines()[-1][:160] if result['output'].strip() else '(none)'}",
                  flush=True)
            if name.startswith("ftkit run --check"):
                lines.append(f"{name}: {seconds:.2f} s, {result['peak_mb']:.0f} MB, exit {codes[0] if len(codes) == 1 else codes} "
                             f"({target}, exit 2)")
            else:
                lines.append(f"{name} seconds: {seconds:.2f}, {result['peak_mb']:.0f} MB ({target})")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
