"""Batched generation and the shared-prefix cache, measured side by side in one run.

    .venv/bin/python benchmarks/generation.py [--rows 64] [--shots 10]

On the embedded model and the built-in routing example (test split):
1. 64 zero-shot prompts: ftkit.generation.generate (batched) against plain `model.generate` one prompt at a
   time, examples per second.
2. The same rows 10-shot against zero-shot, both through ftkit.generation.generate (prefix cache, the prefix
   attended once per batch: ftkit.fastpath.prefix_attention): wall time ratio, and the 10-shot time
   without the prefix cache for reference; greedy outputs with and without the cache are counted
   (identical in float32, tested; in bfloat16 a row or two may differ by rounding).
3. Greedy rows per second through ftkit.generation.generate at batch 1 and at batch 16 (zero-shot).
4. The whole evaluation as a user runs it, ftkit.evaluation.evaluate on all 96 held-out rows (warm-up, the
   batched pass, the one-at-a-time rows, scoring): 10-shot against zero-shot wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from ftkit import load_model, split
from ftkit.data import examples
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.generation.generate import generate, render_prompts
from ftkit.prompts import classify_few_shot, classify_zero_shot

from _measured import record


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@torch.inference_mode()
def one_at_a_time(model, tok, convs, max_new_tokens):
    for text in render_prompts(tok, convs):
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    args = ap.parse_args()
    parts = split(examples.load("support_routing", verbose=False), test_size=96, seed=0, stratify_by="label")
    held_out = parts["test"]
    train, test = parts["train"], held_out.select(range(args.rows))
    labels = sorted(set(train["label"]))
    model, tok = load_model(verbose=False)
    zero = classify_zero_shot(labels=labels)
    few = classify_few_shot(train, k=args.shots, labels=labels)
    zero_convs = [zero.messages(r) for r in test]
    few_convs = [few.messages(r) for r in test]
    n = args.max_new_tokens

    generate(model, tok, zero_convs[:4], max_new_tokens=n, progress=False)  # warm-up
    _, t_seq = timed(lambda: one_at_a_time(model, tok, zero_convs, n))
    _, t_zero = timed(lambda: generate(model, tok, zero_convs, max_new_tokens=n, progress=False))
    _, t_one = timed(lambda: generate(model, tok, zero_convs, max_new_tokens=n, batch_size=1, progress=False))
    cached, t_few = timed(lambda: generate(model, tok, few_convs, max_new_tokens=n, progress=False))
    plain, t_few_plain = timed(lambda: generate(model, tok, few_convs, max_new_tokens=n, prefix_cache=False,
                                                progress=False))
    same = sum(a.text == b.text for a, b in zip(cached, plain))
    evaluated = {}
    for name, template in (("zero-shot", zero), (f"{args.shots}-shot", few)):
        variant = Variant(model, tok, template, name=name, max_new_tokens=n)
        _, evaluated[name] = timed(lambda v=variant: evaluate([v], held_out, labels=labels, progress=False))
    zero_tokens = sum(len(tok(t)["input_ids"]) for t in render_prompts(tok, zero_convs)) / args.rows
    few_tokens = sum(o.prompt_tokens for o in cached) / args.rows
    print(f"rows: {args.rows}; prompt tokens per request: zero-shot {zero_tokens:.0f}, "
          f"{args.shots}-shot {few_tokens:.0f}")
    print(f"seconds: one at a time {t_seq:.1f}, batched zero-shot {t_zero:.1f}, "
          f"{args.shots}-shot cached {t_few:.1f}, {args.shots}-shot uncached {t_few_plain:.1f}")
    print(f"identical greedy outputs with and without the prefix cache: {same}/{args.rows}")
    print(f"batched vs one at a time: {t_seq / t_zero:.1f}x (target >= 4)")
    print(f"{args.shots}-shot vs zero-shot time: {t_few / t_zero:.2f}x (target <= 1.5)")
    print(f"{args.shots}-shot prefix cache vs no cache: {t_few_plain / t_few:.1f}x faster")
    print(f"evaluate() on the {len(held_out)} held-out rows, seconds: zero-shot {evaluated['zero-shot']:.1f}, "
          f"{args.shots}-shot {evaluated[f'{args.shots}-shot']:.1f}")
    print(f"{args.shots}-shot vs zero-shot evaluation, evaluate(): "
          f"{evaluated[f'{args.shots}-shot'] / evaluated['zero-shot']:.2f}x (target <= 1.5)")
    print(f"greedy rows/s, ftkit.generation.generate at batch 1: {args.rows / t_one:.1f} (reported)")
    print(f"greedy rows/s, ftkit.generation.generate at batch 16: {args.rows / t_zero:.1f} (reported)")
    record("generation", {
        "rows": args.rows, "shots": args.shots,
        "prompt_tokens_zero_shot": zero_tokens, "prompt_tokens_few_shot": few_tokens,
        "prompt_tokens_ratio": few_tokens / zero_tokens,
        "batched_vs_one_at_a_time": t_seq / t_zero,
        "few_shot_vs_zero_shot_time": t_few / t_zero,
        "prefix_cache_speedup": t_few_plain / t_few,
        "few_shot_vs_zero_shot_evaluation": evaluated[f"{args.shots}-shot"] / evaluated["zero-shot"],
        "identical_outputs": f"{same}/{args.rows}",
        "rows_per_s_batch_1": args.rows / t_one, "rows_per_s_batch_16": args.rows / t_zero,
    })


if __name__ == "__main__":
    main()
