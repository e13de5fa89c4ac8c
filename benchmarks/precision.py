"""float32 against bfloat16 on this CPU: training speed, held-out accuracy, generation speed.

    .venv/bin/python benchmarks/precision.py [--steps 24] [--batch 8] [--rows 48] [--repeats 5]

On the embedded model and the built-in routing example (stratified split, test_size=0.2, seed 0),
everything through ftkit's own API:
1. train_sft from a freshly loaded model in each precision: the same rows, seed and step count.
   Speed comes from the run's own log events (one per step): non-padding tokens per second of
   the fastest of steps 2..N (s/step: the mean tokens of a step at that speed), so the first
   step's warm-up, the checkpoint write and bursts of other jobs on the shared cores fall out.
2. Both tuned models (reloaded from their saved adapters in the precision they trained in) are
   evaluated in one evaluate() call on the first --rows held-out rows, so the bf16 - fp32
   accuracy difference is a paired bootstrap on the same rows.
3. Greedy generation of those rows (zero-shot template), alternating fp32, bf16, fp32, bf16...,
   best time of each: on a shared 2-core machine the alternation spreads any noise evenly.
4. The dtypes of the LoRA weights and of AdamW's exp_avg in each run (from the trained model,
   or its saved adapter, and the checkpoint's optimizer.pt), and the bf16 flag the trainer got.

Decision rule, printed last: keep bf16 only if its training is faster (ratio > 1) AND the upper
end of the 95% CI of (bf16 - fp32) accuracy is >= 0, i.e. bf16 is not shown to be worse.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ftkit import load_model, split
from ftkit.data import examples
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.generation.generate import generate
from ftkit.models.tuned import load_run_model
from ftkit.prompts import classify_zero_shot
from ftkit.training.sft import SFTSettings, train_sft

from _measured import record

PRECISIONS = ("float32", "bfloat16")
SHORT = {"float32": "fp32", "bfloat16": "bf16"}


def train_one(dtype, train, template, args, root):
    model, tok = load_model(device="cpu", dtype=dtype, verbose=False)
    settings = SFTSettings(name=f"precision-{SHORT[dtype]}", max_steps=args.steps, batch_size=args.batch,
                           learning_rate=args.lr, max_length=args.max_length, seed=0,
                           logging_steps=1, save_steps=args.steps)  # one checkpoint, for optimizer.pt
    t0 = time.perf_counter()
    run = train_sft(model, tok, train, template=template, runs_root=root, config=settings)
    wall = time.perf_counter() - t0
    logs = [e for e in run.events("log") if e.get("num_tokens") is not None]
    # Per step from 2 on: (non-padding tokens, seconds) from the run's own log events. Another job
    # on the shared cores only ever adds time, so the fastest step is the estimate (as timeit's
    # min); the median shows how much the sharing cost.
    steps = [(float(b["num_tokens"]) - float(a["num_tokens"]), b["time"] - a["time"])
             for a, b in itertools.pairwise(logs)]
    if not steps:  # the log events changed shape: the whole call
        steps = [(float("nan"), wall / args.steps)]
    rates = [tokens / seconds for tokens, seconds in steps]
    per_step = statistics.mean(tokens for tokens, _ in steps)
    return run, {"tokens_s": max(rates), "median_tokens_s": statistics.median(rates),
                 "step_s": per_step / max(rates), "wall_s": wall, "load": os.getloadavg()[0],
                 "loss": float(logs[-1].get("loss", "nan")) if logs else float("nan"), "dtypes": stored_dtypes(run)}


def stored_dtypes(run):
    """(LoRA weight dtype, AdamW exp_avg dtype, the trainer's bf16 flag) as the run left them."""
    model = getattr(run, "model", None)
    lora = next((p.dtype for n, p in model.named_parameters() if "lora_A" in n), None) if model is not None else None
    if lora is None:  # no trained model on the run: read the saved adapter
        from safetensors.torch import load_file

        saved = load_file(Path(run.adapter_dir) / "adapter_model.safetensors")
        lora = next(t.dtype for k, t in saved.items() if "lora_A" in k)
    checkpoint, adam, bf16_flag = run.last_checkpoint(), "no checkpoint", None
    if checkpoint is not None and (checkpoint / "optimizer.pt").is_file():
        state = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)["state"]
        adam = str(next(iter(state.values()))["exp_avg"].dtype).replace("torch.", "")
        # our own file, just written: the pickled TrainingArguments say whether bf16 autocast was on
        bf16_flag = torch.load(checkpoint / "training_args.bin", weights_only=False).bf16
    return str(lora).replace("torch.", ""), adam, bf16_flag


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rows", type=int, default=48, help="held-out rows to evaluate and generate")
    ap.add_argument("--repeats", type=int, default=5, help="generation passes per precision")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    args = ap.parse_args()
    t_start = time.perf_counter()
    parts = split(examples.load("support_routing", verbose=False), test_size=0.2, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"].select(range(args.rows))
    labels = sorted(set(train["label"]))
    zero = classify_zero_shot(labels=labels)
    print(f"torch threads: {torch.get_num_threads()}; {len(train)} training rows, {args.steps} steps of "
          f"{args.batch}; {args.rows} held-out rows")

    train_stats, models = {}, {}
    with tempfile.TemporaryDirectory(prefix="ftkit-precision-") as root:
        for dtype in PRECISIONS:
            run, train_stats[dtype] = train_one(dtype, train, zero, args, root)
            # Reloaded rather than run.model: after a bf16 run, accelerate's autocast wrapper stays
            # on run.model.forward, so it would not generate as a saved adapter does.
            run.model = None
            models[dtype] = load_run_model(run, device="cpu", dtype=dtype)
            s = train_stats[dtype]
            print(f"{SHORT[dtype]} training: best step {s['tokens_s']:.1f} tokens/s, median step "
                  f"{s['median_tokens_s']:.1f}; {s['wall_s']:.0f} s for the whole train_sft call; last loss "
                  f"{s['loss']:.3f}; 1-min load average {s['load']:.1f} (about 2 is this script alone)")

    result = evaluate([Variant(m, t, zero, name=SHORT[d], max_new_tokens=args.max_new_tokens)
                       for d, (m, t) in models.items()], test, labels=labels, progress=False)
    print(result.summary.filter(regex="^(exact_match|label_accuracy|invalid)").round(3).to_string())
    diff = result.compare("bf16", "fp32", "exact_match")
    print(diff)
    print(result.compare("bf16", "fp32", "label_accuracy"))

    convs = [zero.messages(r) for r in test]
    gen_times = {d: [] for d in PRECISIONS}
    for _ in range(args.repeats):  # evaluate() above was the warm-up
        for dtype, (model, tok) in models.items():
            t0 = time.perf_counter()
            generate(model, tok, convs, max_new_tokens=args.max_new_tokens, progress=False)
            gen_times[dtype].append(time.perf_counter() - t0)
    gen = {d: args.rows / min(ts) for d, ts in gen_times.items()}
    print("generation seconds per pass: " + "; ".join(
        f"{SHORT[d]} {', '.join(f'{t:.1f}' for t in ts)}" for d, ts in gen_times.items()))

    fp32, bf16 = train_stats["float32"], train_stats["bfloat16"]
    train_ratio, gen_ratio = bf16["tokens_s"] / fp32["tokens_s"], gen["bfloat16"] / gen["float32"]
    print(f"total wall time: {(time.perf_counter() - t_start) / 60:.1f} min")
    print(f"fp32 train s/step: {fp32['step_s']:.2f}, bf16 train s/step: {bf16['step_s']:.2f}")
    print(f"fp32 train tokens/s: {fp32['tokens_s']:.1f}, bf16 train tokens/s: {bf16['tokens_s']:.1f} (best step)")
    print(f"bf16 vs fp32 training speed: {train_ratio:.2f}x (target > 1.0 to keep bf16)")
    for name, target in (("fp32", " (target > 0.3: a meaningful comparison)"), ("bf16", "")):
        row = result.summary.loc[name]
        print(f"{name} held-out accuracy: {row['exact_match']:.2f} (95% CI {row['exact_match_low']:.2f} to "
              f"{row['exact_match_high']:.2f}), label accuracy {row['label_accuracy']:.2f}{target}")
    print(f"bf16 minus fp32 held-out accuracy: {diff.mean_diff:+.2f} (95% CI {diff.ci_low:+.2f} to "
          f"{diff.ci_high:+.2f}) (target: CI upper end >= 0)")
    print(f"fp32 generation rows/s: {gen['float32']:.2f}, bf16 generation rows/s: {gen['bfloat16']:.2f}")
    print(f"bf16 vs fp32 generation speed: {gen_ratio:.2f}x (target > 1.0)")
    (lora, adam, flag), (lora32, adam32, flag32) = bf16["dtypes"], fp32["dtypes"]
    print(f"LoRA weights in bf16 runs: {lora}; optimizer state: {adam} (fp32 runs: {lora32}; {adam32}; "
          f"trainer bf16 flag: {flag} in the bf16 run, {flag32} in the fp32 run)")
    rule = "rule: bf16 only if its training is faster and its accuracy is not significantly worse"
    if train_ratio > 1 and diff.ci_high >= 0:
        print(f"choice supported: bf16 on this CPU (faster training at equal accuracy; {rule})")
    else:
        print(f"choice supported: float32 on this CPU ({rule})")
    accuracy = {name: [result.summary.loc[name, c] for c in ("exact_match", "exact_match_low", "exact_match_high")]
                for name in ("fp32", "bf16")}
    record("precision", {
        "steps": args.steps, "batch": args.batch, "held_out_rows": args.rows,
        "fp32_tokens_per_s": fp32["tokens_s"], "bf16_tokens_per_s": bf16["tokens_s"], "training_speed_ratio": train_ratio,
        "fp32_accuracy": accuracy["fp32"], "bf16_accuracy": accuracy["bf16"],
        "accuracy_difference": [diff.mean_diff, diff.ci_low, diff.ci_high],
        "fp32_rows_per_s": gen["float32"], "bf16_rows_per_s": gen["bfloat16"], "generation_speed_ratio": gen_ratio,
        "choice": "bf16" if train_ratio > 1 and diff.ci_high >= 0 else "float32",
    })


if __name__ == "__main__":
    main()
