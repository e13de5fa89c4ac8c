"""Per-request latency of the base model, the same weights frozen, and a tuned run as ftkit
loads it, measured side by side in one run.

    .venv/bin/python benchmarks/latency.py [--rows 48] [--single 8] [--repeats 2] [--max-new-tokens 12]

The issue: in `make demo` a LoRA SFT variant reported twice the zero-shot latency per request
while generating fewer tokens. Its cause was the weights' ``requires_grad``: PEFT freezes the base
model, and for a frozen bias-free head torch broadcast the weight into a batched product, copying
it whole in bfloat16 on every prefill (see ``ftkit.fastpath.lm_head.contiguous_lm_head``).

Variants, on the embedded model and zero-shot prompts of the built-in routing example:
- ``base``: ``load_model()`` as the prompt baselines use it (weights trainable, as loaded);
- ``frozen``: a copy of the same weights with ``requires_grad=False``;
- ``frozen, no fix``: the same, with generate()'s contiguous head input switched off (reference);
- ``run (PEFT)``: a LoRA run (random B, so it changes the answers) saved with
  ``ftkit.runs.new_run`` and loaded by ``ftkit.models.tuned.load_run_model()``, as the ComparePanel uses it;
- ``run (merged)``: the same run through ``pipeline.served_model()``, as the pipeline serves it.

Every variant runs on the same batches, in turn (the order rotates from batch to batch), after
one untimed batch of its own; each batch is timed ``--repeats`` times and its fastest time
counts (the machine is shared). End-of-sequence is switched off, so every variant computes
exactly ``--max-new-tokens`` tokens per request: the ratios compare equal work. Per request is
the wall time divided by the requests, once batched (16 at a time) and once one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from unittest import mock

import torch
from accelerate.utils import is_peft_model

import ftkit.generation.generate
from ftkit import load_model, split
from ftkit.data import examples
from ftkit.generation.generate import generate
from ftkit.models.device import model_info
from ftkit.models.tuned import load_run_model
from ftkit.pipeline import served_model
from ftkit.prompts import classify_zero_shot
from ftkit.runs import Run, new_run
from ftkit.training.settings import LoraSettings

from _measured import record

BATCH = 16
FROZEN_TARGET, TUNED_TARGET = 1.10, 1.15


def lora_run(model, tokenizer, root) -> Run:
    """A run folder holding a LoRA adapter with random B (what a trained adapter looks like to
    the loaders, without the training), on ftkit's default LoRA settings."""
    from peft import get_peft_model

    from ftkit.models.loading import shared_weights_copy

    config = LoraSettings().peft_config()
    config.init_lora_weights = False  # random A and B: the adapter really changes the outputs
    peft = get_peft_model(shared_weights_copy(model), config)
    run = new_run("latency-lora", {"kind": "sft", "base_model": model_info(model).source}, root=root)
    peft.save_pretrained(run.adapter_dir)
    tokenizer.save_pretrained(run.adapter_dir)
    run.set_status("completed")
    for p in model.parameters():  # PEFT froze the shared weights; the base stays as loaded
        p.requires_grad_(True)
    return run


def run_to_length(model) -> None:
    """No end-of-sequence: every variant generates the same number of tokens."""
    base = model.get_base_model() if is_peft_model(model) else model
    base.generation_config.eos_token_id = None


@contextlib.contextmanager
def without_fix():
    """generate() as it was before the fix: the head gets the strided slice transformers gives it."""
    with mock.patch.object(ftkit.generation.generate, "contiguous_lm_head", lambda model: contextlib.nullcontext(model)):
        yield


