"""ComparePanel: prompted base model and fine-tuned runs on the same rows, side by side.

>>> compare = ComparePanel(model, tokenizer, dataset=splits["test"], templates=lab.variants,
...                        runs=[sft_run, dpo_run])                       # doctest: +SKIP
>>> compare.run().summary                                                 # doctest: +SKIP
>>> compare.rate(0, "8-shot", up=False); compare.save_pairs("pairs.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from accelerate.utils import is_peft_model

from ftkit import tasks
from ftkit.evaluation import metrics as M
from ftkit.evaluation.verdict import Advice, advise
from ftkit.data.canonical import as_rows, chat_turns, label_set
from ftkit.evaluation.evaluate import EvalResult, Variant, evaluate, pairs_from_ratings
from ftkit.models.tuned import load_run_model, run_template
from ftkit.prompts import PromptTemplate
from ftkit.training.curves import training_cost
from ftkit.runs import Run
from ftkit.widgets import _html
from ftkit.widgets._ui import button


# The summary's latency columns (medians of the one timing phase, with _low/_high) and their bars.
LATENCY = {"latency_s": "batched (s)", "latency_1_s": "one at a time (s)"}


def _interval(summary: pd.DataFrame, column: str) -> dict | None:
    """Plotly error bars from a column's ``_low``/``_high`` 95% bounds (None when it has none)."""
    if f"{column}_low" not in summary.columns:
        return None
    return dict(type="data", symmetric=False, array=summary[f"{column}_high"] - summary[column],
                arrayminus=summary[column] - summary[f"{column}_low"])


def _latency_words(d) -> str:
    """A paired latency difference (:class:`ftkit.generation.timing.LatencyDifference`) in words: faster or
    slower only when its interval excludes 0, as the verdict says it."""
    how = "batched" if d.kind == "batched" else "one at a time"
    return f"latency {how}: {d.verdict()}, {d.median:+.3f} s per request (95% CI {d.low:+.3f} to {d.high:+.3f})"


