"""ftkit: the whole job without a notebook.

    ftkit demo                      prompts vs SFT vs SFT+DPO on the embedded model, offline
    ftkit run CONFIG                the same pipeline on your data, from a YAML or JSON config
    ftkit runs                      the recorded runs, with status and headline metric
    ftkit report RUN...             an HTML report from finished runs; --evaluate re-scores them first
    ftkit launch CONFIG --gpus N    an `accelerate launch` command for the same training
    ftkit train CONFIG              training only (what `ftkit launch` runs on every process)
    ftkit serve RUN_OR_MODEL        an OpenAI-compatible server for a tuned run (merged) or a model
    ftkit export RUN OUT [--gguf]   the adapter, merged weights or GGUF + Modelfile, re-scored with --check

Each command is a short function over the core; the module is over 400 lines because the
commands and the one parser that names their options belong together (a flag's help text and the
command that reads it sit in one file). Nothing heavy is imported at module level: ``ftkit --help``
and ``ftkit runs`` load no model library, and ``ftkit run --check`` checks the config and the data
files before it does.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ftkit import tasks
from ftkit.data import examples
from ftkit.config import (ConfigError, DataConfig, DPOStage, ModelConfig, OutputConfig, PipelineConfig,
                          SFTStage, describe, dump_config, load_config)
from ftkit.generation.endpoint import EndpointError
from ftkit.models.device import ModelLoadError
from ftkit.models.loading import EMBEDDED_NAME
from ftkit.data.sources import DataError

__all__ = ["build_parser", "demo_config", "main"]

DEMO_OUT = "ftkit-demo"


def demo_config(args: argparse.Namespace) -> PipelineConfig:
    """The demo as a config: what ``ftkit run`` would need to do the same.

    Time-boxed so the whole demo stays short on a small CPU (``benchmarks/demo.py`` measures it; the
    README quotes its figures from ``docs/measured.json``): SFT stops before ``--sft-minutes``, DPO (for an example with preference pairs) before ``--dpo-minutes``, and ``--limit``
    held-out rows are evaluated. ``--task`` runs the same story on that task's built-in example,
    with its prompts and metrics.
    """
    out = Path(args.out)
    task = tasks.get(args.task)
    example = args.example if args.task == "classification" else task.examples[0]
    pairs = f"{example}_preferences"
    return PipelineConfig(
        data=DataConfig(source=example, test_size=0.2, seed=0, stratify_by="label", limit=args.limit),
        model=ModelConfig(name=args.model),
        task=task.name,
        # max_length 512: no example is cut (SmolLM2 needs under 200 tokens for the longest routing
        # example; a model with a coarser tokenizer needs more), and batches pad only to their longest row.
        # Steps take seconds here (SFT) to tens of seconds (DPO): log often, for the terminal and the curves.
        # One epoch (96 steps of 4): batches of 4 reached 0.92 after 80 s on the routing example, and a
        # step shares the prompt's common start, so SFT ends in about a minute, before the time limit.
        sft=SFTStage(name="demo-sft", epochs=1, max_steps=args.max_steps, max_minutes=args.sft_minutes,
                     max_length=max(512, task.max_length), logging_steps=2),
        # 4 pairs a step (each is two sequences, plus the reference pass): several steps, and a
        # curve, within the time limit instead of one or two.
        dpo=DPOStage(name="demo-dpo", source=pairs, max_steps=args.max_steps, max_minutes=args.dpo_minutes,
                     max_length=512, batch_size=4, logging_steps=1, save_steps=1000)
        if pairs in examples.names() else None,
        output=OutputConfig(runs_root=str(out / "runs"), report=str(out / "report.html")),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from ftkit.pipeline import run_pipeline

    config = demo_config(args)
    saved = dump_config(config, Path(args.out) / "config.yaml")
    print(f"Demo config: {saved} (edit a copy and pass it to `ftkit run`)")
    run_pipeline(config, title=f"ftkit demo: {config.task} on {Path(config.data.source).stem}")
    return 0


def _with_out(config: PipelineConfig, out: str | None) -> PipelineConfig:
    if out:
        config.output = OutputConfig(runs_root=str(Path(out) / "runs"), report=str(Path(out) / "report.html"))
    return config


def _resumable(config: PipelineConfig, run_id: str | None):
    """The run ``--resume`` names, under the config's runs folder, if it can be continued."""
    if not run_id:
        return None
    from ftkit.runs import UNREADABLE, load_run

    try:
        run = load_run(run_id, config.output.runs_root)
    except KeyError as err:
        raise ValueError(f"--resume: {err.args[0]}") from None
    if UNREADABLE in run.status:
        raise ValueError(f"--resume: run {run.id} cannot be resumed: {run.status[UNREADABLE]}")
    status = run.status.get("status")
    if status not in ("interrupted", "stopped", "failed"):
        raise ValueError(f"run {run.id} is {status}; --resume continues an interrupted, stopped or failed run")
    if run.config.get("kind") == "dpo" and config.dpo is None:
        raise ValueError(f"run {run.id} is a DPO run, but the config has no dpo section to continue it with")
    return run


