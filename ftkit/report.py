"""One self-contained HTML page with everything a run measured, readable without a kernel.

Sections: the summary table, the headline metric with its 95% intervals, the metric against
prompt tokens per request, the training curves (loss; DPO reward margins and accuracies), what
each training run cost, the answers a few held-out rows got while each run trained (when it
sampled them), the exported models re-scored in a fresh process next to the run's own
score (when a run recorded such a check), and the side-by-side answers per example. Charts are
plotly figures with plotly.js inlined once, so the file opens offline and links to nothing; every
string that comes from the user's data or settings is escaped.

>>> path = write_report("report.html", result=result, runs=[sft, dpo])  # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.runs import Run
from ftkit.training.curves import read_curves, training_cost

if TYPE_CHECKING:  # pandas and plotly load with the first chart or table, not with `ftkit runs`
    import pandas as pd
    import plotly.graph_objects as go

    from ftkit.evaluation.evaluate import EvalResult

__all__ = ["curves_figure", "export_table", "metric_figure", "recorded_summary", "render_report", "run_cost",
           "samples_section", "tokens_figure", "write_report"]

MAX_TABLE_ROWS = 500  # a longer side-by-side table makes the page slow to open
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.ok { background: #e8f5e9; } td.bad { background: #fdecea; }
.note { color: #666; font-size: 0.85rem; } pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _table(header: list[str], rows: list[list], classes: list[list[str]] | None = None) -> str:
    """An HTML table; every cell escaped, numbers right-aligned."""
    out = ["<table><thead><tr>", *(f"<th>{_esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            cls = (classes[i][j] if classes else "") or ("num" if isinstance(value, (int, float)) else "")
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{_esc(_fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Figures


def metric_figure(summary: pd.DataFrame, metric: str) -> go.Figure:
    """Bars of ``metric`` per variant with the 95% bootstrap interval as error bars (and macro-F1)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in [metric, "macro_f1"]:
        if name not in summary.columns or (name == "macro_f1" and name == metric):
            continue
        low, high = summary.get(f"{name}_low"), summary.get(f"{name}_high")
        error = None if low is None else dict(type="data", array=(high - summary[name]).tolist(),
                                              arrayminus=(summary[name] - low).tolist())
        fig.add_bar(x=list(summary.index), y=summary[name].tolist(), name=name, error_y=error)
    fig.update_layout(title=f"{metric} per variant, 95% bootstrap intervals", barmode="group",
                      yaxis_title=metric, height=420)
    return fig


def tokens_figure(summary: pd.DataFrame, metric: str) -> go.Figure:
    """The headline metric against prompt tokens per request: what each point of accuracy costs.

    One trace per variant, so variants on the same spot stay apart in the legend.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, r in summary.iterrows():
        error = None
        if f"{metric}_low" in summary.columns:
            error = dict(type="data", array=[r[f"{metric}_high"] - r[metric]],
                         arrayminus=[r[metric] - r[f"{metric}_low"]])
        fig.add_scatter(x=[r["prompt_tokens"]], y=[r[metric]], mode="markers+text", name=str(name),
                        text=[str(name)], textposition="top center", error_y=error, marker=dict(size=11))
    fig.update_layout(title=f"{metric} against prompt tokens per request", xaxis_title="prompt tokens per request",
                      yaxis_title=metric, height=420)
    return fig


def curves_figure(runs: list[Run], keys: tuple[str, ...], title: str) -> go.Figure | None:
    """One line per run and key over the logged steps; None when no run logged any of them."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for run in runs:
        logs = run.events("log")
        for key in keys:
            points = [(e["step"], e[key]) for e in logs if e.get(key) is not None]
            if points:
                steps, values = zip(*points)
                fig.add_scatter(x=list(steps), y=list(values), mode="lines+markers",
                                name=f"{run.id}: {key}" if len(keys) > 1 else run.id)
    if not fig.data:
        return None
    fig.update_layout(title=title, xaxis_title="step", height=380)
    return fig


# --------------------------------------------------------------------------------------------
# Tables


def run_cost(run: Run) -> dict:
    """One line of the cost table: :func:`ftkit.training.curves.training_cost` plus the run's kind,
    status, rows and device, and what its curves say."""
    cost, config = training_cost(run), run.config
    tokens, seconds = cost["tokens"], cost["seconds"]
    return {"run": run.id, "kind": config.get("kind", ""), "status": run.status.get("status", "unknown"),
            "steps": cost["steps"], "wall_s": seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds if tokens and seconds else None,
            "train_rows": config.get("train_rows"), "device": config.get("device", "").split(":")[0],
            "reading": read_curves(run.events("log"), run.events("eval"))}


def recorded_summary(runs: list[Run]) -> tuple[pd.DataFrame | None, str | None]:
    """The evaluation summaries recorded with the runs (:attr:`Run.evaluation`), merged by variant."""
    rows: dict[str, dict] = {}
    metric = None
    for run in runs:
        record = run.evaluation
        if record is not None:
            metric = metric or record.get("metric")
            for line in record.get("summary", []):
                rows[line["variant"]] = line
    if not rows:
        return None, None
    import pandas as pd

    return pd.DataFrame(list(rows.values())).set_index("variant"), metric


