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

LOAD = (
    "import time; t = time.perf_counter(); from ftkit import load_model; "
    "load_model('smollm2-135m-instruct', verbose=False); print(time.perf_counter() - t)"
)


def timed_load(cache: str) -> float:
    env = dict(os.environ, FTKIT_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_load(cache)
        warm = min(timed_load(cache) for _ in range(3))
    print(f"cold load s (GGUF conversion, once): {cold:.1f}")
    print(f"warm load s (cached safetensors, best of 3): {warm:.1f} (target <= 5)")
    print(f"cold vs warm: {cold / warm:.1f}x (target >= 5)")


if __name__ == "__main__":
    main()