def _smoke(config: PipelineConfig, args: argparse.Namespace) -> PipelineConfig:
    """``--limit N``: N held-out rows evaluated and N training rows (and DPO pairs) trained on;
    ``--max-steps N``: SFT and DPO stop after N steps. For a first, quick run of one's own config."""
    if getattr(args, "limit", None):
        config.data.limit = config.data.train_limit = args.limit
    if getattr(args, "max_minutes", None) is not None:
        if not 0 <= args.max_minutes < float("inf"):
            raise ConfigError([f"--max-minutes: {args.max_minutes:g} is not 0 (no budget) or a number of minutes"])
        config.max_minutes = args.max_minutes
    if getattr(args, "max_steps", None):
        for stage in (config.sft, config.dpo):
            if stage is not None:
                stage.max_steps = args.max_steps
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _smoke(_with_out(load_config(args.config), args.out), args)
    if args.check:
        return check_run(config, args.config)
    from ftkit.pipeline import run_pipeline

    run_pipeline(config, title=f"ftkit run: {Path(args.config).name}", resume=_resumable(config, args.resume))
    return 0


def check_run(config: PipelineConfig, name: str, say=print) -> int:
    """``ftkit run --check``: everything the run checks before it trains, with the config's own
    templates and the settings the run will use (:func:`ftkit.pipeline.prepare_data`,
    :func:`~ftkit.pipeline.plan`, :func:`~ftkit.pipeline.preflight`: the data, the split and its
    leaks, every prompt's token lengths and its fit in the model's context, SFT's and DPO's
    pre-flight), then what the run will do and how long it should take here, from one measured
    training step and one measured batch of answers. A data file's own problems (what it is, its
    size, binary content, rows, columns, rows longer than any context) are found before a tokenizer
    or the pipeline loads (:func:`data_problems`); the rest is read with the tokenizer alone, so a
    broken file is reported before any weights load. Returns 2 when the run would refuse."""
    def refuse(problems: list[str], when: str) -> int:
        for problem in problems:
            say(f"ERROR: {problem}")
        say(f"{name}: NOT VALID: {len(problems)} problem(s) the run would stop on {when}; each says what to change")
        return 2

    problems = data_problems(config)
    if problems:
        return refuse(problems, "before training")
    from ftkit.estimate import estimate, plan_lines
    from ftkit.models.loading import load_model, load_tokenizer
    from ftkit.pipeline import model_context, plan, prepare_data, preflight

    try:
        for t in config.templates:  # the key a hosted baseline needs is set (it is never printed)
            if t.endpoint is not None:
                t.endpoint.check_key()
        prepared = prepare_data(config, load_tokenizer(config.model.name), say)
        p = plan(config, prepared)
    except (DataError, ModelLoadError, EndpointError, ValueError, KeyError) as err:
        return refuse([err.args[0] if isinstance(err, KeyError) else str(err)], "before training")
    try:
        model, tokenizer = load_model(config.model.name, device=config.model.device, dtype=config.model.dtype,
                                      verbose=False)
    except ModelLoadError as err:
        return refuse([f"model.name: {err}"], "at its start")
    problems, notes = preflight(prepared, p, tokenizer, model_context(model))
    for line in notes:
        say(f"  {line}")
    if problems:
        return refuse(problems, "before training")
    say("")
    for line in plan_lines(config, prepared, p) + estimate(model, tokenizer, config, prepared, p):
        say(line)
    say(f"{name}: valid (everything the run checks before training passed)")
    return 0


