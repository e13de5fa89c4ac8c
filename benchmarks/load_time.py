"""Cold (GGUF dequantization) versus warm (cached safetensors) load of the embedded model.

    .venv/bin/python benchmarks/load_time.py

Each load runs in a fresh process, so nothing is shared in memory; the cold load uses an empty
temporary FTKIT_CACHE, the warm loads reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _measured import record

# Imports (torch, transformers: a few seconds) are timed apart from the load itself.
LOAD = (
    "import time; t = time.perf_counter(); from ftkit import load_model; i = time.perf_counter(); "
    "load_model('smollm2-135m-instruct', verbose=False); print(i - t, time.perf_counter() - i)"
)


def timed_load(cache: str) -> tuple[float, float]:
    """(import seconds, load seconds) in a fresh process."""
    env = dict(os.environ, FTKIT_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=True)
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        imports, cold = timed_load(cache)
        warm = min(timed_load(cache)[1] for _ in range(3))
    print(f"import ftkit s (torch, transformers): {imports:.1f}")
    print(f"cold load s (GGUF conversion, once): {cold:.1f}")
    print(f"warm load s (cached safetensors, best of 3): {warm:.1f} (target <= 5)")
    print(f"cold vs warm: {cold / warm:.1f}x (target >= 5)")
    record("load_time", {"imports_s": imports, "cold_load_s": cold, "warm_load_s": warm, "cold_vs_warm": cold / warm})


if __name__ == "__main__":
    main()
