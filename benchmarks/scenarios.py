"""Prompting against LoRA SFT on every scenario, through ftkit's own pipeline.

    .venv/bin/python benchmarks/scenarios.py [--scenarios qa,nq,...] [--classification]
        [--sft-minutes 3] [--limit 40] [--max-length N] [--threads 1]

Scenarios: the built-in tasks (qa, translation, summarization, creative; classification with
--classification, which benchmarks/train_acceptance.py covers) and three real public datasets read
from ../shared/realdata beside the checkout (skipped, with the reason, when it is absent):
ntrex (NTREX-128 English -> German news, task translation), nq (NQ-Open closed-book questions,
task qa, every accepted form in `answers`), scitldr (SciTLDR-A abstracts -> TLDRs, task
summarization). Each runs ftkit.pipeline.run_pipeline from a config_from_dict config with
`task:` set: the task's prompt variants, LoRA SFT for at most --sft-minutes on the training split
(the embedded model, dtype auto), then all variants on the same --limit held-out rows. Runs and
reports go to a temporary folder.

sft.max_length is left to the task, which ftkit run raises (to a multiple of 64) to the longest
templated training example (SciTLDR's abstracts need more than the summarization task's 512);
--max-length forces a value.
NQ rows have no context passage (closed book), so the qa task's prompts stay closed book there; on
the built-in shop_qa every prompt, and so SFT, reads the policy passage (ftkit.tasks.Task.for_rows).

Per scenario it prints the pipeline's summary, then the headline metric with its 95% interval for
zero-shot, the best prompt variant and LoRA SFT, the paired difference SFT - best prompt
(EvalResult.compare: paired bootstrap; corpus chrF resamples rows for the corpus difference),
prompt tokens per request and training minutes (ftkit.training.curves.training_cost). It ends with one
line per scenario. Whether SFT beats the best prompt is a finding, not a target.

--threads sets torch's CPU threads (0: torch's default, one per core). On a 2-core machine shared
with other jobs, two threads wait on each other whenever a neighbour takes a core: a LoRA step
measured 10x slower, and generation 20-50x slower, with 2 threads than with 1 while a neighbour
ran. Pass --threads 1 there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from pathlib import Path

import torch

from ftkit import tasks
from ftkit.config import config_from_dict
from ftkit.models.loading import load_tokenizer
from ftkit.pipeline import run_pipeline
from ftkit.training.curves import training_cost

from _measured import record, slug

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# name: (label, task, data source (a built-in example name, or a file under REALDATA), extra config)
SCENARIOS = {
    "qa": ("built-in", "qa", None, {}),
    "translation": ("built-in", "translation", None, {}),
    "summarization": ("built-in", "summarization", None, {}),
    "creative": ("built-in", "creative", None, {}),
    "classification": ("built-in", "classification", None, {}),
    "ntrex": ("NTREX-128 en-de", "translation", "translation_ntrex/ntrex128_en-de_sample400.jsonl", {}),
    "nq": ("NQ-Open", "qa", "qa/nq_open_dev_sample.jsonl", {}),
    "scitldr": ("SciTLDR-A", "summarization", "summarization/scitldr_a_train_sample.jsonl", {}),
}
DEFAULT = "qa,translation,summarization,creative,ntrex,nq,scitldr"


def run_scenario(name: str, args, tokenizer, tmp: Path) -> dict:
    label, task, source, extra = SCENARIOS[name]
    if source is not None:
        path = REALDATA / source
        if not path.is_file():
            return {"name": name, "label": label, "skipped": f"{path} not found (the shared real data lives "
                                                             "beside the checkout, at ../shared/realdata)"}
        source = str(path)
    values = {"task": task, "data": {"limit": args.limit, **({"source": source} if source else {})},
              "model": {"dtype": "auto"},
              "sft": {"name": f"scenario-{name}", "max_minutes": args.sft_minutes,
                      "max_length": args.max_length or 0},
              "output": {"runs_root": str(tmp / "runs"), "report": str(tmp / name / "report.html")}, **extra}
    config = config_from_dict(values)
    print(f"\n=== {name} ({label}): task {task}, data {config.data.source}")
    t0 = time.perf_counter()
    result = run_pipeline(config, say=print, title=f"ftkit scenario {name}", progress=False)
    ev, task_ = result.evaluation, tasks.get(task)
    headline = next(iter(ev.metrics))
    s = ev.summary
    prompts = [v for v in ev.variants if v not in ("LoRA SFT", "SFT + DPO")]
    pick = s.loc[prompts, headline]
    best = pick.idxmax() if task_.higher_is_better else pick.idxmin()
    out = {"name": name, "label": label, "headline": headline, "zero": prompts[0], "best": best,
           "summary": s, "minutes": (time.perf_counter() - t0) / 60}
    sft_runs = [r for r in result.runs if r.config.get("kind") == "sft"]
    if sft_runs:
        cost = training_cost(sft_runs[0])
        out["train_min"] = (cost["seconds"] or 0) / 60
        out["steps"] = cost["steps"]
        out["status"] = sft_runs[0].status.get("status")
        out["max_length"] = f"sft.max_length {sft_runs[0].config['settings']['max_length']}"
    if "LoRA SFT" in ev.variants:
        out["diff"] = ev.compare("LoRA SFT", best, headline)
        print(out["diff"])
    return out


def ci(s, variant, metric) -> str:
    r = s.loc[variant]
    return f"{r[metric]:.2f} [{r[f'{metric}_low']:.2f}-{r[f'{metric}_high']:.2f}]"


def line(o: dict) -> str:
    head = f"{o['name']} ({o['label']})"
    if "skipped" in o:
        return f"{head}: skipped: {o['skipped']}"
    if "error" in o:
        return f"{head}: failed: {o['error']}"
    s, m = o["summary"], o["headline"]
    text = f"{head} {m}: zero-shot {ci(s, o['zero'], m)}, best prompt ({o['best']}) {ci(s, o['best'], m)}"
    shown = dict.fromkeys([o["zero"], o["best"]])  # the best prompt once, when it is zero-shot
    tokens = "prompt tokens/request: " + ", ".join(f"{v} {s.loc[v, 'prompt_tokens']:.0f}" for v in shown)
    if "diff" in o:
        d = o["diff"]
        text += (f", LoRA SFT {ci(s, 'LoRA SFT', m)}; SFT - best prompt {d.mean_diff:+.2f} "
                 f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]")
        tokens += f", LoRA SFT {s.loc['LoRA SFT', 'prompt_tokens']:.0f}"
    else:
        text += f"; no SFT result (run {o.get('status', 'not trained')})"
    train = f"{o['train_min']:.1f} training min ({o['steps']} steps)" if "train_min" in o else "no training"
    return f"{text}; {train}; {tokens}; {o['minutes']:.1f} min in all"


def figures(o: dict) -> dict:
    """What docs/measured.json keeps of one scenario: every variant's headline score with its interval
    and prompt tokens, the best prompt, SFT minus the best prompt, training minutes and steps."""
    s, m = o["summary"], o["headline"]
    out = {"metric": m, "best_prompt": o["best"], "minutes": o["minutes"]}
    for variant, row in s.iterrows():
        out[slug(variant)] = [row[m], row[f"{m}_low"], row[f"{m}_high"]]
        out[f"{slug(variant)}_prompt_tokens"] = row["prompt_tokens"]
    out["best"] = out[slug(o["best"])]
    if "diff" in o:
        d = o["diff"]
        out["sft_minus_best"] = [d.mean_diff, d.ci_low, d.ci_high]
    if "train_min" in o:
        out["train_minutes"], out["steps"] = o["train_min"], o["steps"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default=DEFAULT, help=f"comma list of: {', '.join(SCENARIOS)}")
    ap.add_argument("--classification", action="store_true", help="add the built-in classification scenario")
    ap.add_argument("--sft-minutes", type=float, default=3.0, help="time box of each LoRA SFT run")
    ap.add_argument("--limit", type=int, default=40, help="held-out rows evaluated per scenario")
    ap.add_argument("--max-length", type=int, default=None,
                    help="force sft.max_length (default: the task's, which ftkit run raises so no training row is cut)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    if args.classification and "classification" not in names:
        names.append("classification")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; scenarios are: {', '.join(SCENARIOS)}")
    start = time.perf_counter()
    tokenizer = load_tokenizer()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="ftkit-scenarios-") as tmp:
        for name in names:
            try:
                outcomes.append(run_scenario(name, args, tokenizer, Path(tmp)))
            except Exception as err:  # noqa: BLE001 (one scenario failing is reported; the others run)
                traceback.print_exc()
                outcomes.append({"name": name, "label": SCENARIOS[name][0], "error": f"{type(err).__name__}: {err}"})
    print(f"\n{len(names)} scenarios, SFT at most {args.sft_minutes:g} min each, {args.limit} held-out rows each, "
          f"{torch.get_num_threads()} torch thread(s); total wall time {(time.perf_counter() - start) / 60:.1f} min")
    for o in outcomes:
        if "max_length" in o:
            print(f"{o['name']}: {o['max_length']}")
    for o in outcomes:
        print(line(o))
    for o in outcomes:
        if "summary" in o:
            record(f"scenarios/{o['name']}", figures(o), note=f"SFT at most {args.sft_minutes:g} min, "
                   f"{args.limit} held-out rows, {torch.get_num_threads()} torch thread(s)")


if __name__ == "__main__":
    main()
