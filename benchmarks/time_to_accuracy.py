"""Time to accuracy: held-out exact match after 1, 3, 5 minutes of LoRA SFT with ftkit's defaults.

    .venv/bin/python benchmarks/time_to_accuracy.py [--datasets banking77-10,builtin,banking77-77]
        [--minutes banking77-10=1,3 builtin=1.333 banking77-77=1,3,5] [--step-seconds S] [--limit N]
        [--threads 1]

Datasets: banking77-10 (the 10-label slice of ../shared/realdata/banking77, stratified 300 train /
100 test rows), builtin (the built-in support_routing example, the demo's stratified 80/20 split,
its first 48 held-out rows as the demo evaluates) and banking77-77 (the 2,000-row 77-label
sample: 500 test rows stratified, the first 1,500 of the rest for training). Each trains one SFT
run with the defaults (SFTSettings(), as `ftkit run` with an empty sft: section: zero-shot
classification prompt, the chat template's default system prompt) on the embedded model, and at
each minute mark evaluates the model as trained so far (adapter merged, as the pipeline serves it)
with ftkit.evaluation.evaluate: exact match and its 95% interval.

A mark is reached the way `sft.max_minutes` ends a run: at the last step that ends before that much
training time. The run stops there (stop flag: a checkpoint), is evaluated, and resumes from the
checkpoint (same optimizer state, same step count), so the evaluation is not counted as training.
Training time is the wall-clock time of the steps, measured in this run.

The machine kind of these targets is a 2-core CPU; on a machine shared with other jobs the steps
take longer and fewer fit in a minute. --step-seconds S converts minutes to steps at S seconds a
step instead (mark = floor(minutes * 60 / S) steps), so that figures from a loaded machine read
as on an idle one; each dataset prints the median step time this run measured, and a figure
says which way its minutes were counted. --limit evaluates fewer held-out rows (faster;
a wider interval). The last lines print one figure per mark, with the target where there is one.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from _measured import record, slug

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "banking77"
TARGETS = {("banking77-10", 1.0): ">= 0.90", ("builtin", 80 / 60): ">= 0.88 (an earlier 4-minute demo score)"}
DEFAULT_MINUTES = {"banking77-10": [1.0, 3.0], "builtin": [80 / 60], "banking77-77": [1.0, 3.0, 5.0]}


def load_split(name: str, limit: int):
    """(train, test) rows of one dataset, split as the module docstring says."""
    from ftkit import load_data, split
    from ftkit.data import examples

    if name == "builtin":
        parts = split(examples.load("support_routing"), test_size=0.2, seed=0, stratify_by="label")
        train, test = parts["train"], parts["test"].select(range(48))
    else:
        file = {"banking77-10": "banking77_test_10labels.jsonl",
                "banking77-77": "banking77_test_sample2000_77labels.jsonl"}[name]
        if not (REALDATA / file).is_file():
            raise FileNotFoundError(f"{REALDATA / file} is absent (../shared/realdata beside the checkout)")
        data = load_data(REALDATA / file, verbose=False)
        parts = split(data, test_size=100 if name == "banking77-10" else 500, seed=0, stratify_by="label")
        train, test = parts["train"], parts["test"]
        if name == "banking77-77":
            train = train.select(range(1500))
    if limit:
        test = test.select(range(min(limit, len(test))))
    return train, test


def measure(name: str, minutes: list[float], step_seconds: float, limit: int, runs_root: Path,
            overrides: dict | None = None) -> list[tuple]:
    """``[(minutes, step, exact match, low, high, training seconds)]`` for one dataset."""
    from ftkit import load_model
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.models.tuned import load_run_model
    from ftkit.training.events import EventBus, StopFlag
    from ftkit.prompts import classify_zero_shot
    from ftkit.training.sft import SFTSettings, train_sft

    train, test = load_split(name, limit)
    labels = sorted(set(train["completion"]))
    template = classify_zero_shot(labels=labels)
    model, tok = load_model(verbose=False)
    config = SFTSettings(name=f"tta-{name}", logging_steps=1, save_steps=10**6, **(overrides or {}))
    # 605 tokens an example with 77 labels: the only non-default, or the pre-flight refuses every row.
    config.max_length = max(config.max_length, 1024 if name == "banking77-77" else 0)
    state = {"trained": 0.0, "last": None, "steps": [], "mark": 0}
    marks = sorted(minutes)
    stop, bus = StopFlag(), EventBus()

    def on_start(e):
        state["last"] = time.perf_counter()

    def on_log(e):  # one log per step (logging_steps=1): the time since the last one is that step's
        now = time.perf_counter()
        took = now - state["last"]
        state["last"] = now
        state["trained"] += took
        state["steps"].append(took)
        limit_s = marks[state["mark"]] * 60
        # A stop set while a step is logged ends the run after the next step: stop now when the
        # step after that would pass the mark (as max_minutes would, taking steps as long as this one).
        if step_seconds:
            done = (e["step"] + 2) * step_seconds > limit_s
        else:
            done = state["trained"] + 2 * took > limit_s
        if done:
            stop.set()

    bus.on("start", on_start)
    bus.on("log", on_log)
    out, run = [], None
    while state["mark"] < len(marks):
        stop.clear()
        run = train_sft(model, tok, train, template=template, config=config, bus=bus, stop=stop,
                        runs_root=runs_root, resume=run)
        step = run.status["step"]
        tuned, tuned_tok = load_run_model(run, merged=True)
        result = evaluate([Variant(tuned, tuned_tok, template, name="sft", max_new_tokens=12)], test,
                          labels=labels, progress=False).summary.iloc[0]
        out.append((marks[state["mark"]], step, result["exact_match"], result["exact_match_low"],
                    result["exact_match_high"], state["trained"]))
        print(f"  {name}: step {step}, {state['trained']:.0f} s of training, exact match "
              f"{result['exact_match']:.2f}", flush=True)
        state["mark"] += 1
        if run.status["status"] == "completed":  # the epochs ran out before the mark
            break
    if state["steps"]:
        print(f"  {name}: median step {statistics.median(state['steps']):.2f} s over {len(state['steps'])} steps "
              f"(this machine, this run)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="banking77-10,builtin,banking77-77")
    ap.add_argument("--minutes", nargs="*", default=[],
                    help="per dataset, e.g. banking77-10=1,3 (default: " + ", ".join(
                        f"{k}={','.join(f'{m:.3g}' for m in v)}" for k, v in DEFAULT_MINUTES.items()) + ")")
    ap.add_argument("--step-seconds", default="",
                    help="seconds a step, per dataset (banking77-10=1.5,...) or one number for all: minutes "
                         "become steps at this rate instead of measured wall-clock time")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out rows (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--runs", default="", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a lever to measure instead of the default: an SFTSettings field, e.g. batch_size=4 "
                         "or learning_rate=2e-3 (repeatable; figures then say so)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    minutes = dict(DEFAULT_MINUTES)
    for item in args.minutes:
        key, _, values = item.partition("=")
        minutes[key] = [float(v) for v in values.split(",")]
    per_step = {}
    if args.step_seconds:
        if "=" in args.step_seconds:
            per_step = {k: float(v) for k, v in (p.split("=") for p in args.step_seconds.split(","))}
        else:
            per_step = {k: float(args.step_seconds) for k in DEFAULT_MINUTES}
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    root = Path(args.runs or tempfile.mkdtemp(prefix="ftkit-tta-"))
    lines, figures = [], {}
    for name in args.datasets.split(","):
        print(f"{name}: SFT with the defaults, evaluated at {minutes[name]} min", flush=True)
        try:
            rows = measure(name, minutes[name], per_step.get(name, 0.0), args.limit, root / name, overrides)
        except FileNotFoundError as err:
            lines.append(f"{name}: skipped ({err})")
            continue
        how = f"steps at {per_step[name]:.2f} s each" if per_step.get(name) else "wall-clock, this machine"
        how += "".join(f", {k}={v}" for k, v in overrides.items())
        for mark, step, acc, low, high, trained in rows:
            target = next((t for (n, m), t in TARGETS.items() if n == name and math.isclose(m, mark, rel_tol=1e-3)),
                          None)
            label = f"{mark * 60:.0f} s" if mark < 1 or not math.isclose(mark, round(mark)) else f"{mark:.1f} min"
            figures[f"{slug(name)}_{slug(label)}"] = [acc, low, high]
            figures[f"{slug(name)}_{slug(label)}_steps"] = step
            lines.append(f"{name} exact match after {label} of SFT ({step} steps; {how}; {trained:.0f} s "
                         f"measured): {acc:.2f} [{low:.2f}-{high:.2f}]" + (f" (target {target})" if target else ""))
    print()
    for line in lines:
        print(line)
    if figures:
        record("time_to_accuracy", figures, note="minutes counted as " + (
            f"steps at --step-seconds {args.step_seconds}" if args.step_seconds else "wall-clock on this machine"))


if __name__ == "__main__":
    main()
