"""What watching the answers costs: the same SFT steps with and without the sampled answers.

    .venv/bin/python benchmarks/train_sampling.py [--steps 48]

On the built-in classification example (support_routing, the split train_speed.py uses) with the
embedded model, train_sft runs ``--steps`` steps with the TrainPanel's CPU defaults (batch 4, a
loss logged every step) twice in one process: without sampling, then with the panel's sampling
(``sample_rows`` 3 held-out rows, ``sample_every`` = ftkit.training.settings.sampling_interval
for the panel's whole run on this example, about 8 samplings a run). Both start after a short
warm-up run, so neither pays the first call's allocations.

The overhead is the samplings' own seconds (each ``sample`` event's ``seconds``, timed around its
generate call) over the rest of the same run's training time: both measured in the same minutes,
under the same load, and sampling changes nothing else in training (the losses are the same,
tests/training/test_sft.py). The two runs' wall times are printed too, but on a machine shared with
other work two runs minutes apart differ by far more than the sampling from load alone (measured
here: the sampled run once 7% *faster*, once 60% slower), so their difference is not the figure.
Training time is the trainer's own ``train_runtime``.

A run of ``--steps`` samples more often per step than the panel's whole run does (the step-0
answers and one every ``sample_every`` steps, over fewer steps), so the overhead printed is an upper
bound for the panel's run; the projection line scales the sampling time measured here to the
panel's number of steps and samplings.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _measured import record

SAMPLE_ROWS = 3


def rows_and_template():
    from ftkit import split
    from ftkit.data import examples
    from ftkit.prompts import classify_zero_shot

    parts = split(examples.load("support_routing", verbose=False), test_size=96, seed=0, stratify_by="label")
    return parts["train"], parts["test"], classify_zero_shot(labels=sorted(set(parts["train"]["label"])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=48, help="SFT steps of each run")
    measure(ap.parse_args().steps)


def measure(steps: int = 48) -> str:
    """Train, print, record; return the overhead line (benchmarks/verdict.py prints it too)."""
    from types import SimpleNamespace

    from ftkit import load_model
    from ftkit.training.settings import device_defaults, planned_steps, sampling_interval
    from ftkit.training.sft import SFTSettings, train_sft

    train, test, template = rows_and_template()
    model, tok = load_model(verbose=False)
    panel = SFTSettings(**device_defaults("cpu"))  # what the TrainPanel's form starts from on a CPU
    every = sampling_interval(panel, len(train))
    planned = planned_steps(panel, len(train))  # the panel run's steps
    root = tempfile.mkdtemp(prefix="ftkit-sampling-bench-")

    def train_for(steps: int, sample_every: int):
        config = SFTSettings(**{**device_defaults("cpu"), "max_minutes": 0}, max_steps=steps, save_steps=10_000,
                             sample_every=sample_every, sample_rows=SAMPLE_ROWS)
        run = train_sft(model, tok, train, template=template, config=config, runs_root=root, progress=False,
                        sample_from=test)
        [end] = run.events("end")
        return end["train_runtime"], run.events("sample")

    args = SimpleNamespace(steps=steps)
    t0 = time.perf_counter()
    train_for(2, 1)  # warm-up: the first steps and the first generate call pay for allocations
    plain, _ = train_for(args.steps, 0)
    sampled, samples = train_for(args.steps, every)
    seconds = [e["seconds"] for e in samples]
    per_sampling = sum(seconds) / len(seconds)
    per_step = (sampled - sum(seconds)) / args.steps  # the sampled run's own steps, without its samplings
    timed = sum(seconds) / (sampled - sum(seconds))
    wall = (sampled - plain) / plain
    projected = (planned // every + 1) * per_sampling / (planned * per_step)
    print(f"panel defaults on support_routing ({len(train)} training rows): {planned} steps, sample_every "
          f"{every}, {SAMPLE_ROWS} rows, at most {samples[0]['max_new_tokens']} new tokens")
    print(f"{args.steps} steps without sampling: {plain:.1f} s ({plain / args.steps:.2f} s a step)")
    print(f"{args.steps} steps with sampling at steps {[e['step'] for e in samples]}: {sampled:.1f} s "
          f"({per_step:.2f} s a step, {per_sampling:.2f} s a sampling)")
    print(f"wall-clock difference of the two runs: {100 * wall:+.1f}% (noisy: the machine's load between them)")
    print(f"projected for the panel's run of {planned} steps: {100 * projected:.1f}%")
    print(f"answers at step {samples[-1]['step']}: "
          + ", ".join(f"{r['answer']!r} ({'=' if r['match'] else '!='} {r['reference']})" for r in samples[-1]["rows"]))
    print(f"benchmark took {time.perf_counter() - t0:.0f} s; the machine's other work makes these noisy")
    line = f"sampling overhead: {100 * timed:.1f}% of training time (target <= 10)"
    print(line)
    record("train_sampling", {
        "steps": args.steps, "sample_every": every, "sample_rows": SAMPLE_ROWS, "samplings": len(samples),
        "step_s": per_step, "sampling_s": per_sampling, "overhead_pct": 100 * timed, "wall_clock_difference_pct": 100 * wall,
        "projected_panel_pct": 100 * projected,
    })
    return line


if __name__ == "__main__":
    main()