class ComparePanel(w.VBox):
    """Evaluate prompt variants of the base model and finished runs on ``dataset`` (at most
    ``limit`` rows), then read the trade-off: score with its 95% interval, latency, tokens per
    request and training cost. Rate outputs with thumbs up/down to build DPO preference pairs.

    Every ticked variant is evaluated in one :func:`~ftkit.evaluation.evaluate.evaluate` call, so they are
    timed together in its one interleaved phase (:mod:`ftkit.generation.timing`): the latency bars carry their
    95% intervals, each variant's paired latency difference from the first is said in words, and
    the timing's notes (how it was timed, the load it saw) sit under the summary. ``timing_rounds``:
    the rounds of that phase (fewer is quicker and its intervals wider; 0: no latency).

    ``templates``: ``{name: PromptTemplate}`` run on the base ``model`` (with adapters off when
    it is a PEFT model), or ``{name: Variant}`` for a prompt baseline elsewhere, such as a hosted
    model (``Variant(Endpoint(model="gpt-4o-mini"), None, template)``); default: zero-shot. ``runs``: finished :class:`~ftkit.runs.Run` objects,
    each loaded with its adapter merged (as it would be served) and evaluated with the template
    it was trained on; named by run id, or pass ``{name: run}`` to name them. ``labels``
    defaults to the sorted labels of ``dataset`` when it has a ``label`` column. Each run's
    evaluation is recorded with it (:meth:`~ftkit.runs.Run.record_evaluation`); pass
    ``record=False`` when ``dataset`` is not held out (rating training rows for DPO pairs).
    ``constrain_labels``: a classifier's local answers only among ``labels`` (constrained decoding,
    :mod:`ftkit.generation.labels`); False to see what the model writes freely.
    """

    def __init__(self, model, tokenizer, dataset, templates: dict[str, PromptTemplate | Variant] | None = None,
                 runs=(), labels=None, metrics=None, limit: int | None = None,
                 max_new_tokens: int | None = None, page_size: int = 20, record: bool = True, task=None,
                 disagreement: float = 0.1, requests: int = 100_000, timing_rounds: int = 3,
                 constrain_labels: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.constrain_labels = constrain_labels  # classification: answers only among the labels
        self.timing_rounds = timing_rounds  # rounds of evaluate's timing phase (0: no latency)
        given = as_rows(dataset)
        self.task = tasks.resolve(task, given, labels).for_rows(given)  # a QA prompt reads the passage
        # A conversation is compared turn by turn: one row per assistant turn (ftkit.data.canonical.chat_turns).
        self._rows = chat_turns(given)[:limit] if limit else chat_turns(given)
        classify = self.task.name == "classification"
        self.labels = list(label_set(self._rows) if labels is None else labels) if classify else []
        if not templates:
            templates = {"zero-shot": self.task.template("zero-shot", labels=self.labels)}
        self.templates = dict(templates)
        self.runs = dict(runs) if isinstance(runs, dict) else {run.id: run for run in runs}
        self.metrics = metrics or M.resolve(self.task.metrics)
        self.max_new_tokens, self.page_size = max_new_tokens or self.task.max_new_tokens, page_size
        self.disagreement = disagreement
        self.requests = requests  # the request volume the verdict puts per-request costs against
        self.record = record
        self.result: EvalResult | None = None
        self.visible_rows: list[int] = []
        self.page = 0
        self._ratings: dict[tuple[int, str], bool] = {}
        self._thumbs: dict[tuple[int, str], tuple[w.Button, w.Button]] = {}
        self._loaded: dict[str, tuple] = {}

        self._messages = w.HTML()
        self._choices = {name: w.Checkbox(value=True, description=name, indent=False)
                         for name in [*self.templates, *self.runs]}
        self._progress = w.Output()  # generation's tqdm.auto bars render here
        self._summary = w.HTML()
        self.advice: Advice | None = None  # the verdict, once prompt variants and runs were compared
        self.judge = None  # a judge's pairwise result shown in the verdict (use_judge); cleared by a new run
        self._flexibility = None  # the probes' result for the verdict (measure_flexibility); cleared by a new run
        self._verdict = w.HTML()
        self.figure = go.FigureWidget(layout=dict(height=520, margin=dict(l=40, r=10, t=40, b=30)))
        self._disagree = w.Checkbox(value=False, description="only rows where the variants' scores differ",
                                    indent=False)
        self._disagree.observe(lambda change: self.only_disagreements(change["new"]), names="value")
        self._page_label = w.HTML()
        self._grid = w.GridBox()
        self._pairs_html = w.HTML()
        self._pairs_path = w.Text(value="preference_pairs.jsonl", description="save to")
        warning = ""
        if not is_peft_model(model) and any("lora_" in n for n, _ in model.named_parameters()):
            warning = _html.error("This model carries LoRA layers from a training run, so the prompt variants "
                                  "do not show the base model. Load it again with ftkit.load_model().")
        super().__init__(children=[
            w.HTML("<h4>Compare</h4>"), w.HTML(warning),
            w.HTML("<b>Variants</b>"), w.HBox(list(self._choices.values()), layout={"flex_flow": "row wrap"}),
            w.HBox([button("Compare", self.run, self._messages, style="primary", css="ftkit-compare"),
                    button("Measure flexibility", self.measure_flexibility, self._messages, css="ftkit-flexibility",
                           tooltip="Ask the base model and each run the built-in general-skills probes: what "
                                   "did tuning cost outside this task? (adds a line to the verdict)")]),
            self._progress, self._verdict, self._summary, self.figure,
            w.HBox([self._disagree, button("◀", lambda: self.show_page(self.page - 1), self._messages),
                    self._page_label, button("▶", lambda: self.show_page(self.page + 1), self._messages)]),
            self._grid,
            w.HBox([self._pairs_path, button("Save pairs", lambda: self.save_pairs(self._pairs_path.value),
                                             self._messages, css="ftkit-save-pairs")]),
            self._pairs_html, self._messages,
        ])
        self.add_class("ftkit-compare-panel")

    # --- actions --------------------------------------------------------------------------------

    def select(self, names) -> None:
        """Tick exactly the variants in ``names`` (template names and run ids)."""
        unknown = set(names) - set(self._choices)
        if unknown:
            raise ValueError(f"no variant {min(unknown)!r}; variants are: {', '.join(self._choices)}")
        for name, box in self._choices.items():
            box.value = name in names

    def run(self) -> EvalResult:
        """Evaluate the ticked variants on the same rows and show the charts and the table."""
        names = [n for n, box in self._choices.items() if box.value]
        if not names:
            raise ValueError("tick at least one variant")
        variants = self.variants(names)
        self._progress.clear_output()
        with self._progress:
            self.result = evaluate(variants, self._rows, self.metrics, labels=self.labels or None,
                                   timing_rounds=self.timing_rounds, constrain_labels=self.constrain_labels)
        for name in names:  # each run keeps its evaluation, on these rows, beside the others
            if self.record and name in self.runs:
                self.runs[name].record_evaluation(self.result, variant=name)
        self._ratings.clear()
        self.judge = self._flexibility = None  # both were measured on the previous comparison's answers
        self._draw_summary(names)
        self.only_disagreements(self._disagree.value)
        self._messages.value = ""
        return self.result

    def variants(self, names=None) -> list[Variant]:
        """The variants as this panel evaluates them (default: all): each prompt on the base
        model, each run merged with its own template; for :func:`~ftkit.evaluation.evaluate.evaluate` or
        :func:`~ftkit.evaluation.experiments.task_change` on other rows."""
        out = []
        for name in names or list(self._choices):
            if isinstance(self.templates.get(name), Variant):  # e.g. a hosted endpoint's prompt
                out.append(replace(self.templates[name], name=name, max_new_tokens=self.max_new_tokens,
                                   **self.task.ends))
            elif name in self.templates:
                # adapter=False: a PEFT model answers as its base model for the prompt variants.
                out.append(Variant(self.model, self.tokenizer, self.templates[name], name=name, adapter=False,
                                   max_new_tokens=self.max_new_tokens, **self.task.ends))
            elif name in self.runs:
                model, tokenizer = self._run_model(self.runs[name])
                out.append(Variant(model, tokenizer, run_template(self.runs[name]), name=name,
                                   max_new_tokens=self.max_new_tokens, **self.task.ends))
            else:
                raise ValueError(f"no variant {name!r}; variants are: {', '.join(self._choices)}")
        return out

    def measure_flexibility(self, probes=None, max_new_tokens: int = 32):
        """The general-skills probes (default: the built-in ``general_probes``; pass fewer rows
        for a quick look) asked of the base model and of each compared run: what tuning cost
        outside the task, with a CI (:func:`ftkit.evaluation.flexibility.flexibility`). The verdict gains the line."""
        from ftkit.evaluation.flexibility import flexibility
        from ftkit.prompts import zero_shot

        if self.result is None or self.advice is None:
            raise ValueError("compare prompt variants and at least one run first: flexibility is measured "
                             "for the runs of the verdict")
        runs = [name for name in self.result.variants if name in self.runs]
        base = Variant(self.model, self.tokenizer, zero_shot(), name="base model", adapter=False)
        tuned = [Variant(*self._run_model(self.runs[name]), zero_shot(), name=name) for name in runs]
        self._progress.clear_output()
        with self._progress:
            flex = flexibility(base, tuned, probes=probes, max_new_tokens=max_new_tokens)
        self._flexibility = flex
        self._show_verdict()
        return flex

    def use_judge(self, judge) -> Advice:
        """Show a judge's pairwise result (:mod:`ftkit.evaluation.judge`, on this comparison's
        answers) in the verdict, and return the new verdict. The verdict follows the judge only
        where the judge's agreement with your own ratings was checked, it compared the verdict's
        two variants, and the headline's interval spans 0 (see :func:`~ftkit.evaluation.verdict.advise`).
        ``None`` takes it away; a new :meth:`run` does too.

        >>> compare.use_judge(judged).judge_note  # doctest: +SKIP
        """
        if self.result is None or self.advice is None:
            raise ValueError("compare prompt variants and at least one run first: the judge joins their verdict")
        self.judge = judge
        self._show_verdict()
        return self.advice

    def ask_judge(self, backend=None, limit: int | None = None, **options) -> Advice:
        """Ask a judge model (default: this panel's base model, in this kernel; or any generation
        backend: an ``Endpoint``, ``server.endpoint()``) which of the verdict's two answers is
        better, row by row in both orders against the task's rules, check it against your thumbs
        (:attr:`ratings`) and show it in the verdict (:meth:`use_judge`). ``limit``: only the first
        rows. Rate at least ten rows of both variants first, or the verdict only shows the judge.

        >>> compare.ask_judge(limit=12).judge_note  # doctest: +SKIP
        """
        from ftkit.evaluation.judge import judge_variants, rules_text
        from ftkit.generation.generate import LocalModel

        if self.result is None or self.advice is None:
            raise ValueError("compare prompt variants and at least one run first: the judge joins their verdict")
        backend = backend if backend is not None else LocalModel(self.model, self.tokenizer)
        self._progress.clear_output()
        with self._progress:
            judged = judge_variants(backend, self.result, self.advice.tuned, self.advice.best_prompt,
                                    ratings=self.ratings, rules=rules_text(self.task), limit=limit, **options)
        return self.use_judge(judged)

    @property
    def ratings(self) -> dict[tuple[int, str], bool]:
        """Your thumbs so far, ``{(row index, variant name): up}``: what a judge is checked against."""
        return dict(self._ratings)

    def only_disagreements(self, flag: bool = True) -> None:
        """Show only the rows where the variants' headline scores differ by more than
        ``disagreement`` (right against wrong, for exact match; a real gap, for ROUGE or chrF)."""
        self._disagree.value = flag
        if self.result is None:
            return
        headline = self.result.metrics[0]
        scores = [list(self.result.column(name, headline)) for name in self.result.variants]
        self.visible_rows = [i for i, row in enumerate(zip(*scores))
                             if not flag or max(row) - min(row) > self.disagreement]
        self.show_page(0)

    def show_page(self, page: int) -> None:
        """Show page ``page`` (from 0) of the side-by-side table."""
        pages = max(1, -(-len(self.visible_rows) // self.page_size))
        self.page = min(max(page, 0), pages - 1)
        self._page_label.value = _html.note(f"page {self.page + 1} of {pages} ({len(self.visible_rows)} rows)")
        self._draw_table()

    def rate(self, row_index: int, variant_name: str, up: bool | None) -> None:
        """Thumbs up (True) or down (False) on a variant's output for a row; None clears it."""
        if self.result is None:
            raise ValueError("run the comparison first")
        if variant_name not in self.result.scores:
            raise ValueError(f"no variant {variant_name!r}; variants are: {', '.join(self.result.scores)}")
        if not 0 <= row_index < len(self._rows):
            raise IndexError(f"row {row_index} does not exist; there are {len(self._rows)} rows")
        if up is None:
            self._ratings.pop((row_index, variant_name), None)
        else:
            self._ratings[(row_index, variant_name)] = bool(up)
        if (row_index, variant_name) in self._thumbs:
            self._style_thumbs(row_index, variant_name)
        self._pairs_html.value = _html.note(f"{len(self.pairs)} preference pairs from your ratings")

    @property
    def pairs(self) -> list[dict]:
        """Preference pairs from the ratings (see :func:`ftkit.evaluation.evaluate.pairs_from_ratings`)."""
        return pairs_from_ratings(self.result, self._rows, self._ratings) if self.result is not None else []

    def save_pairs(self, path: str | os.PathLike) -> Path:
        """Write the pairs as JSONL, ready for ``ftkit.load_data`` and ``train_dpo``."""
        pairs = self.pairs
        if not pairs:
            raise ValueError("no preference pairs yet: rate an output up and another down in the same row "
                             "(or only down, to prefer the reference)")
        path = Path(path)
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        self._pairs_html.value = _html.note(f"{len(pairs)} preference pairs written to {path}")
        return path

    # --- internals ------------------------------------------------------------------------------

    def _run_model(self, run: Run):
        if run.id not in self._loaded:  # a fresh base model with the run's adapter merged, as served
            self._loaded[run.id] = load_run_model(run, merged=True)
        return self._loaded[run.id]

    def _draw_summary(self, names: list[str]) -> None:
        summary = self.result.summary.loc[names]
        timed = {c: label for c, label in LATENCY.items() if c in summary.columns}
        scores = [c for c in summary.columns if f"{c}_low" in summary.columns and c not in timed]
        minutes, kinds = [], []
        for name in names:
            if name in self.runs:
                cost = training_cost(self.runs[name])
                minutes.append((cost["seconds"] or 0) / 60)
                kinds.append(f"{self.runs[name].config.get('kind', 'run')}, {cost['steps']} steps")
            else:
                minutes.append(0.0)
                kinds.append("prompt only")
        fig = make_subplots(rows=2, cols=2, subplot_titles=(
            "score (bars: 95% CI)", "median latency per request (s, bars: 95% CI)", "tokens per request",
            "training minutes"))
        for m in scores:
            fig.add_bar(x=names, y=summary[m], name=m, row=1, col=1, error_y=_interval(summary, m))
        for column, label in timed.items():  # batched (throughput), and one at a time (what a user waits)
            fig.add_bar(x=names, y=summary[column], name=label, row=1, col=2, error_y=_interval(summary, column))
        fig.add_bar(x=names, y=summary["prompt_tokens"], name="prompt tokens", row=2, col=1)
        fig.add_bar(x=names, y=summary["new_tokens"], name="new tokens", row=2, col=1)
        fig.add_bar(x=names, y=minutes, name="training minutes", row=2, col=2)
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout = fig.layout
        self.figure.add_traces(list(fig.data))
        table = pd.DataFrame({"training": kinds, "training minutes": minutes}, index=names)
        table = table.join(summary[[*scores, *timed, "prompt_tokens", "new_tokens"]])
        # Paired on the same rows: is each variant's difference from the first one more than noise?
        paired = [str(self.result.compare(name, names[0])) for name in names[1:]]
        timing = self.result.timing  # one phase of all the variants; None: not timed together
        if timing is not None:  # paired on the same batches of the same rounds, in words
            ways = ["batched", "alone"] if timing.alone else ["batched"]
            paired += [_latency_words(timing.difference(name, names[0], way)) for name in names[1:] for way in ways]
        notes = [f"timing: {note}" for note in timing.notes()] if timing is not None else []
        self._summary.value = _html.table(table) + "".join(_html.note(line) for line in [*paired, *notes])
        self._show_verdict()

    def _show_verdict(self) -> None:
        """The verdict on the compared variants (none without a prompt and a run among them): the
        rows it would take to decide, the strongest prompt of those tried, and the judge and the
        flexibility where measured, in its lines."""
        names = self.result.variants
        prompts, tuned = [n for n in names if n in self.templates], {n: self.runs[n] for n in names if n in self.runs}
        self.advice = (advise(self.result, prompts, tuned, requests=self.requests, flexibility=self._flexibility,
                              judge=self.judge, labels=self.labels or None) if prompts and tuned else None)
        self._verdict.value = ("<h5>Verdict</h5>" + self.advice._repr_html_()) if self.advice else ""

    def _draw_table(self) -> None:
        names = self.result.variants
        first = self.result.metrics[0]  # the headline marks each answer: right/wrong, or its score
        outputs = {name: self.result.outputs(name) for name in names}
        scores = {name: list(self.result.column(name, first)) for name in names}
        notes = {name: self.result.notes(name, first) for name in names}  # a test's verdict, for code
        graded = any(0 < s < 1 for values in scores.values() for s in values)
        cells = [w.HTML(f"<b>{_html.esc(h)}</b>") for h in ["input", "reference", *names]]
        self._thumbs.clear()
        start = self.page * self.page_size
        for i in self.visible_rows[start:start + self.page_size]:
            row = self.result.table.iloc[i]
            history = row["history"] if "history" in row.index else ""  # a conversation: its earlier turns
            cells += [w.HTML(_html.turn(row["input"], history)), w.HTML(_html.folded(row["reference"]))]
            for name in names:
                mark = f"{scores[name][i]:.2f}" if graded else ("✓" if scores[name][i] >= 1 else "✗")
                up, down = w.Button(description="👍", layout={"width": "3em"}), \
                    w.Button(description="👎", layout={"width": "3em"})
                up.on_click(lambda _, i=i, name=name: self.rate(i, name, None if self._ratings.get((i, name)) else True))
                down.on_click(lambda _, i=i, name=name: self.rate(
                    i, name, None if self._ratings.get((i, name)) is False else False))
                self._thumbs[(i, name)] = (up, down)
                self._style_thumbs(i, name)
                why = f" {_html.esc(notes[name][i])}" if notes[name][i] else ""
                cells.append(w.VBox([w.HTML(f"{mark}{why} {_html.folded(outputs[name][i])}"), w.HBox([up, down])]))
        self._grid.children = cells
        self._grid.layout = {"grid_template_columns": f"repeat({2 + len(names)}, minmax(10em, 1fr))",
                             "max_height": "40em", "overflow": "auto"}

    def _style_thumbs(self, i: int, name: str) -> None:
        up, down = self._thumbs[(i, name)]
        rating = self._ratings.get((i, name))
        up.button_style = "success" if rating is True else ""
        down.button_style = "danger" if rating is False else ""
