"""Is the built-in example a task that prompting alone fails and a few minutes of LoRA fixes?

Measures, side by side in one run on the embedded SmolLM2-135M-Instruct:
zero-shot and few-shot prompting, then LoRA SFT through TRL for a fixed time budget, all on the
same stratified held-out split of `support_routing`, scored by normalized exact match.

    .venv/bin/python benchmarks/example_task.py [--minutes 5] [--data PATH]

`--data ../shared/realdata/banking77/banking77_test_10labels.jsonl` runs the same on real data.
"""

from __future__ import annotations

import argparse
import time

import datasets
import torch
from peft import LoraConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from ftkit import examples, load_data, load_model, split
from ftkit.generate import generate
from ftkit.metrics import exact_match
from ftkit.prompts import classify_messages


def accuracy(model, tok, convs, refs) -> tuple[float, float]:
    outs = generate(model, tok, convs, max_new_tokens=12, batch_size=16)
    acc = sum(exact_match(o.text, r) for o, r in zip(outs, refs)) / len(refs)
    return acc, sum(o.prompt_tokens for o in outs) / len(outs)


class TimeBudget(TrainerCallback):
    """Stop before the step that would overrun the budget (judged by the slowest step so far)."""

    def __init__(self, seconds):
        self.seconds, self.start, self.last, self.slowest = seconds, None, None, 0.0

    def on_train_begin(self, args, state, control, **kw):
        self.start = self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.slowest, self.last = max(self.slowest, now - self.last), now
        if now - self.start + self.slowest > self.seconds:
            control.should_training_stop = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--test-size", type=int, default=96)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_data(args.data) if args.data else examples.load("support_routing")
    parts = split(data, test_size=args.test_size, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"]
    labels = sorted(set(data["label"]))
    model, tok = load_model()

    # One shot per label, from the training split only.
    shots = [(next(r["prompt"] for r in train if r["label"] == lab), lab) for lab in labels]
    refs = test["completion"]
    zs, zs_tok = accuracy(model, tok, [classify_messages(t, labels) for t in test["prompt"]], refs)
    fs, fs_tok = accuracy(model, tok, [classify_messages(t, labels, shots=shots) for t in test["prompt"]], refs)
    print(f"zero-shot {zs:.2f} ({zs_tok:.0f} prompt tokens), {len(shots)}-shot {fs:.2f} ({fs_tok:.0f})")

    # Conversational prompt/completion rows: TRL renders them with the chat template and trains on
    # the completion (the label and its end-of-turn token) only.
    rows = [{"prompt": classify_messages(r["prompt"], labels),
             "completion": [{"role": "assistant", "content": r["completion"]}]} for r in train]
    config = SFTConfig(
        output_dir="/tmp/ftkit-bench-sft", num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=8, gradient_checkpointing=False, logging_steps=10,
        save_strategy="no", report_to=[], max_length=256, lr_scheduler_type="constant",
        **model.ftkit_device.trainer_precision(), use_cpu=model.device.type == "cpu",
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tok, peft_config=lora, callbacks=[TimeBudget(args.minutes * 60)])
    t0 = time.perf_counter()
    trainer.train()
    train_min = (time.perf_counter() - t0) / 60
    tuned = trainer.model.eval()
    ft, ft_tok = accuracy(tuned, tok, [classify_messages(t, labels) for t in test["prompt"]], refs)
    best = max(zs, fs)
    print(f"zero-shot accuracy: {zs:.2f}")
    print(f"few-shot accuracy ({len(shots)} shots, {fs_tok / zs_tok:.1f}x prompt tokens): {fs:.2f}")
    print(f"LoRA SFT accuracy ({train_min:.1f} min, {trainer.state.global_step} steps): {ft:.2f}")
    print(f"SFT minus best prompt: {ft - best:+.2f} (target >= 0.20)")
    print(f"training minutes: {train_min:.1f} (target <= {args.minutes:.0f})")


if __name__ == "__main__":
    main()
