"""Training throughput and memory of train_sft against TRL's defaults and a hand-written loop.

    .venv/bin/python benchmarks/train_speed.py [--rows 64]

Three ways to run LoRA SFT (r=16, all-linear) of the embedded model over the same rows of the
built-in example, each in its own process (so peak memory is its own):

- ftkit: ``train_sft`` with its defaults (precision from the device, no gradient checkpointing,
  steps of 8 as two accumulated passes of 4 on a CPU, loss projected through the LM head at the
  completion positions only);
- trl-default: ``SFTTrainer`` with ``SFTConfig``'s defaults (bf16, gradient checkpointing) and
  ``use_cpu=True``, the least a CPU user must add; only 2 steps, it is slow;
- hand-written: a plain PyTorch loop (PEFT LoRA, AdamW, completion-only labels) over batches of 8.

Throughput counts non-padding tokens of the examples each one trained on, per second of training.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _measured import record

BATCH = 8


def rows_and_template(n):
    from ftkit import split
    from ftkit.data import examples
    from ftkit.prompts import classify_zero_shot

    parts = split(examples.load("support_routing", verbose=False), test_size=96, seed=0, stratify_by="label")
    train = parts["train"].select(range(n))
    return train, classify_zero_shot(labels=sorted(set(parts["train"]["label"])))


def example_tokens(tok, template, rows):
    texts = [tok.apply_chat_template(template.messages(r) + [{"role": "assistant", "content": r["completion"]}],
                                     tokenize=False) for r in rows]
    return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]


def run_ftkit(n):
    import tempfile

    from ftkit import load_model
    from ftkit.training.sft import SFTSettings, train_sft

    train, template = rows_and_template(n)
    model, tok = load_model(verbose=False)
    tokens = sum(example_tokens(tok, template, train))
    t0 = time.perf_counter()
    train_sft(model, tok, train, template=template, runs_root=tempfile.mkdtemp(),
              config=SFTSettings(max_steps=n // BATCH, batch_size=BATCH, save_steps=10_000, logging_steps=1000))
    return tokens, time.perf_counter() - t0


def run_trl_default(n, steps=2):
    import tempfile

    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from ftkit import load_model
    from ftkit.training.sft import to_trl_rows

    train, template = rows_and_template(n)
    model, tok = load_model(verbose=False)
    tokens = sum(example_tokens(tok, template, train.select(range(steps * BATCH))))
    config = SFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, max_steps=steps, report_to=[],
                       per_device_train_batch_size=BATCH, save_strategy="no")
    trainer = SFTTrainer(model=model, args=config, train_dataset=to_trl_rows(train, template), processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    t0 = time.perf_counter()
    trainer.train()
    return tokens, time.perf_counter() - t0


def hand_written_steps(model, tok, rows, template, batch: int, lr: float, lora) -> list[float]:
    """A plain PyTorch LoRA loop over ``rows`` in order, ``batch`` a step (PEFT ``lora``, AdamW at
    ``lr``, completion-only labels, padded to the batch's longest); the seconds of each step."""
    import torch
    from peft import get_peft_model

    model = get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    examples = []
    for r in rows:
        prompt = tok.apply_chat_template(template.messages(r), tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(template.messages(r) + [{"role": "assistant", "content": r["completion"]}],
                                       tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        examples.append((f_ids, [-100] * len(p_ids) + f_ids[len(p_ids):]))
    seconds = []
    for start in range(0, len(examples), batch):
        t0 = time.perf_counter()
        chunk = examples[start:start + batch]
        width = max(len(f) for f, _ in chunk)
        ids = torch.tensor([f + [tok.pad_token_id] * (width - len(f)) for f, _ in chunk])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f, _ in chunk])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        seconds.append(time.perf_counter() - t0)
    return seconds


def run_hand_written(n):
    from peft import LoraConfig

    from ftkit import load_model

    train, template = rows_and_template(n)
    model, tok = load_model(verbose=False)
    tokens = sum(example_tokens(tok, template, train))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    seconds = hand_written_steps(model, tok, train, template, BATCH, 1e-3, lora)
    return tokens, sum(seconds)


RUNNERS = {"ftkit": run_ftkit, "trl-default": run_trl_default, "hand-written": run_hand_written}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--one", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        tokens, seconds = RUNNERS[args.one](args.rows)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        print(json.dumps({"tokens": tokens, "seconds": seconds, "peak_gb": peak_gb}))
        return
    results = {}
    for name in RUNNERS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--rows", str(args.rows)],
                             capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name}: {r['tokens']} tokens in {r['seconds']:.1f} s = {r['tokens'] / r['seconds']:.0f} tokens/s, "
              f"peak memory {r['peak_gb']:.2f} GB")
    speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    print(f"train_sft vs TRL defaults: {speed['ftkit'] / speed['trl-default']:.1f}x (target >= 5)")
    print(f"train_sft vs hand-written loop: {speed['ftkit'] / speed['hand-written']:.2f}x (target >= 0.85)")
    print(f"peak memory GB (train_sft): {results['ftkit']['peak_gb']:.2f} (target <= 3)")
    record("train_speed", {
        "rows": args.rows, **{f"{k.replace('-', '_')}_tokens_per_s": v for k, v in speed.items()},
        "ftkit_vs_trl_defaults": speed["ftkit"] / speed["trl-default"],
        "ftkit_vs_hand_written": speed["ftkit"] / speed["hand-written"],
        "ftkit_peak_gb": results["ftkit"]["peak_gb"],
    })


if __name__ == "__main__":
    main()
