"""Prompt baselines through ftkit.evaluation.evaluate: zero-shot, zero-shot with a system prompt, few-shot.

    .venv/bin/python benchmarks/prompt_baselines.py                      # the built-in example
    .venv/bin/python benchmarks/prompt_baselines.py --data ../shared/realdata/banking77/banking77_test_10labels.jsonl

Prints the evaluation summary (means with 95% bootstrap intervals, macro-F1, invalid outputs,
latency and tokens per request) and the paired comparison of the best prompt against zero-shot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ftkit import load_data, load_model, split
from ftkit.data import examples
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.prompts import classify_few_shot, classify_with_system, classify_zero_shot

from _measured import record, slug


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="a labelled file (text/label); default: the built-in example")
    ap.add_argument("--test-size", type=int, default=100)
    ap.add_argument("--shots", type=int, default=10)
    args = ap.parse_args()
    if args.data and not Path(args.data).exists():
        raise SystemExit(f"skipped: {args.data} not found (the shared real data lives beside the checkout)")
    data = load_data(args.data) if args.data else examples.load("support_routing")
    parts = split(data, test_size=args.test_size, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"]
    labels = sorted(set(data["label"]))
    model, tok = load_model()
    variants = [
        Variant(model, tok, classify_zero_shot(labels=labels), max_new_tokens=12),
        Variant(model, tok, classify_with_system(labels=labels), max_new_tokens=12),
        Variant(model, tok, classify_few_shot(train, k=args.shots, labels=labels), max_new_tokens=12),
    ]
    result = evaluate(variants, test, metrics=["exact_match"], labels=labels)
    cols = ["exact_match", "exact_match_low", "exact_match_high", "macro_f1", "invalid_rate",
            "latency_s", "prompt_tokens", "new_tokens"]
    print(result.summary[cols].round(3).to_string())
    best = result.summary["exact_match"].idxmax()
    zero = variants[0].name
    print(result.compare(best, zero, "exact_match"))
    s = result.summary
    print(f"{best} prompt tokens vs zero-shot: {s.loc[best, 'prompt_tokens'] / s.loc[zero, 'prompt_tokens']:.1f}x")
    print(f"{best} exact match: {s.loc[best, 'exact_match']:.2f}; zero-shot: {s.loc[zero, 'exact_match']:.2f}")
    figures = {"held_out_rows": len(test), "best_prompt": best,
               "best_vs_zero_shot_prompt_tokens": s.loc[best, "prompt_tokens"] / s.loc[zero, "prompt_tokens"]}
    for name, row in s.iterrows():
        figures[slug(name)] = [row["exact_match"], row["exact_match_low"], row["exact_match_high"]]
        figures[f"{slug(name)}_prompt_tokens"] = row["prompt_tokens"]
    record("prompt_baselines" if not args.data else f"prompt_baselines/{slug(Path(args.data).stem)}", figures)


if __name__ == "__main__":
    main()
