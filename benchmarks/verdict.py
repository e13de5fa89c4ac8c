"""The measurements behind the verdict, in one run: the strongest prompt on three tasks, and the
routing example's trade-offs.

    .venv/bin/python benchmarks/verdict.py [--part all|baselines|routing] [--baseline-tasks
        classification,qa,summarization] [--baseline-steps 30] [--baseline-rows 32]
        [--sampling-steps 48] [--sft-steps 40] [--curve-sizes 25,50,100,200,0] [--curve-steps 20]
        [--scratch-steps 40] [--eval-rows 0] [--probe-rows 0] [--threads 1]

``--part baselines``: on the built-in example of classification, QA and summarization, through
``ftkit run``'s own pipeline (the task's instruction and system prompt): zero-shot, k fixed shots
and k **retrieved** shots (each request's k nearest training rows by BM25; k = the task's shot
count), then LoRA SFT for ``--baseline-steps`` steps, all on the same ``--baseline-rows`` held-out
rows and timed together. Per task: each score with its 95% interval, retrieved - fixed paired, and
the cost per request of both (prompt tokens, latency batched and one at a time: a retrieved prompt
differs per request, so the shared-prefix cache that makes fixed shots cheap cannot help it). Then
the cost of watching the model learn (``benchmarks/train_sampling.py``). The verdict of each task
is printed in full by the pipeline.

``--part routing``, on the built-in routing example:

What ``ftkit.evaluation.verdict`` claims, measured on the embedded model with the tour's split (80/20,
stratified, seed 0) and prompts (zero-shot and 8-shot):

- **fair latency**: zero-shot, 8-shot and a LoRA SFT run (merged, as served) on the same held-out
  rows through ``evaluate`` (each warmed up untimed, then timed batched and one at a time); the
  tuned model answers with fewer new tokens from the zero-shot prompt, so it must not come out
  slower per request than zero-shot;
- **the verdict** (``advise``) of the SFT run against the best prompt;
- **flexibility**: the general-skills probes, base model against the SFT run;
- **the task change**: the new ``gift_card`` queue added to each prompt, untrained (the 8-shot
  prompt also shows two of its messages);
- **how much data**: a learning curve (SFT on nested subsets, ``--curve-steps`` steps each, so a
  size's result does not depend on the machine's load; 0 in --curve-sizes: all rows) against the
  best prompt: the fewest rows that reach it;
- **from scratch**: the same architecture from random weights against LoRA on the pretrained
  model, the same ``--scratch-steps`` steps each on the same rows.

Steps, not minutes, bound every training here: minutes on a shared 2-core machine depend on the
neighbours. The figures end the output, a line each, with the target where the issue set one and
"reported" where the figure is a finding. Runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _measured import record, slug


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--curve-sizes", default="25,50,100,200,0")
    ap.add_argument("--curve-steps", type=int, default=20)
    ap.add_argument("--scratch-steps", type=int, default=40)
    ap.add_argument("--eval-rows", type=int, default=0, help="held-out rows (0: all 96)")
    ap.add_argument("--probe-rows", type=int, default=0, help="general-skills probes (0: all 120)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=("all", "routing", "baselines"), default="all",
                    help="routing: the measurements on the routing example; baselines: retrieved shots against "
                         "fixed few-shot and LoRA SFT on three tasks, and the sampling overhead")
    ap.add_argument("--baseline-tasks", default="classification,qa,summarization")
    ap.add_argument("--baseline-steps", type=int, default=30, help="LoRA SFT steps per task in --part baselines")
    ap.add_argument("--baseline-rows", type=int, default=32, help="held-out rows per task in --part baselines")
    ap.add_argument("--sampling-steps", type=int, default=48,
                    help="steps of benchmarks/train_sampling.py run by --part baselines (0: skip it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part in ("all", "baselines"):
        baselines(args)
    if args.part in ("all", "routing"):
        routing(args)


def routing(args) -> None:

    from ftkit import load_model, split
    from ftkit.data import examples
    from ftkit.evaluation.flexibility import flexibility
    from ftkit.evaluation.verdict import advise
    from ftkit.data.canonical import label_set
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.evaluation.experiments import from_scratch, learning_curve, task_change
    from ftkit.models.tuned import load_run_model
    from ftkit.prompts import classify_few_shot, classify_zero_shot, zero_shot
    from ftkit.training.sft import SFTSettings, train_sft

    t_start = time.perf_counter()
    model, tok = load_model(verbose=False)
    parts = split(examples.load("support_routing", verbose=False), test_size=0.2, seed=0, stratify_by="label")
    train, test = parts["train"], parts["test"]
    if args.eval_rows:
        test = test.select(range(args.eval_rows))
    labels = label_set(train)
    zero = classify_zero_shot(labels=labels)
    prompts = {"zero-shot": zero, "8-shot": classify_few_shot(train, k=8, labels=labels)}
    runs_root = tempfile.mkdtemp(prefix="ftkit-verdict-")
    steps = dict(max_minutes=0, batch_size=4)

    print(f"SFT, {args.sft_steps} steps ...", flush=True)
    run = train_sft(model, tok, train, template=zero, runs_root=runs_root,
                    config=SFTSettings(max_steps=args.sft_steps, **steps))
    served, _ = load_run_model(run, merged=True)
    variants = [Variant(model, tok, t, name=name, max_new_tokens=12) for name, t in prompts.items()]
    variants.append(Variant(served, tok, zero, name="LoRA SFT", max_new_tokens=12))
    result = evaluate(variants, test, labels=labels)
    cols = ["exact_match", "exact_match_low", "exact_match_high", "prompt_tokens", "new_tokens", "latency_s",
            "latency_1_s"]
    print(result.summary[cols].round(3).to_string())
    advice = advise(result, list(prompts), {"LoRA SFT": run})
    print(advice)

    print("general-skills probes ...", flush=True)
    probes = examples.load("general_probes", verbose=False)
    if args.probe_rows:
        probes = probes.select(range(args.probe_rows))
    flex = flexibility(Variant(model, tok, zero_shot(), name="base model"),
                       [Variant(served, tok, zero_shot(), name="LoRA SFT")], probes=probes)
    print(flex.line("LoRA SFT"))

    print("task change: the gift_card queue ...", flush=True)
    change = task_change(variants, examples.load("support_routing_new_queue", verbose=False), "gift_card",
                         old_rows=test, trained=["LoRA SFT"], shots=2)
    print(change)

    sizes = [int(n) or None for n in args.curve_sizes.split(",")]
    print(f"learning curve, sizes {sizes}, {args.curve_steps} steps each ...", flush=True)
    curve = learning_curve(model, tok, train, test, sizes=sizes, template=zero, labels=labels, max_new_tokens=12,
                           settings=SFTSettings(max_steps=args.curve_steps, **steps), runs_root=runs_root)
    print(curve.table.round(3).to_string())

    print(f"from scratch against LoRA, {args.scratch_steps} steps each ...", flush=True)
    scratch = from_scratch(model, tok, train, test, template=zero, labels=labels, minutes=0,
                           max_steps=args.scratch_steps, max_new_tokens=12, runs_root=runs_root)
    print(scratch.result.summary[["exact_match", "exact_match_low", "exact_match_high", "invalid_rate"]].round(3))
    gap = scratch.result.compare("LoRA on pretrained", "from scratch")
    print(gap)

    s = result.summary
    best = advice.best_prompt
    reach = curve.crossing(s.loc[best, "exact_match"])
    beat = curve.crossing(s.loc[best, "exact_match"], beyond_noise=True)
    fresh, lora = scratch.result.summary["exact_match"]
    mean, low, high = flex.differences["LoRA SFT"]
    print(f"\n{len(test)} held-out rows; model {model.dtype}, {torch.get_num_threads()} threads; "
          f"{(time.perf_counter() - t_start) / 60:.1f} min in all\n")
    print(f"tuned vs zero-shot latency per request, batched: {s.loc['LoRA SFT', 'latency_s'] / s.loc['zero-shot', 'latency_s']:.2f}x "
          f"(target <= 1.1; new tokens {s.loc['LoRA SFT', 'new_tokens']:.1f} vs {s.loc['zero-shot', 'new_tokens']:.1f})")
    print(f"tuned vs zero-shot latency per request, one at a time: "
          f"{s.loc['LoRA SFT', 'latency_1_s'] / s.loc['zero-shot', 'latency_1_s']:.2f}x (target <= 1.1)")
    print(f"verdict, LoRA SFT ({args.sft_steps} steps) vs {best}: {advice.conclusion}, "
          f"{advice.difference:+.2f} [{advice.ci_low:+.2f}, {advice.ci_high:+.2f}] (reported)")
    print(f"flexibility, probes passed by LoRA SFT - base: {mean:+.2f} [{low:+.2f}, {high:+.2f}] (reported)")
    for name, r in change.table.iterrows():
        print(f"task change, {name} routing gift_card messages to the new label: {r['new']:.2f} "
              f"[{r['new_low']:.2f}, {r['new_high']:.2f}] (reported)")
    print(f"learning curve, training rows to reach {best} ({s.loc[best, 'exact_match']:.2f}): "
          f"{reach if reach is not None else 'not reached'} (reported; beyond noise: "
          f"{beat if beat is not None else 'not reached'})")
    print(f"LoRA on pretrained vs from scratch, exact match after {args.scratch_steps} steps: {lora:.2f} vs "
          f"{fresh:.2f}, difference {gap.mean_diff:+.2f} [{gap.ci_low:+.2f}, {gap.ci_high:+.2f}] (target > 0)")
    record("verdict", {
        "held_out_rows": len(test), "sft_steps": args.sft_steps, "best_prompt": best,
        "tuned_vs_zero_shot_latency_batched": s.loc["LoRA SFT", "latency_s"] / s.loc["zero-shot", "latency_s"],
        "tuned_vs_zero_shot_latency_single": s.loc["LoRA SFT", "latency_1_s"] / s.loc["zero-shot", "latency_1_s"],
        "conclusion": advice.conclusion, "sft_minus_best_prompt": [advice.difference, advice.ci_low, advice.ci_high],
        "flexibility_difference": [mean, low, high],
        **{f"task_change_{slug(name)}": [r["new"], r["new_low"], r["new_high"]] for name, r in change.table.iterrows()},
        "rows_to_reach_best_prompt": reach if reach is not None else "not reached",
        "lora_vs_scratch": [gap.mean_diff, gap.ci_low, gap.ci_high],
    })


# The built-in example of each task the baselines part runs on.
BASELINE_EXAMPLES = {"classification": "support_routing", "qa": "shop_qa", "summarization": "shop_summaries"}


def baselines(args) -> None:
    """Retrieved shots against the same number of fixed shots and LoRA SFT, through ``ftkit run``'s own
    pipeline (the task's instruction and system prompt, k = the task's shot count), on each task's
    built-in example; then the cost of watching the model learn (benchmarks/train_sampling.py)."""
    from ftkit import tasks
    from ftkit.config import config_from_dict
    from ftkit.pipeline import run_pipeline

    lines, figures = [], {}
    for name in [n.strip() for n in args.baseline_tasks.split(",") if n.strip()]:
        task = tasks.get(name)
        k = task.shots
        fixed, retrieved = f"{k} fixed shots", f"{k} retrieved shots"
        with tempfile.TemporaryDirectory(prefix="ftkit-verdict-") as tmp:
            config = config_from_dict({
                "task": name, "data": {"source": BASELINE_EXAMPLES[name], "limit": args.baseline_rows},
                "templates": [{"kind": "zero_shot"}, {"kind": "few_shot", "k": k, "name": fixed},
                              {"kind": "retrieved_shots", "k": k, "name": retrieved}],
                "sft": {"name": f"verdict-{name}", "max_steps": args.baseline_steps, "max_minutes": 0},
                "output": {"runs_root": f"{tmp}/runs", "report": f"{tmp}/report.html"}})
            print(f"\n=== {name}: {config.data.source}, k = {k}", flush=True)
            result = run_pipeline(config, say=print, title=f"verdict baselines: {name}", progress=False)
        ev = result.evaluation
        s, m = ev.summary, next(iter(ev.metrics))

        def ci(v: str) -> str:
            return f"{s.loc[v, m]:.2f} [{s.loc[v, f'{m}_low']:.2f}-{s.loc[v, f'{m}_high']:.2f}]"

        gain = ev.compare(retrieved, fixed, m)
        tuned = "LoRA SFT" if "LoRA SFT" in s.index else None
        cost = ", ".join(f"{v} {s.loc[v, 'prompt_tokens']:.0f} tokens, {s.loc[v, 'latency_s']:.2f} s batched, "
                         f"{s.loc[v, 'latency_1_s']:.2f} s one at a time"
                         for v in (fixed, retrieved) if "latency_1_s" in s.columns)
        lines.append(f"{name} {m}: {fixed} {ci(fixed)}, {retrieved} {ci(retrieved)}"
                     + (f", LoRA SFT ({args.baseline_steps} steps) {ci(tuned)}" if tuned else "")
                     + f"; retrieved - fixed {gain.mean_diff:+.2f} [{gain.ci_low:+.2f}, {gain.ci_high:+.2f}] "
                       f"on {len(ev.table)} rows (reported)")
        lines.append(f"{name} cost per request: {cost} (reported)")
        figures[f"{name}_{slug(fixed.split(' ', 1)[1])}"] = [s.loc[fixed, m], s.loc[fixed, f"{m}_low"], s.loc[fixed, f"{m}_high"]]
        figures[f"{name}_retrieved_shots"] = [s.loc[retrieved, m], s.loc[retrieved, f"{m}_low"],
                                              s.loc[retrieved, f"{m}_high"]]
        figures[f"{name}_retrieved_minus_fixed"] = [gain.mean_diff, gain.ci_low, gain.ci_high]
        figures[f"{name}_retrieved_prompt_tokens"] = s.loc[retrieved, "prompt_tokens"]
        figures[f"{name}_fixed_prompt_tokens"] = s.loc[fixed, "prompt_tokens"]
        if tuned:
            figures[f"{name}_lora_sft"] = [s.loc[tuned, m], s.loc[tuned, f"{m}_low"], s.loc[tuned, f"{m}_high"]]
        # Each task's own entry, written as soon as it is measured: a long run cut short keeps what it measured.
        record(f"verdict/baselines/{name}", {k.removeprefix(f"{name}_"): v for k, v in figures.items()
                                              if k.startswith(f"{name}_")},
               note=f"{args.baseline_rows} held-out rows, SFT {args.baseline_steps} steps")
    if args.sampling_steps:
        from train_sampling import measure

        print(f"\n=== the cost of watching the model learn: {args.sampling_steps} SFT steps with and without sampling",
              flush=True)
        lines.append(measure(args.sampling_steps))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