def data_problems(config: PipelineConfig) -> list[str]:
    """What is wrong with the config's own data files, read without a tokenizer: the checks that
    refuse a file (what it is, its size, binary content, its rows and columns, the mapping, rows over
    the character bound a context could hold) cost no model library. Built-in examples are known good.
    Token lengths wait for the tokenizer (:func:`ftkit.pipeline.prepare_data`), with the model's own
    context, which may refuse shorter rows than this bound does."""
    from ftkit.data.canonical import check_data

    sources = [("", config.data.source, config.data.mapping)]
    if config.dpo is not None:
        sources.append(("dpo.source: ", config.dpo.source, config.dpo.mapping))
    found = []
    for prefix, source, mapping in sources:
        if source in examples.names():
            continue
        report = check_data(source, mapping or None, long_rows=config.data.long_rows)
        if not report.ok:
            found.append(prefix + "; ".join(report.errors))
    return found


def cmd_train(args: argparse.Namespace) -> int:
    """Training only, once per process under ``accelerate launch``; the main process records."""
    from accelerate import PartialState

    from ftkit.models.loading import load_model
    from ftkit.pipeline import RunRefused, model_context, plan, prepare_data, preflight, train_stages
    from ftkit.runs import is_main_process, outcome

    config = _smoke(_with_out(load_config(args.config), args.out), args)
    _resumable(config, args.resume)  # fail here, before a model loads
    PartialState()  # joins the process group `accelerate launch` set up; binds this GPU
    main = is_main_process()
    say = print if main else (lambda _text: None)
    # Every process trains (the trainer splits batches across them) in one shared run folder;
    # the main process writes the record (ftkit.runs).
    root = Path(config.output.runs_root)
    model, tokenizer = load_model(config.model.name, device=config.model.device, dtype=config.model.dtype,
                                  verbose=False, threads=config.model.threads)
    prepared = prepare_data(config, tokenizer, say)
    p = plan(config, prepared)
    # As ftkit run: refuse before training (the checks of prompts it never evaluates aside).
    problems, _ = preflight(prepared, p, tokenizer, model_context(model), evaluation=False)
    if problems:
        raise RunRefused(problems)
    runs = train_stages(config, model, tokenizer, prepared, p, root, say, resume=_resumable(config, args.resume))
    for run in runs:
        say(f"{run.id}: {outcome(run.status)} ({run.path})")
    return 0 if all(r.status.get("status") == "completed" for r in runs) else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from ftkit.runs import list_runs, runs_dir

    runs = list_runs(args.root)
    if not runs:
        print(f"no runs under {runs_dir(args.root)}")
        return 0
    lines = [("run", "kind", "status", "steps", "wall time", "headline metric")]
    for run in runs:
        try:
            lines.append(_runs_line(run))
        except Exception as err:  # noqa: BLE001 - one unreadable run must not hide the others
            lines.append((run.id, "", "unknown", "", "", f"cannot be read: {err}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
    return 0


def _runs_line(run) -> tuple[str, ...]:
    """One run's line of ``ftkit runs``; a status.json that cannot be read says why in the last column."""
    from ftkit.runs import TIME_BUDGET, UNREADABLE
    from ftkit.training.curves import training_cost  # what the report's cost table reads, without its plots

    cost, status = training_cost(run), run.status
    record = run.evaluation
    headline = f"{record['metric']} {record['value']:.3f} ({record['variant']})" if record else ""
    if UNREADABLE in status:
        headline = f"cannot be read: {status[UNREADABLE]}"
    wall = f"{cost['seconds']:.0f} s" if cost["seconds"] is not None else ""
    steps = "" if cost["steps"] is None else str(cost["steps"])
    # A run its time budget ended is "completed" with fewer steps than planned: say so.
    shown = "time budget" if status.get("ended_by") == TIME_BUDGET else status.get("status", "unknown")
    planned = status.get("max_steps")
    if status.get("ended_by") and steps and isinstance(planned, int) and planned > 0:
        steps = f"{steps} of {planned}"
    return run.id, run.config.get("kind", ""), shown, steps, wall, headline


def cmd_report(args: argparse.Namespace) -> int:
    from ftkit.report import recorded_summary, write_report
    from ftkit.runs import load_run

    try:
        runs = [load_run(r, args.root) for r in args.runs]
    except KeyError as err:
        print(f"ftkit: error: {err.args[0]}", file=sys.stderr)
        return 1
    running = [r.id for r in runs if r.status.get("status") == "running"]
    if running:
        print(f"ftkit: error: still running (or ended without a status): {', '.join(running)}; "
              "report on finished runs", file=sys.stderr)
        return 1
    result, notes = evaluate_runs(runs) if args.evaluate else (None, [])
    summary, metric = recorded_summary(runs)
    path = write_report(args.out, title=f"ftkit report: {', '.join(r.id for r in runs)}",
                        summary=summary if result is None else None, result=result, runs=runs,
                        metric=metric or "exact_match", notes=[f"runs: {', '.join(str(r.path) for r in runs)}", *notes])
    print(f"Report: {path}")
    return 0


def evaluate_runs(runs, say=print):
    """``ftkit report --evaluate``: score each run again on its own held-out rows, made again from its
    data record (:func:`ftkit.data.provenance.reproduce`, which refuses a source file that changed),
    with the template it trained on and its task's metrics and answer length; record each
    evaluation on its run (``eval.json``, the variant named by the run id). Runs that share their
    held-out rows are evaluated together, so the report compares them row by row: the
    :class:`~ftkit.evaluation.evaluate.EvalResult` is returned when every run shares them (else None,
    and the report reads the recorded summaries), with the report's notes."""
    from ftkit.data.provenance import reproduce, summary
    from ftkit.evaluation import metrics as M
    from ftkit.evaluation.evaluate import Variant, evaluate
    from ftkit.models.tuned import load_run_model, run_template
    from ftkit.runs import RunFileError

    groups: dict[str, list] = {}
    for run in runs:
        try:
            record = run.data
        except (RunFileError, ValueError) as err:
            raise ValueError(f"--evaluate: run {run.id}'s data record cannot be read: {err}") from None
        if record is None:
            raise ValueError(f"--evaluate: run {run.id} recorded no data (no data.json: it was trained before runs "
                             "recorded their data, or by train_sft without data_record=), so its held-out rows are "
                             "not known. Train it again with `ftkit run`, or score it in a notebook with "
                             "ComparePanel on the rows it was held out from")
        if not (run.adapter_dir / "adapter_config.json").is_file():
            raise ValueError(f"--evaluate: run {run.id} saved no adapter (status: {run.status.get('status')}); "
                             "there is no tuned model to score")
        groups.setdefault(summary(record)["held_out_sha256"] or run.id, []).append(run)
    results, notes = [], []
    for same_rows in groups.values():
        record = same_rows[0].data
        test = reproduce(same_rows[0])[1]
        task = record.get("task") if isinstance(record.get("task"), dict) else {}
        default = tasks.get(task["name"]) if task.get("name") in tasks.names() else None
        try:
            metrics = M.resolve(task.get("metrics") or (default.metric_names() if default else ["exact_match"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"--evaluate: run {same_rows[0].id}'s data record names metrics this ftkit cannot "
                             f"score: {err}") from None
        max_new_tokens = task.get("max_new_tokens") or (default.max_new_tokens if default else 32)
        stops = tuple(task.get("stop_strings") or (default.stop_strings if default else ()))
        ids = ", ".join(r.id for r in same_rows)
        where = f"{record['source'].get('given')} (sha256 {record['source'].get('sha256')})"
        say(f"Evaluating {ids} on the {len(test)} held-out rows of {where}, reproduced from the data record; "
            f"metrics {', '.join(metrics)}")
        variants = [Variant(*load_run_model(r, merged=True), run_template(r), name=r.id,
                            max_new_tokens=max_new_tokens, stop_strings=stops,
                            answer_end=task.get("answer_end", default.answer_end if default else None))
                for r in same_rows]
        result = evaluate(variants, test, metrics=metrics, labels=task.get("labels") or None, timing_rounds=0)
        for run in same_rows:
            run.record_evaluation(result, variant=run.id, metric=next(iter(metrics)))
            say(f"  {run.id}: {next(iter(metrics))} {result.summary.loc[run.id, next(iter(metrics))]:.3f}")
        results.append(result)
        notes.append(f"re-evaluated {ids} on {len(test)} held-out rows of {where}, reproduced from the data record")
    return (results[0] if len(results) == 1 else None), notes


def cmd_serve(args: argparse.Namespace) -> int:
    from ftkit.serving import serve

    serve(args.model, host=args.host, port=args.port, runs_root=args.root, device=args.device, dtype=args.dtype,
          threads=args.threads)
    return 0


def _print_export_checks(run, args, rows) -> None:
    """The checks this export recorded: the transformers re-score, then each GGUF file in llama.cpp."""
    if rows is None:
        return
    kind = "gguf" if args.gguf else "merged" if args.merged else "adapter"
    out = str(Path(args.out).resolve())
    for check in run.export_checks:
        if check.get("kind") == kind and str(check.get("folder", "")).startswith(out):
            print(check["message"])


def cmd_export(args: argparse.Namespace) -> int:
    from ftkit.data.canonical import load_data
    from ftkit.export import ExportError
    from ftkit.export.merged import export_run
    from ftkit.runs import load_run

    try:
        run = load_run(args.run, args.root)
    except KeyError as err:
        print(f"ftkit: error: {err.args[0]}", file=sys.stderr)
        return 1
    rows = load_data(args.check, verbose=False) if args.check else None
    try:
        if args.gguf_type and not args.gguf:
            print("ftkit: error: --gguf-type writes quantized GGUF files: add --gguf", file=sys.stderr)
            return 2
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", UserWarning)
            folder = export_run(run, args.out, merged=args.merged, gguf=args.gguf, dtype=args.dtype,
                                check_rows=rows, metrics=args.metric or ["exact_match"], quantized=args.gguf_type or ())
    except ExportError as err:
        _print_export_checks(run, args, rows)
        print(f"ftkit: error: {err}", file=sys.stderr)
        return 1
    print(f"Exported {run.id} to {folder}")
    _print_export_checks(run, args, rows)
    for warning in said:
        if "llama.cpp" in str(warning.message):
            print(f"ftkit: {warning.message}")
    if args.gguf:
        print(f"Ollama: ollama create NAME -f {Path(folder) / 'Modelfile'}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from ftkit.training.launch import run_launch, write_launch

    config = load_config(args.config)  # fail here, not on N processes at once
    accumulation = int((config.sft.trl if config.sft else {}).get("gradient_accumulation_steps", 1))
    plan = write_launch(args.config, args.out, gpus=args.gpus, strategy=args.strategy,
                        mixed_precision=args.mixed_precision, gradient_accumulation_steps=accumulation)
    print(f"Accelerate config: {plan.accelerate_config}\nCommand ({plan.script}):\n  {plan.shell}")
    if not args.run:
        return 0
    return run_launch(plan)


def _smoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="a quick first run: evaluate N held-out rows and train on N rows (and N DPO pairs); "
                        "for conversations, N conversations")
    p.add_argument("--max-steps", type=_positive, metavar="N", help="stop SFT and DPO after N steps")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _steps(text: str) -> int:
    return -1 if text.strip() == "-1" else _positive(text)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected minutes above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftkit", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 2)[2].split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="prompt baselines, SFT and DPO on the embedded model, with a report")
    p.add_argument("--model", default=EMBEDDED_NAME, help="model name, folder or hub id")
    labelled = [n for n in examples.names() if examples.info(n).task == "classification"]
    p.add_argument("--task", default="classification", choices=tasks.names(),
                   help="the scenario: its built-in example, prompts and metrics")
    p.add_argument("--example", default="support_routing", choices=labelled,
                   help="the classification example (other tasks use their own)")
    p.add_argument("--limit", type=_positive, default=48, help="held-out rows to evaluate (fewer is faster)")
    p.add_argument("--sft-minutes", type=_minutes, default=4.0, help="time limit of the SFT run")
    p.add_argument("--dpo-minutes", type=_minutes, default=1.5, help="time limit of the DPO run")
    p.add_argument("--max-steps", type=_steps, default=-1, help="cap SFT and DPO steps (-1: time limits only)")
    p.add_argument("--out", default=DEMO_OUT, help="folder for the runs, config.yaml and report.html")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="the pipeline on your data, from a YAML or JSON config",
                       epilog="config keys, defaults and what they do:\n\n" + describe(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a .yaml, .yml or .json file (see ftkit.config.PipelineConfig)")
    p.add_argument("--out", help="folder for the runs and report.html (overrides output: in the config)")
    p.add_argument("--check", action="store_true",
                   help="check everything the run checks before training (data, split, leaks, each prompt's "
                        "token lengths and context fit, SFT's and DPO's pre-flight), say what the run will do "
                        "and estimate its minutes from one measured step; exit 2 if the run would refuse")
    p.add_argument("--resume", metavar="RUN", help="continue this interrupted or stopped run (id or prefix) "
                                                   "from its last checkpoint, in the same run record")
    p.add_argument("--max-minutes", type=float, metavar="M",
                   help="the whole run's time budget (max_minutes in the config; 0: none): training gets what the "
                        "baselines leave, less what scoring and timing the tuned variants take")
    _smoke_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="SFT (and DPO) from a config, no evaluation; what `launch` runs")
    p.add_argument("config", help="a .yaml, .yml or .json file, as for `ftkit run`")
    p.add_argument("--out", help="folder for the runs (overrides output.runs_root)")
    p.add_argument("--resume", metavar="RUN", help="continue this interrupted or stopped run from its last checkpoint")
    _smoke_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list recorded runs with status and headline metric")
    p.add_argument("--root", help="runs folder (default $FTKIT_RUNS or ./runs)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="an HTML report from finished runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id or a unique prefix of it")
    p.add_argument("--root", help="runs folder (default $FTKIT_RUNS or ./runs)")
    p.add_argument("--out", default="report.html", help="where to write the report")
    p.add_argument("--evaluate", action="store_true",
                   help="first score each run again on its own held-out rows, made again from its data record "
                        "(data.json; refused if the source file changed), with the template it trained on and its "
                        "task's metrics, and record the evaluation on the run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="an OpenAI-compatible server (transformers serve) for a tuned run or a model",
                       description="Serve a tuned run (its adapter merged into the weights, once, cached) or a "
                                   "model over an OpenAI-compatible API until Ctrl-C. A request without a system "
                                   "message gets the run's system prompt. Prints the base URL and model name "
                                   "for a client (ftkit.generation.endpoint.Endpoint, the openai client, a config's "
                                   "templates: endpoint:).")
    p.add_argument("model", metavar="RUN_OR_MODEL",
                   help=f"a run id (or unique prefix) or run folder; or a model: {EMBEDDED_NAME}, a folder, a "
                        ".gguf file or a Hub id")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 opens it to other machines (it checks no API key)")
    p.add_argument("--root", help="runs folder (default $FTKIT_RUNS or ./runs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the model runs; auto as ftkit.load_model picks it")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="precision; auto as ftkit.load_model picks it (served answers then equal the notebook's)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: one per core other processes leave free, or $FTKIT_THREADS)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a run's adapter, merged weights, or GGUF + Ollama Modelfile; checked")
    p.add_argument("run", metavar="RUN", help="run id or a unique prefix of it")
    p.add_argument("out", help="folder to write")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--merged", action="store_true", help="full weights that plain transformers loads")
    kind.add_argument("--gguf", action="store_true",
                      help="model.gguf + Modelfile for llama.cpp and Ollama (llama architecture)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="precision of the GGUF matrices (norms stay float32)")
    p.add_argument("--gguf-type", action="append", choices=["q8_0", "q4_k_m"],
                   help="also write model-TYPE.gguf quantized by llama.cpp's rules (repeatable); --check scores each")
    p.add_argument("--check", metavar="ROWS",
                   help="held-out rows (any file load_data reads): re-score the export in a fresh process, and a "
                        "GGUF export in llama.cpp too (pip install 'ftkit[gguf]')")
    p.add_argument("--metric", action="append", help="metric name for --check (repeatable; default exact_match)")
    p.add_argument("--root", help="runs folder (default $FTKIT_RUNS or ./runs)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("launch", help="write (and with --run, start) an `accelerate launch` for the training")
    p.add_argument("config", help="the config `ftkit run` takes; its training part is launched")
    p.add_argument("--gpus", type=int, required=True, help="GPUs (one process each); 0: one CPU process")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp", "deepspeed"],
                   help="ddp: a model copy per GPU; fsdp / deepspeed (ZeRO-3): weights sharded across GPUs")
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"],
                   help="GPU precision (ignored with --gpus 0)")
    p.add_argument("--out", default="launch", help="folder for accelerate.yaml and launch.sh")
    p.add_argument("--run", action="store_true", help="start the command now and wait for it")
    p.set_defaults(func=cmd_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines arrive as they happen in a log file too
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"ftkit: {err}", file=sys.stderr)
        return 2
    except DataError as err:  # data the run cannot use: the same exit as --check's refusal
        print(f"ftkit: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, ModelLoadError, EndpointError) as err:  # errors that say what to do
        print(f"ftkit: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        if "pip install" not in str(err):  # not a missing extra: a bug, with its traceback
            raise
        print(f"ftkit: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