def export_table(runs: list[Run]) -> str | None:
    """The export checks the runs recorded (:attr:`Run.export_checks`): per exported folder (and per
    GGUF file answered by llama.cpp), its score next to the run's model's on the same rows, the
    difference, the identical answers and the verdict; None when none was checked."""
    header = ["run", "export", "answered by", "weights", "rows", "metric", "run's model", "exported",
              "difference (95% CI)", "identical answers", "verdict"]
    rows, classes = [], []
    for run in runs:
        for check in run.export_checks:
            n = check.get("rows", 0)
            passed = bool(check.get("passed"))
            llamacpp = check.get("engine") == "llama.cpp"
            intervals = check.get("intervals") or {}
            ours, theirs = float(check.get("in_memory", float("nan"))), float(check.get("exported", float("nan")))
            if llamacpp:
                mean, low, high = intervals.get("difference") or [theirs - ours, float("nan"), float("nan")]
                difference = f"{mean:+.3f} ({low:+.3f} to {high:+.3f})"
                ours_text = _with_interval(ours, intervals.get("in_memory"))
                theirs_text = _with_interval(theirs, intervals.get("exported"))
                cause = check.get("cause") or ""
                verdict = ("matches" if passed and not cause else f"quantization: {cause}" if passed
                           else f"differs: {cause or 'cause not found'}")
            else:
                difference, ours_text, theirs_text = f"{theirs - ours:+.3f}", ours, theirs
                verdict = "matches" if passed else "differs: " + "; ".join(
                    f"row {d['row']}: {d['in_memory']!r} in memory, {d['exported']!r} exported"
                    for d in check.get("differ", [])[:3])
            equal = check.get("answers_equal", 0)
            rows.append([run.id, Path(check.get("folder", "")).name if llamacpp else check.get("kind", ""),
                         "llama.cpp" if llamacpp else "transformers, fresh process",
                         check.get("gguf_type") if llamacpp else check.get("dtype", ""), n, check.get("metric", ""),
                         ours_text, theirs_text, difference, f"{equal} of {n} ({equal / max(n, 1):.0%})", verdict])
            classes.append([""] * 10 + ["ok" if passed else "bad"])
    if not rows:
        return None
    from ftkit.export.llamacpp_check import IDENTICAL_MIN

    note = ("<p class='note'>transformers: each export loaded in a fresh Python process, answering the same held-out "
            "rows greedily with the run's template; merged weights must match the run exactly. llama.cpp: each GGUF "
            "file answered by llama.cpp itself through the file's own chat template; float32/float16 files must give "
            f"the same answers (at least {IDENTICAL_MIN:.0%}) with no template, tokenizer or end-of-turn cause; for "
            "quantized files the difference, with its 95% bootstrap interval, is what quantization costs on your "
            "rows</p>")
    return _table(header, rows, classes) + note


def _with_interval(value: float, interval) -> str:
    if not interval:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def samples_section(runs: list[Run]) -> str | None:
    """The answers each run gave a few held-out rows while it trained (its recorded ``sample``
    events, :mod:`ftkit.training.samples`): one table per run, rows by sampled steps, every answer
    escaped; None when no run sampled any."""
    from ftkit.training.samples import samples_html

    parts = []
    for run in runs:
        table = samples_html(run.events("sample"))
        if table:
            parts.append(f"<h3>{_esc(run.id)}</h3>{table}")
    if not parts:
        return None
    return ("<p class='note'>answered greedily with the training template at step 0 (the base model) and every "
            "few steps; yellow: changed since the sampling before; \u2713 / \u2717: matches the reference or "
            "not (short references only)</p>" + "".join(parts))


def _summary_table(summary: pd.DataFrame, metric: str) -> str:
    import pandas as pd

    cols = [c for c in summary.columns if not c.endswith(("_low", "_high")) and c != "n"]
    header = ["variant", *[f"{c} (95% CI)" if f"{c}_low" in summary.columns else c for c in cols]]
    rows = []
    for name, r in summary.iterrows():
        cells = [name]
        for c in cols:
            if f"{c}_low" in summary.columns:
                cells.append(f"{r[c]:.3f} ({r[f'{c}_low']:.2f}-{r[f'{c}_high']:.2f})")
            elif c.startswith("usd_"):  # fractions of a cent: shown whole, blank for local variants
                cells.append("" if pd.isna(r[c]) else f"{r[c]:.6f}")
            else:
                cells.append(float(r[c]))
        rows.append(cells)
    n = int(summary["n"].iloc[0]) if "n" in summary.columns else None
    note = f"<p class='note'>{n} held-out rows; headline metric: {_esc(metric)}</p>" if n else ""
    return _table(header, rows) + note


