"""Time to accuracy, in steps, and seconds per step against a hand-written loop on the same host.

    .venv/bin/python benchmarks/time_to_accuracy.py [--only steps,short,speed] [--every 5] [--max-steps 80]
        [--minutes 5] [--limit N] [--rounds 3] [--threads 1]

A minute of training is a different number of steps on each machine (1.0 s a step on one 2-core
host of this kind, 1.7 s on another), so the figures are counted in steps, and the host's speed is
measured against a plain PyTorch loop on the same host, in the same run. Each uses the embedded
model and SFT's defaults (``SFTSettings()``, what ``ftkit run`` trains with an empty ``sft:``
section); evaluation merges the adapter, as the pipeline serves it, and constrains answers to the
labels (``evaluate``'s default), so an answer is a label or nothing.

- steps: banking77-10, the 10-label slice of ../shared/realdata/banking77 (stratified 300 train /
  100 test rows), the zero-shot classification prompt with its label list. Evaluated every
  --every steps (the run stops at the mark with a checkpoint, is evaluated, and resumes with the
  same optimizer state), up to --max-steps: the first mark at or above 0.90 exact match.
- short: banking77-77, the 2,000-row 77-label sample (500 test rows stratified, the first 1,500 of
  the rest for training), trained with the short prompt (``ftkit.prompts.without_label_list``, no
  label list: what ``ftkit run`` trains past 20 labels) for --minutes of training
  (``sft.max_minutes``) on this host, then evaluated on the test rows with the same short prompt.
  Printed with its steps and this host's seconds per step.
- speed: seconds per step of ``train_sft`` against a hand-written loop (PEFT LoRA with the same
  LoRA settings, AdamW at the same learning rate, completion-only labels, steps of the same batch
  size over the same banking77-10 rows and the same prompt), alternated for --rounds rounds of 8
  steps each so both see the same load; the median step of each, the first step of a round left out.

The last lines print one figure each, with its target.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from _measured import record
from train_speed import hand_written_steps

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "banking77"
FILES = {"banking77-10": "banking77_test_10labels.jsonl", "banking77-77": "banking77_test_sample2000_77labels.jsonl"}
GOAL = 0.90  # the exact match the steps figure counts to


def load_split(name: str, limit: int = 0):
    """(train, test) rows of one dataset, split as the module docstring says."""
    from ftkit import load_data, split

    path = REALDATA / FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is absent (../shared/realdata beside the checkout)")
    parts = split(load_data(path, verbose=False), test_size=100 if name == "banking77-10" else 500, seed=0,
                  stratify_by="label")
    train, test = parts["train"], parts["test"]
    if name == "banking77-77":
        train = train.select(range(1500))
    if limit:
        test = test.select(range(min(limit, len(test))))
    return train, test


def score(run, template, test, labels) -> tuple[float, float, float]:
    """Held-out exact match of ``run`` (merged) with ``template``, answers constrained to ``labels``."""
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.generation.labels import label_sequences
    from ftkit.models.tuned import load_run_model

    tuned, tok = load_run_model(run, merged=True)
    longest = max(map(len, label_sequences(tok, labels).values()))  # as ftkit run sizes a constrained answer
    row = evaluate([Variant(tuned, tok, template, name="sft", max_new_tokens=longest + 1)], test, labels=labels,
                   progress=False, timing_rounds=0).summary.iloc[0]
    return row["exact_match"], row["exact_match_low"], row["exact_match_high"]


def steps_to_goal(every: int, max_steps: int, limit: int, root: Path, overrides: dict) -> dict:
    """banking77-10: train, stopping every ``every`` steps to evaluate, until exact match >= GOAL."""
    from ftkit import load_model
    from ftkit.prompts import classify_zero_shot
    from ftkit.training.events import EventBus, StopFlag
    from ftkit.training.sft import SFTSettings, train_sft

    train, test = load_split("banking77-10", limit)
    labels = sorted(set(train["completion"]))
    template = classify_zero_shot(labels=labels)
    model, tok = load_model(verbose=False)
    config = SFTSettings(name="tta-steps", **{**overrides, "logging_steps": 1, "save_steps": 10**6})
    stop, bus, mark = StopFlag(), EventBus(), {"at": every}
    # A stop set while step s is logged ends the run after step s + 1: set it one step before the mark.
    bus.on("log", lambda e: stop.set() if e["step"] + 1 >= mark["at"] else None)
    marks, run = [], None
    while mark["at"] <= max_steps:
        stop.clear()
        run = train_sft(model, tok, train, template=template, config=config, bus=bus, stop=stop, runs_root=root,
                        resume=run)
        step = run.status["step"]
        acc = score(run, template, test, labels)
        marks.append((step, *acc))
        print(f"  banking77-10: step {step}, exact match {acc[0]:.2f} [{acc[1]:.2f}-{acc[2]:.2f}]", flush=True)
        if acc[0] >= GOAL or run.status["status"] == "completed":
            break
        mark["at"] = step + every
    reached = next((m for m in marks if m[1] >= GOAL), None)
    return {"marks": marks, "reached": reached, "rows": len(test)}


def short_prompt_after(minutes: float, limit: int, root: Path, overrides: dict) -> dict:
    """banking77-77 with the short prompt: ``minutes`` of SFT (max_minutes), then evaluated."""
    from ftkit import load_model
    from ftkit.prompts import classify_zero_shot, without_label_list
    from ftkit.training.curves import training_cost
    from ftkit.training.sft import SFTSettings, train_sft

    train, test = load_split("banking77-77", limit)
    labels = sorted(set(train["completion"]))
    template = without_label_list(classify_zero_shot(labels=labels))
    model, tok = load_model(verbose=False)
    run = train_sft(model, tok, train, template=template, runs_root=root,
                    config=SFTSettings(name="tta-short", **{**overrides, "max_minutes": minutes, "save_steps": 10**6}))
    cost = training_cost(run)
    acc = score(run, template, test, labels)
    print(f"  banking77-77 short prompt: {cost['steps']} steps in {cost['seconds']:.0f} s, exact match "
          f"{acc[0]:.2f} [{acc[1]:.2f}-{acc[2]:.2f}] on {len(test)} rows", flush=True)
    return {"acc": acc, "steps": cost["steps"], "seconds": cost["seconds"], "rows": len(test),
            "prompt_tokens": template.token_count(test[0], tok),
            "long_prompt_tokens": classify_zero_shot(labels=labels).token_count(test[0], tok)}


def seconds_per_step(rounds: int, steps: int, root: Path) -> dict:
    """train_sft's and a hand-written loop's step times, alternated round by round."""
    from ftkit import load_model
    from ftkit.models.threads import LoadMeter
    from ftkit.prompts import classify_zero_shot
    from ftkit.training.events import EventBus
    from ftkit.training.sft import SFTSettings, train_sft

    train, _ = load_split("banking77-10")
    labels = sorted(set(train["completion"]))
    template = classify_zero_shot(labels=labels)
    settings = SFTSettings(logging_steps=1, save_steps=10**6)
    ftkit_steps, hand_steps = [], []
    meter = LoadMeter()
    for i in range(rounds):
        rows = train.shuffle(seed=i).select(range(steps * settings.batch_size))
        times, bus = [], EventBus()
        bus.on("log", lambda e: times.append(time.perf_counter()))
        bus.on("start", lambda e: times.append(time.perf_counter()))
        model, tok = load_model(verbose=False)
        train_sft(model, tok, rows, template=template, bus=bus, runs_root=root,
                  config=SFTSettings(name=f"tta-speed-{i}", max_steps=steps, epochs=1, logging_steps=1,
                                     save_steps=10**6))
        ftkit_steps += [b - a for a, b in zip(times[1:-1], times[2:])]  # the first step left out
        model, tok = load_model(verbose=False)
        hand = hand_written_steps(model, tok, rows, template, settings.batch_size, settings.learning_rate,
                                  settings.lora.peft_config())
        hand_steps += hand[1:]
        print(f"  round {i + 1}: train_sft {statistics.median(ftkit_steps):.2f} s/step, hand-written "
              f"{statistics.median(hand_steps):.2f} s/step", flush=True)
    load = meter.read()
    return {"ftkit": statistics.median(ftkit_steps), "hand": statistics.median(hand_steps),
            "n": (len(ftkit_steps), len(hand_steps)), "load": load.others_busy, "cores": load.cores,
            "batch": settings.batch_size}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="steps,short,speed", help="comma list of: steps, short, speed")
    ap.add_argument("--every", type=int, default=5, help="evaluate every N steps (steps)")
    ap.add_argument("--max-steps", type=int, default=80, help="give up after this many steps (steps)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training minutes (short)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out rows (0: all)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of 8 steps each (speed)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: ftkit's choice from the load)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a lever to measure instead of the default (steps, short): an SFTSettings field, e.g. "
                         "learning_rate=2e-3 or trl='{lr_scheduler_type: linear}' (repeatable; figures say so)")
    args = ap.parse_args()
    if args.threads:
        import os

        os.environ["FTKIT_THREADS"] = str(args.threads)  # load_model applies it
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    root = Path(tempfile.mkdtemp(prefix="ftkit-tta-"))
    lines, figures = [], {}
    try:
        if "steps" in wanted:
            out = steps_to_goal(args.every, args.max_steps, args.limit, root / "steps", overrides)
            last = out["marks"][-1]
            if out["reached"]:
                step, acc, low, high = out["reached"]
                figures["banking77_10_steps_to_090"] = step
                lines.append(f"banking77-10 steps to exact match {GOAL:.2f} (evaluated every {args.every}; {acc:.2f} "
                             f"[{low:.2f}-{high:.2f}] on {out['rows']} rows): {step} (target <= 40)")
            else:
                lines.append(f"banking77-10 steps to exact match {GOAL:.2f}: not reached by step {last[0]} "
                             f"({last[1]:.2f}) (target <= 40)")
            figures["banking77_10_marks"] = ", ".join(f"{m[0]}: {m[1]:.2f}" for m in out["marks"])
        if "short" in wanted:
            out = short_prompt_after(args.minutes, args.limit, root / "short", overrides)
            acc, low, high = out["acc"]
            figures["banking77_77_short_prompt"] = [acc, low, high]
            figures["banking77_77_short_prompt_steps"] = out["steps"]
            figures["banking77_77_seconds_per_step"] = out["seconds"] / max(out["steps"], 1)
            lines.append(f"banking77-77 exact match after {args.minutes:g} min of SFT with the short prompt "
                         f"({out['steps']} steps at {out['seconds'] / max(out['steps'], 1):.2f} s; "
                         f"{out['prompt_tokens']} prompt tokens instead of {out['long_prompt_tokens']}; "
                         f"{out['rows']} rows): {acc:.2f} [{low:.2f}-{high:.2f}] (target >= 0.80)")
        if "speed" in wanted:
            out = seconds_per_step(args.rounds, 8, root / "speed")
            ratio = out["ftkit"] / out["hand"]
            figures.update(train_sft_seconds_per_step=out["ftkit"], hand_written_seconds_per_step=out["hand"],
                           train_sft_vs_hand_written=ratio)
            lines.append(f"seconds per step, train_sft {out['ftkit']:.2f} vs hand-written loop {out['hand']:.2f} "
                         f"(batches of {out['batch']}, {out['n'][0]} and {out['n'][1]} steps; other processes kept "
                         f"{out['load']:.1f} of {out['cores']} cores busy): {ratio:.2f}x (target <= 1.1x)")
    except FileNotFoundError as err:
        lines.append(f"skipped: {err}")
    print()
    for line in lines:
        print(line)
    if figures:
        note = f"torch threads {args.threads or 'ftkit choice'}" + "".join(f", {k}={v}" for k, v in overrides.items())
        record("time_to_accuracy" + ("/levers" if overrides else ""), figures, note=note)


if __name__ == "__main__":
    main()
