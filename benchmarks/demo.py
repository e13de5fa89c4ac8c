"""`ftkit demo` as the README describes it, timed, with its figures recorded.

    .venv/bin/python benchmarks/demo.py [demo options, e.g. --task qa --sft-minutes 4]

Runs the demo's own config (ftkit.cli.demo_config, the defaults of `ftkit demo`) through
ftkit.pipeline.run_pipeline into a temporary folder, so it prints what `make demo` prints, then one
line per figure: minutes in all, each variant's headline score with its 95% interval, and the SFT
and DPO runs' steps and training seconds (ftkit.training.curves.training_cost). The first run on a
machine also converts the embedded model (see benchmarks/load_time.py); run it twice for the
figure of a warm cache.
"""

from __future__ import annotations

import sys
import tempfile
import time

from ftkit.cli import build_parser, demo_config
from ftkit.pipeline import run_pipeline
from ftkit.training.curves import training_cost

from _measured import record, slug


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ftkit-demo-bench-") as out:
        args = build_parser().parse_args(["demo", *sys.argv[1:], "--out", out])
        config = demo_config(args)
        start = time.perf_counter()
        result = run_pipeline(config, title="ftkit demo (benchmark)")
        minutes = (time.perf_counter() - start) / 60
        summary, metric = result.evaluation.summary, next(iter(result.evaluation.metrics))
        figures = {"task": config.task, "metric": metric, "held_out_rows": len(result.evaluation.table),
                   "minutes": minutes}
        print(f"\ndemo ({config.task}): {minutes:.1f} min in all")
        for variant, row in summary.iterrows():
            figures[slug(variant)] = [row[metric], row[f"{metric}_low"], row[f"{metric}_high"]]
            print(f"{variant} {metric}: {row[metric]:.2f} [{row[f'{metric}_low']:.2f}-{row[f'{metric}_high']:.2f}]")
        for run in result.runs:
            kind = run.config.get("kind")
            cost = training_cost(run)
            figures[f"{kind}_steps"], figures[f"{kind}_seconds"] = cost["steps"], cost["seconds"] or 0
            print(f"{kind}: {cost['steps']} steps, {cost['seconds'] or 0:.0f} s of training")
    record("demo" if config.task == "classification" else f"demo/{config.task}", figures)


if __name__ == "__main__":
    main()
