"""`ftkit run --check` on hostile and broken configs and data files: each must end in a one-line
error (exit 2, no traceback) within 5 s and 500 MB. Each case runs in its own process; its time is
wall-clock and its memory the peak resident set of that process (``wait4``'s ``ru_maxrss``).

    .venv/bin/python benchmarks/hostile_inputs.py

The config is a stranger's: SciTLDR summaries from ../shared/realdata (read in place), the embedded
model. Ends with one line per case, e.g. ``deep JSON config: 0.4 s, 45 MB, exit 2 (target <= 5 s,
<= 500 MB, exit 2, one error line)``. (``sft.max_length: 0`` is the documented default, "the
task's length", so -1 stands for a bad one.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("FTKIT_REALDATA", ROOT.parent / "shared" / "realdata")) / "summarization" / "scitldr_a_train_sample.jsonl"
BASE = {"data": {"source": str(REALDATA), "mapping": {"prompt": "document", "completion": "summary"},
                 "limit": 8, "train_limit": 48},
        "task": "summarization", "sft": {"max_minutes": 2, "batch_size": 4}}


# Runs the command in a grandchild and reports that one's peak: a child's ru_maxrss starts from
# its parent's resident set at fork (this script holds a 50 MB row), a grandchild's from the shim's.
SHIM = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
        "_, status, usage = os.wait4(pid, 0)\nopen(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n")


def check(config: Path, limit_s: float = float(os.environ.get("HOSTILE_LIMIT_S", 120))) -> tuple[float, float, int, str]:
    """(seconds, peak MB, exit code, output) of ``ftkit run --check config``; killed after ``limit_s``."""
    peak = config.with_suffix(".peak")
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", SHIM, str(peak), "-m", "ftkit", "run", "--check", str(config)],
                              cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit_s)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as err:   # the grandchild may still run: the result says "killed"
        code, out = -9, err.stdout or b""
    seconds = time.monotonic() - start
    kb = float(peak.read_text()) if peak.exists() else float("nan")
    return seconds, kb / 1024, code, out.decode(errors="replace")


def cases(folder: Path) -> dict[str, Path]:
    def config(name: str, values=None, text: str | bytes | None = None, suffix=".yaml") -> Path:
        path = folder / f"{name}{suffix}"
        if text is None:
            text = yaml.safe_dump(values)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    def with_(section: str, key: str, value):
        values = json.loads(json.dumps(BASE))
        values.setdefault(section, {})
        if "." in key:
            outer, inner = key.split(".")
            values[section].setdefault(outer, {})[inner] = value
        else:
            values[section][key] = value
        return values

    out = {
        "deep JSON config": config("deep", text="[" * 100_000 + "]" * 100_000, suffix=".json"),
        "billion laughs YAML": config("laughs", text="a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "data: *i\n"),
        "binary config": config("garbage", text=os.urandom(4096)),
    }
    for section, key, value in [("sft", "batch_size", -3), ("sft", "max_steps", 0), ("sft", "learning_rate", -1),
                                ("sft", "epochs", -2), ("sft", "save_steps", 0), ("sft", "max_length", -1),
                                ("sft", "lora.r", 0), ("data", "limit", -4)]:
        out[f"{section}.{key}: {value}"] = config(f"bad-{section}-{key}", with_(section, key, value))
    fifo = folder / "pipe.yaml"
    os.mkfifo(fifo)
    out["config is a FIFO"] = fifo
    out["config is a folder"] = folder / "a-folder.yaml"
    out["config is a folder"].mkdir()
    rows = [json.loads(line) for line in REALDATA.read_text().splitlines()[:40]]
    rows[7]["document"] = "word " * 10_000_000                 # one 50 MB row
    big = folder / "big-row.jsonl"
    big.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data_fifo = folder / "data-fifo.jsonl"
    os.mkfifo(data_fifo)
    garbage = folder / "garbage.jsonl"
    garbage.write_bytes(os.urandom(65536))
    for name, source in [("one 50 MB row", big), ("data is a FIFO", data_fifo), ("data is a device", Path("/dev/zero")),
                         ("data is a folder", folder), ("binary data file", garbage)]:
        values = json.loads(json.dumps(BASE))
        values["data"]["source"] = str(source)
        out[name] = config(name.replace(" ", "-"), values)
    return out


def main() -> None:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in cases(Path(tmp)).items():
            seconds, mb, code, err = check(path)
            # --check prints its report on stdout: an error is a line "ftkit: ..." or "ERROR: ..."
            errors = [t for t in err.splitlines() if t.startswith(("ftkit:", "ERROR"))]
            one_line = len(errors) == 1 and "Traceback" not in err
            print(f"{name}: exit {code}: {errors[0][:200] if errors else err.strip()[-200:]}", flush=True)
            lines.append(f"{name}: {seconds:.1f} s, {mb:.0f} MB, exit {code}, "
                         f"{'one error line' if one_line else f'{len(errors)} error lines'} "
                         "(target <= 5 s, <= 500 MB, exit 2, one error line)")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
