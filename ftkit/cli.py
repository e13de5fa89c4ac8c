"""The ``ftkit`` command.

``ftkit demo`` runs offline on the embedded model and the built-in example: it reports the
device, loads and validates the data, splits it, and measures zero-shot and few-shot prompting
on the held-out rows, printing accuracy with its 95% interval, prompt tokens per request and
latency side by side, and the paired comparison of the two.
"""

from __future__ import annotations

import argparse
import sys
import time

from ftkit import examples
from ftkit.data import check_data, split
from ftkit.evaluate import Variant, evaluate
from ftkit.models import describe_device, load_model
from ftkit.prompts import classify_few_shot, classify_zero_shot


def demo(args: argparse.Namespace) -> int:
    print(f"Device: {describe_device()}")
    start = time.perf_counter()
    model, tokenizer = load_model(args.model)
    print(f"Model: {args.model} loaded in {time.perf_counter() - start:.1f} s")

    report = check_data(examples.path(args.example), tokenizer=tokenizer, max_length=256)
    print(f"\nData: {report.summary()}")
    if not report.ok:
        return 1
    parts = split(report.dataset, test_size=0.2, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"]
    test = test.select(range(min(args.limit, len(test))))
    labels = sorted(set(train["label"]))
    print(f"Split: {len(train)} train / {len(parts['test'])} test rows, stratified by label; "
          f"evaluating on {len(test)}")

    # Shots come from the training split only: the test rows stay unseen.
    variants = [Variant(model, tokenizer, classify_zero_shot(labels=labels), max_new_tokens=12),
                Variant(model, tokenizer, classify_few_shot(train, k=len(labels), labels=labels),
                        max_new_tokens=12)]
    result = evaluate(variants, test, metrics=["exact_match"], labels=labels)
    s = result.summary
    print(f"\n{'variant':<10} {'accuracy':>9} {'95% CI':>11} {'prompt tokens':>14} {'latency s':>10}")
    for name, r in s.iterrows():
        ci = f"{r['exact_match_low']:.2f}-{r['exact_match_high']:.2f}"
        print(f"{name:<10} {r['exact_match']:>9.2f} {ci:>11} {r['prompt_tokens']:>14.0f} {r['latency_s']:>10.2f}")
    print(result.compare(variants[1].name, variants[0].name, "exact_match"))
    print("\nSample zero-shot answers (message -> expected | model):")
    for _, row in result.table.head(3).iterrows():
        print(f"  {row['input'][:60]!r} -> {row['reference']} | {row['zero-shot: output'][:40]!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="prompt baselines on the embedded model and a built-in example")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, folder or hub id")
    labelled = [n for n in examples.names() if examples.info(n).task == "classification"]
    p.add_argument("--example", default="support_routing", choices=labelled)
    p.add_argument("--limit", type=int, default=48, help="test rows to evaluate (fewer is faster)")
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
