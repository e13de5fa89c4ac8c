"""TrainPanel: SFT or DPO with a settings form, Start/Stop, progress and live charts.

The module is over 400 lines because one panel holds both methods' runs, their live charts, the
learning curve and the table of answers sampled during training, each a few thin handlers over
the core's events; split, each piece would reach into the others' widgets.

>>> panel = TrainPanel(model, tokenizer, train=splits["train"], eval=splits["test"], template=template)  # doctest: +SKIP
>>> panel.set(max_steps=40); panel.start()      # trains in a background thread  # doctest: +SKIP
>>> run = panel.wait()                          # the recorded ftkit.runs.Run  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import ipywidgets as w
import plotly.graph_objects as go
import traitlets
from plotly.subplots import make_subplots

from ftkit import tasks
from ftkit.evaluation import metrics as M
from ftkit.training import dpo
from ftkit.training import sft
from ftkit.data.canonical import label_set
from ftkit.training.dpo import DPOSettings, to_trl_pairs, train_dpo
from ftkit.training.events import EventBus, StopFlag
from ftkit.models.device import model_info
from ftkit.models.tuned import run_template
from ftkit.prompts import PromptTemplate, zero_shot
from ftkit.training.curves import read_curves, training_cost
from ftkit.runs import Run, outcome
from ftkit.training.sft import SFTSettings, to_trl_rows, train_sft
from ftkit.training.samples import samples_html
from ftkit.training.settings import Preflight, device_defaults, sampling_interval
from ftkit.training.trainer import hide_known_noise
from ftkit.widgets import _html
from ftkit.widgets._form import Form
from ftkit.widgets._ui import button

# Redrawing a chart costs the browser far more than receiving the numbers; at most twice a
# second keeps a fast run from stuttering. The last update is always drawn.
THROTTLE_S = 0.5
# Training rows of a learning curve (None: all), nested: each subset holds the smaller ones.
CURVE_SIZES = (25, 50, 100, 200, None)
# Chart panels: (title, [(trace name, event, key)]).
SFT_CHARTS = [
    ("loss", [("train loss", "log", "loss"), ("eval loss", "eval", "eval_loss")]),
    ("learning rate", [("learning rate", "log", "learning_rate")]),
    ("grad norm", [("grad norm", "log", "grad_norm")]),
]
DPO_CHARTS = SFT_CHARTS[:1] + [
    ("reward margin (chosen - rejected)", [("reward margin", "log", "rewards/margins")]),
    ("reward accuracy", [("reward accuracy", "log", "rewards/accuracies")]),
] + SFT_CHARTS[1:]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TrainPanel(w.VBox):
    """Fine-tune ``model`` on ``train`` with SFT (``method="sft"``) or DPO (``method="dpo"``);
    ``eval`` rows give SFT an evaluation loss (DPO takes none), and a few of them are answered
    as it trains: a table of their answers at step 0 and about 8 times a run (``sample_every``,
    set from the planned steps at each Start unless you changed it; 0 turns it off).
    ``samples``: the held-out rows to answer instead (default: ``eval``), e.g. the test split
    when no evaluation loss is wanted. ``data_record``: where the rows came from and which were held
    out (:func:`ftkit.data.provenance.data_record`), kept with each run it starts, so the run's
    held-out rows can be made again (``provenance.held_out(run)``, the sidebar's *Compare selected*).

    ``template`` renders the prompts (use the one you will evaluate and serve with; for DPO from
    an SFT run it defaults to that run's template; with a ``task``, to the task's zero-shot prompt,
    whose ``max_length`` the form also starts from). ``from_run``: the SFT run whose adapter DPO
    continues. Training runs in a background thread so the notebook stays responsive; its events
    arrive on ``panel.bus`` (subscribe to it for your own needs). Training leaves ``model`` as it
    was (the trained model is ``panel.run.model``), so each Start is a new run from the same base
    model, with the settings the form holds then.
    """

    status = traitlets.Unicode("idle", help="idle, running, stopping, completed, stopped or failed").tag(sync=True)

    def __init__(self, model, tokenizer, train, eval=None, template: PromptTemplate | None = None,
                 method: str = "sft", from_run: Run | None = None, runs_root=None, task=None, samples=None,
                 data_record: dict | None = None):
        if method not in ("sft", "dpo"):
            raise ValueError(f"method must be 'sft' or 'dpo', not {method!r}")
        if from_run is not None and method != "dpo":
            raise ValueError("from_run is for DPO (the SFT run whose adapter it continues); "
                             "an SFT run starts from the model you pass")
        task = tasks.resolve(task).for_rows(train) if task is not None else None
        self.task = task
        if template is None:
            template = run_template(from_run) if from_run is not None else \
                task.template("zero-shot", labels=label_set(train)) if task is not None else zero_shot()
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.train_data, self.eval_data = train, eval
        self.sample_data = samples if samples is not None else eval  # the rows answered as it trains
        self.data_record = data_record
        self.method, self.from_run, self.runs_root = method, from_run, runs_root
        self.run: Run | None = None
        self.error: BaseException | None = None
        self.bus = EventBus()
        self._stop = StopFlag()
        self._thread: threading.Thread | None = None
        self._logs: list[dict] = []
        self._evals: list[dict] = []
        self._last_draw = 0.0
        self._progress_text = ""
        self._samples: list[dict] = []

        device = model_info(model).device
        cls = SFTSettings if method == "sft" else DPOSettings
        defaults = device_defaults(device.device)
        # The task's declared length (code and chat rows are long), inferred from the rows when not given.
        sized_by = task if task is not None else tasks.resolve(None, train if method == "sft" else ())
        if sized_by.max_length != cls().max_length:
            defaults["max_length"] = sized_by.max_length
        # Watching answers change costs a generate call per sampling: about 8 a run keep it under 10%
        # of the training time on a CPU (benchmarks/train_sampling.py). They need held-out rows.
        self._auto_every = None  # the sample_every the panel chose, until the form says otherwise
        sampling = {}
        if method == "sft" and self.sample_data is not None:
            self._auto_every = sampling_interval(cls(**defaults), len(train))
            sampling = {"sample_every": self._auto_every}
        self.form = Form(cls(**defaults, **sampling))
        self._messages = w.HTML()
        self._preflight_html = w.HTML()
        self._start = button("Start", self.start, self._messages, css="ftkit-start", style="success")
        self._stop_button = button("Stop", self.stop, self._messages, css="ftkit-stop", style="danger",
                                   tooltip="End after the current step, keeping what was learned")
        self._stop_button.disabled = True
        self._resume = button("Resume", self.resume, self._messages, css="ftkit-resume",
                              tooltip="Continue the stopped or interrupted run from its last checkpoint")
        self._progress = w.IntProgress(value=0, min=0, max=1, description="steps")
        self._progress_label = w.HTML()
        self._reading = w.HTML()
        self._charts = DPO_CHARTS if method == "dpo" else SFT_CHARTS
        self.figure = self._make_figure()
        chart = w.Box([self.figure])
        chart.add_class("ftkit-train-chart")
        self.curve = None  # the last learning curve (ftkit.evaluation.experiments.LearningCurve)
        self._curve_points: list[dict] = []
        self._best_prompt = None
        self.curve_figure = go.FigureWidget(layout=dict(height=320, margin=dict(l=40, r=10, t=40, b=30)))
        self._curve_box = w.Box([self.curve_figure], layout={"display": "none"})
        self._samples_html = w.HTML()
        self._samples_html.add_class("ftkit-samples")
        curve_button = button("How much data?", lambda: self.learning_curve(background=True), self._messages,
                              css="ftkit-curve", tooltip="SFT on 25, 50, 100, 200 and all training rows, each "
                              "with these settings, each scored on the evaluation rows")
        changed = ", ".join(f"{k}={v}" for k, v in defaults.items())
        super().__init__(children=[
            w.HTML(f"<h4>Train ({method.upper()})</h4>"),
            w.HTML(_html.note(f"device: {device}" + (f"; defaults for it: {changed}" if changed else ""))),
            self.form,
            w.HBox([button("Check", self.preflight, self._messages, tooltip="Run the pre-flight check"),
                    self._start, self._stop_button, self._resume, *([curve_button] if method == "sft" else [])]),
            self._preflight_html, w.HBox([self._progress, self._progress_label]), self._reading, chart,
            self._samples_html, self._curve_box, self._messages,
        ])
        self.add_class("ftkit-train-panel")
        for name, handler in (("start", self._on_start), ("log", self._on_log), ("eval", self._on_eval),
                              ("end", self._on_end), ("curve", self._on_curve), ("sample", self._on_sample)):
            self.bus.on(name, handler)

    # --- actions --------------------------------------------------------------------------------

    def set(self, **fields) -> None:
        """Set form fields by settings name, e.g. ``set(max_steps=5, lora={"r": 8})``."""
        self.form.set(**fields)

    @property
    def settings(self) -> SFTSettings | DPOSettings:
        """The settings the form holds."""
        return self.form.value()

    def preflight(self) -> str:
        """Check the data against the settings and show one example as the trainer sees it."""
        text, _ = self._check(self.settings)
        return text

    def start(self) -> None:
        """Check, then train in a background thread; does nothing while a run is going."""
        self._begin(self.settings)

    def resume(self, run: Run | None = None) -> None:
        """Continue a stopped, interrupted or failed run (default: this panel's last one) from its
        last checkpoint, with the settings it started with, in the same run record: the adapter,
        optimizer state, learning-rate schedule and data order go on as if it had not stopped."""
        run = run or self.run
        if run is None:
            raise ValueError("no run to resume: start one, or pass run=ftkit.runs.load_run(run_id)")
        status = run.status.get("status")
        if status not in ("stopped", "interrupted", "failed"):
            raise ValueError(f"run {run.id} is {status}; only a stopped, interrupted or failed run resumes")
        if run.config.get("kind") != self.method:
            raise ValueError(f"run {run.id} is a {run.config.get('kind')} run; this panel trains {self.method}")
        self.form.set(**run.config["settings"])
        self._begin(self.settings, resume=run)

    def learning_curve(self, sizes=CURVE_SIZES, best_prompt: tuple[str, float, float, float] | None = None,
                       background: bool = False):
        """How much data does fine-tuning need? SFT on nested subsets of the training rows
        (``sizes``; None: all), each with the settings the form holds (its time budget included),
        each scored on the evaluation rows, drawn as it goes against ``best_prompt`` (``(name,
        score, low, high)``, e.g. from PromptLab or an evaluation) when given. Returns the
        :class:`~ftkit.evaluation.experiments.LearningCurve` (``background=True``: trains in the panel's
        thread like Start; then ``wait()`` and read ``panel.curve``). Stop ends it early."""
        if self.method != "sft":
            raise ValueError("a learning curve trains SFT; this panel trains DPO")
        if self.eval_data is None:
            raise ValueError("a learning curve scores each size on held-out rows: pass eval=... to the panel")
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("training is running; wait for it (or stop it) first")
        self._best_prompt, self._curve_points, self.curve, self.error = best_prompt, [], None, None
        self._curve_box.layout.display = None
        self._draw_curve()
        self._stop.clear()
        if not background:
            return self._curve(sizes)
        self.status = "running"
        self._start.disabled, self._stop_button.disabled = True, False
        hide_known_noise()  # here, on the kernel's thread: the training thread leaves warning filters alone
        self._thread = threading.Thread(target=self._curve, args=(sizes,), name="ftkit-curve", daemon=True)
        self._thread.start()
        return None

    def _curve(self, sizes):
        from ftkit.evaluation.experiments import learning_curve

        labels = label_set(self.eval_data) if self.task is None or self.task.name == "classification" else None
        metrics = M.resolve(self.task.metrics) if self.task is not None else ("exact_match",)
        # No trainer bar, as in _train: learning_curve takes no progress argument, and disable_tqdm
        # does the same there (ftkit.training.trainer.show_progress), with no log dicts printed instead.
        # Nor sampled answers: a learning curve trains several runs and draws their scores instead.
        settings = replace(self.settings, trl={"disable_tqdm": True, **self.settings.trl}, sample_every=0)
        try:
            self.curve = learning_curve(self.model, self.tokenizer, self.train_data, self.eval_data, sizes=sizes,
                                        template=self.template, settings=settings, metrics=metrics,
                                        labels=labels or None, runs_root=self.runs_root, bus=self.bus,
                                        stop=self._stop)
            self.status = "completed"
            self._messages.value = _html.note(f"learning curve: {len(self.curve.table)} sizes trained and scored")
        except Exception as err:  # noqa: BLE001 - shown in the panel
            self._fail(err, "The learning curve did not run to the end")
        finally:
            self._draw_curve()
            self._start.disabled, self._stop_button.disabled = False, True
        return self.curve

    def stop(self) -> None:
        """End the run after the current step; the adapter and a checkpoint are saved."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self.status = "stopping"
            self._stop_button.disabled = True

    def _begin(self, settings, resume: Run | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.run, self.error = None, None
        self._messages.value = ""
        try:
            _, problems = self._check(settings)
            if problems:
                raise ValueError("pre-flight check failed:\n" + "\n".join(problems))
        except ValueError as err:
            self._fail(err, "Training did not start")
            return
        self._reset_charts()
        if resume is not None:  # the curves so far, up to the checkpoint training goes on from
            upto = resume.resume_step()
            self._logs = [e for e in resume.events("log") if e["step"] <= upto]
            self._evals = [e for e in resume.events("eval") if e["step"] <= upto]
            self._samples = [e for e in resume.events("sample") if e["step"] <= upto]
            self._draw_samples()
        elif self.method == "sft":
            settings = self._sampling(settings)
        self._stop.clear()
        self.status = "running"
        self._start.disabled, self._stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._train, args=(settings, resume), name="ftkit-train",
                                        daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> Run | None:
        """Wait for the run to end (at most ``timeout`` seconds); return it (None if it failed:
        the error is in the panel and in ``panel.error``)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.run

    # --- training thread ------------------------------------------------------------------------

    def _train(self, settings, resume: Run | None = None) -> None:
        # progress=False: the panel's own progress bar shows the steps; the trainer's text bar,
        # printed from this thread, would land in whichever cell is running at the time.
        try:
            if self.method == "sft":
                self.run = train_sft(self.model, self.tokenizer, self.train_data, self.eval_data,
                                     template=self.template, config=settings, bus=self.bus, stop=self._stop,
                                     runs_root=self.runs_root, resume=resume, progress=False,
                                     sample_from=self.sample_data, data_record=self.data_record)
            else:
                self.run = train_dpo(self.model, self.tokenizer, self.train_data, template=self.template,
                                     config=settings, from_run=self.from_run, bus=self.bus, stop=self._stop,
                                     runs_root=self.runs_root, resume=resume, progress=False,
                                     data_record=self.data_record)
            cost = training_cost(self.run)
            self.status = self.run.status["status"]  # "completed" after a time budget too
            tokens = f", {cost['tokens']:,} tokens" if cost["tokens"] else ""
            # outcome() says why a run ended early: "stopped by the time budget at step 20 of 40".
            self._messages.value = _html.note(
                f"{outcome(self.run.status)} in {_duration(cost['seconds'])}{tokens}; run {self.run.id}")
        except Exception as err:  # noqa: BLE001 - shown in the panel; the run records it too
            self._fail(err, "Training did not run to the end")
        finally:
            self._draw(force=True)
            self._start.disabled, self._stop_button.disabled = False, True

    def _sampling(self, settings: SFTSettings) -> SFTSettings:
        """``settings`` with ``sample_every`` for about 8 samplings over the steps they plan now,
        unless the form's value is one the user chose (shown in the form too)."""
        if self._auto_every is None or settings.sample_every != self._auto_every:
            return settings
        self._auto_every = sampling_interval(settings, len(self.train_data))
        if self._auto_every != settings.sample_every:
            self.form.set(sample_every=self._auto_every)
        return replace(settings, sample_every=self._auto_every)

    def _fail(self, err: BaseException, what: str) -> None:
        self.error, self.status = err, "failed"
        self._messages.value = _html.error(f"{what}: {str(err) or type(err).__name__}", err)

    def _check(self, settings) -> tuple[str, list[str]]:
        if self.method == "sft":
            check: Preflight = sft.preflight(self.tokenizer, to_trl_rows(self.train_data, self.template, self.tokenizer),
                                             settings.max_length)
        else:  # to_trl_pairs raises for rows that are not pairs
            check = dpo.preflight(self.tokenizer, to_trl_pairs(self.train_data, self.template), self.from_run,
                                  settings.max_length)
        # The core renders the example with the trained tokens highlighted, every piece escaped.
        self._preflight_html.value = "<b>Pre-flight check</b>" + check._repr_html_()
        return str(check), check.problems

    # --- charts ---------------------------------------------------------------------------------

    def _make_figure(self) -> go.FigureWidget:
        cols = 3
        rows = -(-len(self._charts) // cols)
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=[title for title, _ in self._charts])
        for i, (_, traces) in enumerate(self._charts):
            for name, _, _ in traces:
                fig.add_scatter(x=[], y=[], name=name, mode="lines+markers", row=i // cols + 1, col=i % cols + 1)
        fig.update_layout(height=280 * rows, margin=dict(l=40, r=10, t=40, b=30),
                          legend=dict(orientation="h", y=-0.15))
        fig.update_xaxes(title_text="step", title_standoff=2)
        # A constant learning rate would sit on an axis from -1 to 1 and read as 0: anchor the
        # axis at zero, so it spans 0 to the rate (exponent ticks when the rate is tiny).
        for i, (title, _) in enumerate(self._charts):
            if title == "learning rate":
                fig.update_yaxes(rangemode="tozero", exponentformat="e", row=i // cols + 1, col=i % cols + 1)
        return go.FigureWidget(fig)

    def _reset_charts(self) -> None:
        self._logs, self._evals, self._samples = [], [], []
        self._draw_samples()
        self._progress.value, self._progress_text = 0, ""
        self._draw(force=True)

    def _on_start(self, event: dict) -> None:
        self._progress.max = max(int(event.get("max_steps") or 1), 1)

    def _on_log(self, event: dict) -> None:
        self._logs.append(event)
        eta = f", about {_duration(event['eta_s'])} left" if event.get("eta_s") is not None else ""
        self._progress_text = f"step {event['step']} of {self._progress.max}{eta}"
        self._draw()

    def _on_eval(self, event: dict) -> None:
        self._evals.append(event)
        self._draw()

    def _on_curve(self, event: dict) -> None:
        self._curve_points.append(event)
        self._draw_curve()

    def _draw_curve(self) -> None:
        import pandas as pd

        from ftkit.evaluation.experiments import LearningCurve

        points = pd.DataFrame(self._curve_points, columns=["rows", "score", "low", "high", "metric"])
        metric = points["metric"].iloc[0] if len(points) else "score"
        fig = LearningCurve(table=points, metric=metric, runs=[]).figure(best_prompt=self._best_prompt)
        with self.curve_figure.batch_update():
            self.curve_figure.data = ()
            self.curve_figure.layout = fig.layout
        self.curve_figure.add_traces(list(fig.data))

    def _on_sample(self, event: dict) -> None:
        # A handful a run, each after a generate call: drawn at once, not throttled.
        self._samples.append(event)
        self._draw_samples()

    def _draw_samples(self) -> None:
        table = samples_html(self._samples)  # built and escaped by the core: answers are model output
        self._samples_html.value = ("<b>Answers to held-out rows as it trains</b> <span style='color:#888'>"
                                    "(yellow: changed since the sampling before; \u2713 matches the reference)"
                                    f"</span>{table}") if table else ""

    def _on_end(self, event: dict) -> None:
        self._progress_text = outcome(event)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < THROTTLE_S:
            return
        self._last_draw = now
        events = {"log": self._logs, "eval": self._evals}
        traces = {name: (kind, key) for _, chart in self._charts for name, kind, key in chart}
        with self.figure.batch_update():
            for trace in self.figure.data:
                kind, key = traces[trace.name]
                points = [(e["step"], e[key]) for e in events[kind] if e.get(key) is not None]
                trace.x, trace.y = [p[0] for p in points], [p[1] for p in points]
        if self._logs:
            self._progress.value = min(self._logs[-1]["step"], self._progress.max)
        self._progress_label.value = _html.note(self._progress_text)
        self._reading.value = _html.note(read_curves(self._logs, self._evals)) if self._logs else ""
