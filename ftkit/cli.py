"""The ``ftkit`` command.

``ftkit demo`` runs offline on the embedded model and the built-in example: it reports the
device, loads and validates the data, splits it, and measures zero-shot and few-shot prompting
on the held-out rows, printing accuracy and prompt tokens per request side by side.
"""

from __future__ import annotations

import argparse
import sys
import time

from ftkit import examples, metrics
from ftkit.data import check_data, split
from ftkit.generate import generate
from ftkit.models import describe_device, load_model
from ftkit.prompts import classify_messages


def _prompt_variant(model, tokenizer, test, labels, shots, limit):
    rows = test.select(range(min(limit, len(test))))
    convs = [classify_messages(r["prompt"], labels, shots=shots) for r in rows]
    outs = generate(model, tokenizer, convs, max_new_tokens=12)
    scores = [metrics.exact_match(o.text, r["completion"]) for o, r in zip(outs, rows)]
    return {
        "accuracy": sum(scores) / len(scores),
        "prompt_tokens": sum(o.prompt_tokens for o in outs) / len(outs),
        "latency_s": sum(o.latency_s for o in outs) / len(outs),
        "examples": list(zip(rows["prompt"], rows["completion"], (o.text for o in outs)))[:3],
    }


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
    labels = sorted(set(train["label"]))
    print(f"Split: {len(train)} train / {len(test)} test rows, stratified by label")

    # One example per label, always from the training split: the test rows stay unseen.
    shots = [(next(r["prompt"] for r in train if r["label"] == lab), lab) for lab in labels]
    results = {}
    for name, variant_shots in [("zero-shot", []), (f"{len(shots)}-shot", shots)]:
        print(f"\nPrompting: {name} on {min(args.limit, len(test))} test rows")
        results[name] = _prompt_variant(model, tokenizer, test, labels, variant_shots, args.limit)

    print(f"\n{'variant':<10} {'accuracy':>9} {'prompt tokens':>14} {'latency s':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['accuracy']:>9.2f} {r['prompt_tokens']:>14.0f} {r['latency_s']:>10.2f}")
    print("\nSample zero-shot answers (message -> expected | model):")
    for text, ref, out in results["zero-shot"]["examples"]:
        print(f"  {text[:60]!r} -> {ref} | {out[:40]!r}")
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
