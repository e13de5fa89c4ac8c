"""Prompting against fine-tuning on the built-in example, end to end through ftkit.

    .venv/bin/python benchmarks/train_acceptance.py [--sft-minutes 5] [--dpo-minutes 3]

Runs, on the embedded model and the same stratified held-out split (96 rows):
zero-shot and 8-shot prompting; LoRA SFT for at most --sft-minutes; DPO from the SFT adapter on
the built-in preference pairs for at most --dpo-minutes. Evaluates every variant with
ftkit.evaluation.evaluate (the tuned ones with the zero-shot prompt they were trained on) and prints the
summary, the paired comparisons, and one line per acceptance figure.
"""

from __future__ import annotations

import argparse
import time

from ftkit import load_model, split
from ftkit.data import examples
from ftkit.training.dpo import DPOSettings, train_dpo
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.models.tuned import load_run_model
from ftkit.prompts import classify_few_shot, classify_zero_shot
from ftkit.training.sft import SFTSettings, train_sft

from _measured import record, slug


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft-minutes", type=float, default=5.0)
    ap.add_argument("--dpo-minutes", type=float, default=3.0)
    ap.add_argument("--runs", default="/tmp/ftkit-acceptance-runs")
    args = ap.parse_args()
    parts = split(examples.load("support_routing"), test_size=96, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"]
    labels = sorted(set(train["label"]))
    zero = classify_zero_shot(labels=labels)
    model, tok = load_model()

    prompted = evaluate([Variant(model, tok, zero, max_new_tokens=12),
                         Variant(model, tok, classify_few_shot(train, k=8, labels=labels), max_new_tokens=12)],
                        test, labels=labels)
    best_prompt = prompted.summary["exact_match"].idxmax()
    best_prompt_acc = prompted.summary.loc[best_prompt, "exact_match"]

    t0 = time.perf_counter()
    sft = train_sft(model, tok, train, template=zero, runs_root=args.runs,
                    config=SFTSettings(name="acceptance-sft", epochs=3, max_minutes=args.sft_minutes))
    sft_min = (time.perf_counter() - t0) / 60
    sft_model, sft_tok = load_run_model(sft)
    t0 = time.perf_counter()
    base, base_tok = load_model(verbose=False)
    dpo = train_dpo(base, base_tok, examples.load("support_routing_preferences"), template=zero, from_run=sft,
                    runs_root=args.runs, config=DPOSettings(name="acceptance-dpo", max_minutes=args.dpo_minutes,
                                                            logging_steps=2))
    dpo_min = (time.perf_counter() - t0) / 60
    dpo_model, dpo_tok = load_run_model(dpo)

    tuned = evaluate([Variant(sft_model, sft_tok, zero, name="LoRA SFT", max_new_tokens=12),
                      Variant(dpo_model, dpo_tok, zero, name="SFT + DPO", max_new_tokens=12)], test, labels=labels)
    cols = ["exact_match", "exact_match_low", "exact_match_high", "macro_f1", "invalid_rate", "prompt_tokens",
            "latency_s"]
    print(prompted.summary[cols].round(3).to_string())
    print(tuned.summary[cols].round(3).to_string(header=False))
    sft_acc = tuned.summary.loc["LoRA SFT", "exact_match"]
    dpo_acc = tuned.summary.loc["SFT + DPO", "exact_match"]
    margins = [float(e["rewards/margins"]) for e in dpo.events("log")]
    print(f"SFT run {sft.id}: {sft.status['step']} steps in {sft_min:.1f} min; "
          f"DPO run {dpo.id}: {dpo.status['step']} steps in {dpo_min:.1f} min")
    print(f"DPO reward margins by log step: {', '.join(f'{m:.2f}' for m in margins)}")
    print(f"SFT minutes: {sft_min:.1f} (target <= 5)")
    print(f"SFT minus best prompt ({best_prompt}) accuracy: {sft_acc - best_prompt_acc:+.2f} (target >= 0.20)")
    print(f"DPO reward margin, last vs first log: {margins[-1]:.2f} vs {margins[0]:.2f} (target: rising)")
    print(f"SFT + DPO minus SFT accuracy: {dpo_acc - sft_acc:+.2f} (target >= 0)")
    scores = {name: [row["exact_match"], row["exact_match_low"], row["exact_match_high"]]
              for table in (prompted.summary, tuned.summary) for name, row in table.iterrows()}
    record("train_acceptance", {
        "held_out_rows": len(test), "best_prompt": best_prompt,
        **{slug(name): v for name, v in scores.items()},
        "sft_steps": sft.status["step"], "sft_minutes": sft_min, "dpo_steps": dpo.status["step"], "dpo_minutes": dpo_min,
        "sft_minus_best_prompt": sft_acc - best_prompt_acc, "dpo_minus_sft": dpo_acc - sft_acc,
        "dpo_margin_first": margins[0], "dpo_margin_last": margins[-1],
    })


if __name__ == "__main__":
    main()