def _side_by_side(result: EvalResult, metric: str) -> str:
    import pandas as pd

    n = min(len(result.table), MAX_TABLE_ROWS)
    variants = result.variants
    outputs = {v: result.outputs(v)[:n] for v in variants}
    scores = {v: list(result.column(v, metric))[:n] if metric in result.scores[v] else [None] * n
              for v in variants}
    # A right/wrong metric colours the cells; a graded one (ROUGE, chrF) shows each answer's score.
    graded = any(s is not None and 0 < s < 1 for v in variants for s in scores[v])
    header = ["#", "input", "reference", *variants]
    rows, classes = [], []
    notes = {v: result.notes(v, metric)[:n] if metric in result.scores[v] else [""] * n for v in variants}
    for i in range(n):
        cells = [f"{outputs[v][i]}\n({metric} {scores[v][i]:.2f})" if graded and scores[v][i] is not None
                 else outputs[v][i] for v in variants]
        cells = [f"{c}\n({notes[v][i]})" if notes[v][i] else c for c, v in zip(cells, variants)]
        asked = result.table["input"].iloc[i]
        if "history" in result.table.columns and result.table["history"].iloc[i]:  # a conversation's turn
            asked = f"{result.table['history'].iloc[i]}\n\nuser: {asked}"
        rows.append([i, asked, result.table["reference"].iloc[i], *cells])
        classes.append(["", "", ""] + ["" if graded or scores[v][i] is None or pd.isna(scores[v][i])
                                       else ("ok" if scores[v][i] >= 1 else "bad") for v in variants])
    total = len(result.table)
    more = f"<p class='note'>first {MAX_TABLE_ROWS} of {total} rows</p>" if total > MAX_TABLE_ROWS else ""
    key = f"each answer with its {_esc(metric)}" if graded else f"green: {_esc(metric)} = 1; red: below 1"
    return f"<p class='note'>{key}</p>" + _table(header, rows, classes) + more


# --------------------------------------------------------------------------------------------
# The page


def render_report(*, title: str = "ftkit report", result: EvalResult | None = None,
                  summary: pd.DataFrame | None = None, runs: list[Run] = (), metric: str = "exact_match",
                  notes: list[str] = (), config: dict | None = None, advice=None) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    import plotly.io as pio
    import yaml

    if result is not None:
        summary = result.summary
    sections: list[tuple[str, str]] = []
    figures = []
    if advice is not None:  # the verdict first: what the reader came for
        sections.append(("Verdict", advice._repr_html_()))
    if summary is not None and len(summary):
        sections.append(("Summary", _summary_table(summary, metric)))
        figures.append(("Metrics with 95% confidence intervals", metric_figure(summary, metric)))
        if "prompt_tokens" in summary.columns:
            figures.append(("Accuracy against tokens per request", tokens_figure(summary, metric)))
    runs = list(runs)
    for heading, keys, label in [("Training curves", ("loss",), "Training loss"),
                                 ("DPO rewards", ("rewards/margins", "rewards/accuracies"),
                                  "DPO reward margins and accuracies")]:
        fig = curves_figure(runs, keys, label)
        if fig is not None:
            figures.append((heading, fig))
    first = True
    for heading, fig in figures:
        # plotly.js (about 4 MB) is inlined once, with the first chart; later charts reuse it.
        div = pio.to_html(fig, include_plotlyjs=first, full_html=False, config={"displaylogo": False})
        sections.append((heading, div))
        first = False
    if runs:
        costs = [run_cost(r) for r in runs]
        header = ["run", "kind", "status", "steps", "wall time (s)", "tokens seen", "tokens/s",
                  "train rows", "device", "what the curves say"]
        rows = [[c["run"], c["kind"], c["status"], c["steps"], c["wall_s"], c["tokens"], c["tokens_per_s"],
                 c["train_rows"], c["device"], c["reading"]] for c in costs]
        rows = [[("" if v is None else v) for v in row] for row in rows]
        sections.append(("Training cost", _table(header, rows)))
        exports = export_table(runs)
        if exports is not None:
            sections.append(("Export check", exports))
        answers = samples_section(runs)
        if answers is not None:
            sections.append(("Answers during training", answers))
    if result is not None:
        sections.append(("Side by side", _side_by_side(result, metric)))
    if config is not None:
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        sections.append(("Configuration", f"<pre>{_esc(text)}</pre>"))
    body = "".join(f"<section><h2>{_esc(h)}</h2>{content}</section>" for h, content in sections)
    meta = "".join(f"<p class='note'>{_esc(n)}</p>" for n in [*notes, time.strftime("written %Y-%m-%d %H:%M")])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>{meta}{body}</body></html>")


def write_report(path, **kwargs) -> Path:
    """Write :func:`render_report` to ``path`` (folders created); return the path.

    Keywords: ``title``, ``result`` (an :class:`~ftkit.evaluation.evaluate.EvalResult`: summary, charts and
    the side-by-side answers), or ``summary`` alone (a recorded one, see :func:`recorded_summary`),
    ``runs`` (recorded :class:`~ftkit.runs.Run` objects), ``metric`` (the headline), ``notes``
    (lines under the title), ``config`` (a dict shown as YAML) and ``advice`` (an
    :class:`~ftkit.evaluation.verdict.Advice`, shown first as the verdict).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(**kwargs), encoding="utf-8")
    return path