def measure(variants: dict, groups: list[list], batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    """Per request seconds of each variant over the same groups of conversations, fastest of
    ``repeats`` per group; the variants take turns within each group."""
    names = list(variants)
    best = {name: [float("inf")] * len(groups) for name in names}
    for rep in range(repeats):
        for k, group in enumerate(groups):
            shift = (k + rep) % len(names)
            for name in names[shift:] + names[:shift]:
                model, tok, ctx = variants[name]
                with ctx():
                    t0 = time.perf_counter()
                    generate(model, tok, group, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=False)
                    best[name][k] = min(best[name][k], time.perf_counter() - t0)
    n = sum(len(g) for g in groups)
    return {name: sum(times) / n for name, times in best.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48, help="requests timed in batches of 16")
    ap.add_argument("--single", type=int, default=8, help="requests timed one at a time")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    parts = split(examples.load("support_routing", verbose=False), test_size=96, seed=0, stratify_by="label")
    labels = sorted(set(parts["train"]["label"]))
    template = classify_zero_shot(labels=labels)
    convs = [template.messages(r) for r in parts["test"].select(range(max(args.rows, args.single) + BATCH))]
    warm, convs = convs[:BATCH], convs[BATCH:]

    model, tok = load_model(dtype=args.dtype, verbose=False)
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(model.dtype, str(model.dtype))
    frozen = copy.deepcopy(model).requires_grad_(False)
    with tempfile.TemporaryDirectory() as root:
        run = lora_run(model, tok, root)
        peft, peft_tok = load_run_model(run, dtype=args.dtype)
        merged, merged_tok = served_model(run)  # loads its own copy of the base, as the pipeline does
        if args.dtype != "auto":
            merged = merged.to(model.dtype)
    plain = contextlib.nullcontext
    variants = {"base": (model, tok, plain), "frozen": (frozen, tok, plain),
                "frozen, no fix": (frozen, tok, without_fix),
                "run (PEFT)": (peft, peft_tok, plain), "run (merged)": (merged, merged_tok, plain)}
    print(f"model: {model_info(model).source} in {model.dtype}, {torch.get_num_threads()} threads; "
          f"{args.rows} requests in batches of {BATCH}, {args.single} one at a time; "
          f"{args.max_new_tokens} new tokens each; fastest of {args.repeats}")
    print("requires_grad: " + ", ".join(f"{name} {any(p.requires_grad for p in m.parameters())}"
                                        for name, (m, _, _) in variants.items()))
    answers = {}
    for name, (m, t, ctx) in variants.items():
        run_to_length(m)
        with ctx():  # warm-up, untimed: one batch and one single request per variant
            answers[name] = [o.text for o in generate(m, t, warm, max_new_tokens=args.max_new_tokens,
                                                      batch_size=BATCH, progress=False)]
            generate(m, t, warm[:1], max_new_tokens=args.max_new_tokens, batch_size=1, progress=False)
    same = sum(a == b == c for a, b, c in zip(answers["base"], answers["frozen"], answers["frozen, no fix"]))
    print(f"greedy answers of the warm-up batch, base = frozen = frozen without the fix: {same}/{len(warm)}; "
          f"run (PEFT) = run (merged): {sum(a == b for a, b in zip(answers['run (PEFT)'], answers['run (merged)']))}"
          f"/{len(warm)} (merging rounds to {dtype})")

    batched = measure(variants, [convs[i:i + BATCH] for i in range(0, args.rows, BATCH)], BATCH,
                      args.max_new_tokens, args.repeats)
    single = measure(variants, [[c] for c in convs[:args.single]], 1, args.max_new_tokens, args.repeats)
    print(f"\n{'variant':<16} {'batched s/req':>14} {'x base':>7} {'single s/req':>13} {'x base':>7}")
    for name in variants:
        print(f"{name:<16} {batched[name]:>14.3f} {batched[name] / batched['base']:>6.2f}x "
              f"{single[name]:>13.3f} {single[name] / single['base']:>6.2f}x")

    print()
    for label, got in (("batch 16", batched), ("batch 1", single)):
        print(f"frozen vs trainable {dtype} latency, {label}: {got['frozen'] / got['base']:.2f}x "
              f"(target <= {FROZEN_TARGET})")
    for label, got in (("batch 16", batched), ("batch 1", single)):
        print(f"tuned vs base per request, same tokens, merged, {label}: {got['run (merged)'] / got['base']:.2f}x "
              f"(target <= {TUNED_TARGET})")
    for label, got in (("batch 16", batched), ("batch 1", single)):
        print(f"tuned vs base per request, same tokens, PEFT unmerged, {label}: "
              f"{got['run (PEFT)'] / got['base']:.2f}x (reference: the LoRA layers' own cost; "
              f"PEFT keeps the adapters in float32)")
    print(f"frozen vs trainable {dtype} latency without the fix, batch 16: "
          f"{batched['frozen, no fix'] / batched['base']:.2f}x (reference: the issue)")
    record("latency", {
        "dtype": dtype, "rows": args.rows, "single": args.single,
        **{f"{key}_batch_16": batched[name] / batched["base"] for key, name in RATIOS.items()},
        **{f"{key}_batch_1": single[name] / single["base"] for key, name in RATIOS.items()},
        "base_s_per_request_batch_16": batched["base"], "base_s_per_request_batch_1": single["base"],
    })


# docs/measured.json's names for the ratios to the base model printed above
RATIOS = {"frozen_vs_base": "frozen", "merged_vs_base": "run (merged)", "peft_vs_base": "run (PEFT)",
          "frozen_no_fix_vs_base": "frozen, no fix"}


if __name__ == "__main__":
    main()
