"""DPO step time through TRL's own loss against ftkit's lean loss, side by side in one run.

    .venv/bin/python benchmarks/dpo_speed.py [--steps 4] [--rounds 2] [--check 8] [--threads 0]

What the demo does, twice: the embedded model (in the precision ``load_model`` picks for this
machine) first gets a short ``train_sft`` on the built-in routing example, then ``train_dpo``
continues that adapter on the built-in ``support_routing_preferences`` pairs, rendered with the
classification task's zero-shot template, with the demo's DPO settings (4 pairs a step,
max_length 512, the SFT term on). The two DPO runs differ only in ``lean_loss``:

- TRL: ``lean_loss=False``, TRL's ``DPOTrainer`` loss: every position of every sequence scored
  over the whole vocabulary, and the reference's forward pass at every step;
- lean: the default, only the answer positions through the LM head, and the reference's
  log-probabilities computed once before the first step (timed apart, and printed).

Same base model, adapter, seed and so the same batches; --rounds runs of each, in ABBA order
(TRL, lean, lean, TRL), so load from other jobs that rises or falls weighs on both. A step's
time runs from one step's end to the next (log events at every step; the first from the run's
start event); step 1 of each run is the warm-up and is left out, the rest are summarized by
their median, so a burst of another job on the shared cores moves one step, not the figure (the
process's CPU time per step is printed beside it, for the same reason).

The losses are compared where the weights are the same: on --check batches of the pairs, both
losses of one trainer set up as train_dpo sets it up (the lean one with the reference's
log-probabilities computed once, as in training; TRL's own ``compute_loss`` with its reference
pass on the batch), its adapter moved to the one the lean run trained, so the policy is not its
own reference. The target is checked in float32: there the two are the same function of the
weights, up to rounding. In bfloat16 a sequence's log-probability depends on the shapes of the
batch it is computed in (by up to ~0.4 nats of ~18 measured here), so any two ways of computing
the loss differ: the lean loss, whose reference was computed once in other batches (as with TRL's
own ``precompute_ref_log_probs``) and with each prompt once, differed from TRL's by up to ~0.01;
TRL's own loss on the same batch padded 16 tokens wider, by 0.001 to 0.009. Both are printed.

The two runs' logged losses are printed too: at step 1 the weights are the same; after that they
differ a little, as Adam's first updates (about +-lr for every weight) turn rounding into
different steps.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from _measured import record


def pairs_and_template():
    from ftkit import tasks
    from ftkit.data import examples

    pairs = examples.load("support_routing_preferences", verbose=False)
    return pairs, tasks.get("classification").template("zero-shot", labels=examples.labels("support_routing"))


def sft_run(model, tok, template, steps, root):
    """A short SFT run whose adapter DPO continues, as in the demo."""
    from ftkit.data import examples
    from ftkit.training.sft import SFTSettings, train_sft

    rows = examples.load("support_routing", verbose=False).shuffle(seed=0).select(range(8 * steps))
    return train_sft(model, tok, rows, template=template, runs_root=root,
                     config=SFTSettings(name="bench-sft", max_steps=steps, batch_size=8, save_steps=10_000,
                                        logging_steps=1000))


def dpo_steps(model, tok, pairs, template, sft, lean: bool, args, root) -> dict:
    """One DPO run: each step's time and exact loss, and the reference pass's time (lean)."""
    from ftkit.training.dpo import DPOSettings, train_dpo
    from ftkit.fastpath.dpo_lean import _trainer_class
    from ftkit.training.events import EventBus

    stamps, losses, precompute = [], [], []
    bus = EventBus()
    bus.on("start", lambda _: stamps.append((time.perf_counter(), time.process_time())))
    bus.on("log", lambda e: (stamps.append((time.perf_counter(), time.process_time())),
                             losses.append(float(e["loss"]))))
    cls = _trainer_class()
    original = cls.precompute_reference

    def timed(self):
        t0 = time.perf_counter()
        original(self)
        precompute.append(time.perf_counter() - t0)

    cls.precompute_reference = timed
    try:
        run = train_dpo(model, tok, pairs, template=template, from_run=sft, bus=bus, runs_root=root,
                  config=DPOSettings(name="bench-dpo-" + ("lean" if lean else "trl"), lean_loss=lean,
                                     max_steps=1 + args.steps, batch_size=args.batch, max_length=512,
                                     logging_steps=1, save_steps=10_000, seed=0))
    finally:
        cls.precompute_reference = original
    times = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(stamps)]
    return {"times": times, "cpu": cpu, "losses": losses, "precompute": sum(precompute), "run": run}


def same_weight_losses(model, tok, pairs, template, sft, trained, args, root) -> list[tuple[float, float, float]]:
    """For each batch of the first ``args.check`` batches of pairs: the lean loss (the reference's
    log-probabilities computed once, as in training), TRL's own (its reference pass on the batch),
    and TRL's own again on the same batch padded 16 tokens wider (the same loss; in bfloat16 other
    shapes round otherwise). One trainer set up as train_dpo sets it up after ``sft``, its adapter
    moved to the DPO run ``trained``'s: at the SFT weights the policy is its own reference and the
    DPO term is log 2 on every path."""
    import torch
    from peft import load_peft_weights, set_peft_model_state_dict
    from trl import DPOTrainer

    from ftkit.training.dpo import DPOSettings, _trl_config, to_trl_pairs
    from ftkit.fastpath.dpo_lean import _trainer_class
    from ftkit.models.device import model_info
    from ftkit.runs import new_run
    from ftkit.training.trainer import trainable_model

    settings = DPOSettings(name="bench-dpo-check", batch_size=args.batch, max_length=512, seed=0)
    rows = to_trl_pairs(pairs.select(range(min(len(pairs), args.check * args.batch))), template)
    found = []
    with trainable_model(model, settings.lora, sft.adapter_dir) as (trainee, _):
        trainer = _trainer_class()(model=trainee, args=_trl_config(settings, new_run("dpo", {}, root=root),
                                                                   model_info(model).device),
                                   train_dataset=rows, processing_class=tok)
        set_peft_model_state_dict(trainer.model, load_peft_weights(str(trained.adapter_dir)), adapter_name="default")
        trainer.precompute_reference()

        def trl_loss(batch):
            trainer.precompute_ref_logps = False  # TRL's loss with its own reference pass on the batch
            try:
                return float(DPOTrainer.compute_loss(trainer, trainer.model, batch))
            finally:
                trainer.precompute_ref_logps = True

        torch.manual_seed(0)
        with torch.no_grad(), trainer.compute_loss_context_manager():
            for batch in trainer.get_train_dataloader():
                batch = trainer._prepare_inputs(batch)
                lean = float(trainer.compute_loss(trainer.model, batch))
                plain = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
                wider = {k: torch.nn.functional.pad(v, (0, 16)) for k, v in plain.items()}
                found.append((lean, trl_loss(plain), trl_loss(wider)))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="timed DPO steps of each run, after one warm-up step")
    ap.add_argument("--batch", type=int, default=4, help="preference pairs per step (the demo's: 4)")
    ap.add_argument("--sft-steps", type=int, default=4, help="SFT steps (of 8 rows) for the adapter DPO continues")
    ap.add_argument("--check", type=int, default=8, help="batches on which the two losses are compared")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, in ABBA order")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); on cores other jobs share, 1 thread waits on no other")
    args = ap.parse_args()

    import torch

    from ftkit import load_model
    from ftkit.models.device import model_info

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(verbose=False)
    print(f"model: {model_info(model).source}, {model_info(model).device}; {torch.get_num_threads()} threads")
    pairs, template = pairs_and_template()
    root = Path(tempfile.mkdtemp(prefix="dpo-speed-"))
    sft = sft_run(model, tok, template, args.sft_steps, root)
    # Rounds in ABBA order (TRL, lean, lean, TRL, ...): load from other jobs that rises or falls
    # during the run weighs on both sides alike.
    order = [side for r in range(args.rounds) for side in (("TRL", "lean") if r % 2 == 0 else ("lean", "TRL"))]
    runs = {"TRL": [], "lean": []}
    for name in order:
        r = dpo_steps(model, tok, pairs, template, sft, name == "lean", args, root)
        runs[name].append(r)
        print(f"{name}: step times {', '.join(f'{t:.2f}' for t in r['times'][1:])} s (CPU "
              f"{', '.join(f'{t:.2f}' for t in r['cpu'][1:])}; warm-up {r['times'][0]:.2f} s); "
              f"logged losses {', '.join(f'{x:.5f}' for x in r['losses'])}"
              + (f"; reference pass before step 1: {r['precompute']:.1f} s" if name == "lean" else ""))
    step = {k: statistics.median([t for r in v for t in r["times"][1:]]) for k, v in runs.items()}
    cpu = {k: statistics.median([t for r in v for t in r["cpu"][1:]]) for k, v in runs.items()}
    for name in runs:
        print(f"{name}: step time median {step[name]:.2f} s, CPU time {cpu[name]:.2f} s")
    trl, lean = runs["TRL"][0], runs["lean"][0]
    precompute = statistics.median(r["precompute"] for r in runs["lean"])
    print(f"lean: the reference's log-probabilities of all {len(pairs)} pairs, once before step 1: "
          f"{precompute:.1f} s (the time of {precompute / step['lean']:.1f} lean steps; "
          f"{len(pairs) // args.batch} steps make an epoch)")
    print(f"logged loss difference at step 1 (same weights): {abs(trl['losses'][0] - lean['losses'][0]):.6f}")
    # The losses at the same weights: in float32, where the two are the same function of the
    # weights to rounding; and in the precision the steps above ran in.
    model32, _ = load_model(dtype="float32", verbose=False)
    exact = same_weight_losses(model32, tok, pairs, template, sft, lean["run"], args, root)
    timed = same_weight_losses(model, tok, pairs, template, sft, lean["run"], args, root)
    dtype = model_info(model).device.dtype_name
    print(f"losses at the same weights on {len(exact)} batches, float32, lean / TRL: "
          f"{', '.join(f'{a:.6f}/{b:.6f}' for a, b, _ in exact)}")
    print(f"losses at the same weights, {dtype}, lean / TRL / TRL padded wider: "
          f"{', '.join(f'{a:.4f}/{b:.4f}/{c:.4f}' for a, b, c in timed)}")
    print(f"{dtype}: lean vs TRL up to {max(abs(a - b) for a, b, _ in timed):.4f}; TRL vs itself padded 16 tokens "
          f"wider up to {max(abs(b - c) for _, b, c in timed):.4f}")
    print(f"dpo step CPU time, lean vs TRL: {cpu['TRL'] / cpu['lean']:.1f}x")
    print(f"dpo step time, lean vs TRL: {step['TRL'] / step['lean']:.1f}x (target >= 3)")
    print(f"dpo loss difference: {max(abs(a - b) for a, b, _ in exact):.5f} (target <= 0.001)")
    record("dpo_speed", {
        "dtype": dtype, "trl_step_s": step["TRL"], "lean_step_s": step["lean"],
        "lean_vs_trl_step_time": step["TRL"] / step["lean"], "lean_vs_trl_cpu_time": cpu["TRL"] / cpu["lean"],
        "reference_precompute_s": precompute,
        "loss_difference_float32": max(abs(a - b) for a, b, _ in exact),
    })


if __name__ == "__main__":
    main()
