"""A GGUF export answered by llama.cpp itself, and what quantization costs, after the demo's SFT.

    .venv/bin/python benchmarks/export.py [--rows 48] [--run RUN_ID --root RUNS]

On the built-in classification example, the demo's own config (ftkit.cli.demo_config, the
defaults of `ftkit demo`, DPO left out) prepares the data and trains its SFT stage (ftkit.pipeline's
train_stages: the demo's split, template, settings and time limit), unless ``--run`` names a run
already trained. The run is exported as float16 GGUF with Q8_0 and Q4_K_M copies
(ftkit.export.gguf.export_gguf) and each file answers the demo's held-out rows in llama.cpp
(ftkit.export.llamacpp_check.check_in_llamacpp: greedy, through the file's own chat template),
next to the run's merged model in transformers rounded to float16. The lines:

    llama.cpp vs transformers identical greedy answers: 0.98 (target >= 0.95)
    held-out exact_match, f16 in llama.cpp: 0.92 [0.85-0.98]
    held-out exact_match, q8_0 in llama.cpp: ... (difference to f16 in transformers ... [...])
    held-out exact_match, q4_k_m in llama.cpp: ...

Needs llama.cpp: ``pip install 'ftkit[gguf]'``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _measured import record


def trained_run(out: Path, say):
    """The demo's SFT run, trained here with the demo's config (DPO left out), and its held-out rows."""
    from ftkit.cli import build_parser, demo_config
    from ftkit.models.loading import load_model
    from ftkit.pipeline import train_stages
    from ftkit.preparation import plan, prepare_data

    config = demo_config(build_parser().parse_args(["demo", "--out", str(out)]))
    config.dpo = None
    model, tokenizer = load_model(config.model.name, device="cpu", verbose=False)
    prepared = prepare_data(config, tokenizer, say=say)
    [run] = train_stages(config, model, tokenizer, prepared, plan(config, prepared), config.output.runs_root, say=say)
    return run, prepared.test


def held_out_of(run):
    """The held-out rows a recorded run was split from (its data.json)."""
    from ftkit.data import provenance

    return provenance.held_out(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=48, help="held-out rows each file answers (the demo's 48)")
    parser.add_argument("--run", help="an SFT run already trained on the demo's data (default: train one)")
    parser.add_argument("--root", help="the runs folder of --run")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()

    from ftkit.export.gguf import export_gguf, gguf_files
    from ftkit.export.llamacpp import INSTALL_GGUF, llamacpp_available
    from ftkit.export.llamacpp_check import check_in_llamacpp
    from ftkit.runs import load_run

    if not llamacpp_available():
        sys.exit(f"llama.cpp is not installed: {INSTALL_GGUF}")
    with tempfile.TemporaryDirectory(prefix="ftkit-export-bench-") as out:
        start = time.perf_counter()
        if args.run:
            run = load_run(args.run, args.root)
            rows = held_out_of(run)
        else:
            run, rows = trained_run(Path(out), say=print)
        trained = time.perf_counter()
        rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
        rows = rows[: args.rows]
        folder = export_gguf(run, Path(out) / "gguf", dtype="float16", quantized=("q8_0", "q4_k_m"))
        exported = time.perf_counter()
        checks = check_in_llamacpp(run, gguf_files(folder), rows, ["exact_match"],
                                   max_new_tokens=args.max_new_tokens, record=False)
        checked = time.perf_counter()

    f16 = checks[0]
    print(f"\nrun {run.id}: {len(rows)} held-out rows; training {trained - start:.0f} s, export (f16, q8_0, q4_k_m) "
          f"{exported - trained:.0f} s, llama.cpp checks {checked - exported:.0f} s")
    for check in checks:
        print(check.message)
    identical = f16.answers_equal / f16.rows
    figures = {"rows": f16.rows, "identical_f16": identical,
               "transformers_f16": [f16.in_memory, *f16.intervals["in_memory"]]}
    print(f"\nllama.cpp vs transformers identical greedy answers: {identical:.2f} (target >= 0.95)")
    for check in checks:
        low, high = check.intervals["exported"]
        mean, d_low, d_high = check.intervals["difference"]
        figures[f"llamacpp_{check.gguf_type}"] = [check.exported, low, high]
        figures[f"difference_{check.gguf_type}"] = [mean, d_low, d_high]
        print(f"held-out {check.metric}, {check.gguf_type} in llama.cpp: {check.exported:.2f} [{low:.2f}-{high:.2f}] "
              f"(difference to f16 in transformers {mean:+.2f} [{d_low:+.2f}, {d_high:+.2f}])")
    record("export", figures)


if __name__ == "__main__":
    main()
