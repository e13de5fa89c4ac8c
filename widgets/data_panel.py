"""DataPanel: choose data, map its columns, read the validation report, split it, hand it on.

>>> panel = DataPanel(tokenizer=tokenizer, source="support_routing", max_length=256)  # doctest: +SKIP
>>> panel                                          # shows the panel  # doctest: +SKIP
>>> splits = panel.use_this_data(test_size=0.2, seed=0, stratify=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import datasets
import ipywidgets as w
import plotly.graph_objects as go

from ftkit import tasks
from ftkit.data import examples
from ftkit.data.canonical import DataError, DataReport, group_column, render_example, split
from ftkit.data.report import overlap_note
from ftkit.data.sources import FILE_FORMATS
from ftkit.widgets import _html
from ftkit.widgets._ui import button, guarded

# The fields a mapping may name, in the order the dropdowns show them.
MAPPING_FIELDS = ("prompt", "completion", "chosen", "rejected", "messages", "input", "system", "label")
PREVIEW_ROWS = 3


class DataPanel(w.VBox):
    """Load a dataset (built-in example, path or upload), check it and split it.

    ``source``: an example name (see ``ftkit.data.examples.names()``), a file path, a DataFrame, a
    ``datasets.Dataset``, a list of dicts, or None to start empty. ``tokenizer`` and
    ``max_length`` add token-length statistics and the histogram (``max_length`` None: the data's
    task's, e.g. 768 for code, as training will use it). After
    :meth:`use_this_data`, ``panel.splits`` holds ``{"train": Dataset, "test": Dataset}`` for the
    next panel.
    """

    def __init__(self, tokenizer=None, source=None, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.source = None
        self.example: str | None = None  # the built-in example loaded, if any
        self.mapping: dict[str, str] | None = None
        self.report: DataReport | None = None
        self.splits: dict[str, datasets.Dataset] | None = None
        self.leaks: list[int] = []  # held-out rows sharing an input (prompt, passage...) with train, after use_this_data
        self._uploads = tempfile.TemporaryDirectory(prefix="ftkit-upload-")

        self._messages = w.HTML()
        self._example = w.Dropdown(options=examples.names(), description="example")
        self._path = w.Text(placeholder="data/tickets.csv", description="path")
        self._upload = w.FileUpload(accept=",".join(sorted(FILE_FORMATS)), multiple=False,
                                    description="Upload")
        self._upload.observe(guarded(self.load_upload, self._messages), names="value")
        sources = w.VBox([
            w.HBox([self._example, button("Load example", lambda: self.use_example(self._example.value),
                                          self._messages)]),
            w.HBox([self._path, button("Load file", self.load_path, self._messages)]),
            self._upload,
        ])
        self._dropdowns = {f: w.Dropdown(options=[("-", "")], description=f, layout={"width": "16em"})
                           for f in MAPPING_FIELDS}
        mapping = w.VBox([
            w.GridBox(list(self._dropdowns.values()), layout={"grid_template_columns": "repeat(4, 17em)"}),
            w.HBox([button("Apply mapping", self._apply_mapping, self._messages),
                    button("Detect", lambda: self.set_mapping(None), self._messages,
                           tooltip="Detect the mapping from the column names")]),
        ])
        self._task_length = max_length is None  # follow the task of the data loaded, until a length is typed
        self._setting_length = False
        self._max_length = w.IntText(value=max_length or 256, description="max_length",
                                     tooltip="Longest example in tokens; training refuses to start on a longer "
                                             "one (its answer would be cut): raise it or drop the rows")
        self._max_length.observe(guarded(self._length_changed, self._messages), names="value")
        self._report_html = w.HTML()
        self._preview = w.HTML()
        self.figure = go.FigureWidget(layout=dict(
            height=260, margin=dict(l=40, r=10, t=30, b=40), title="tokens per example",
            xaxis_title="tokens", yaxis_title="examples", showlegend=False))
        self.figure.add_histogram(x=[], name="tokens per example")
        self._test_size = w.FloatText(value=0.2, step=0.05, description="test size",
                                      tooltip="A fraction of the rows (0.2), or a number of rows (100)")
        self._seed = w.IntText(value=0, description="seed")
        self._stratify = w.Checkbox(value=True, description="stratify by label", indent=False)
        self._split_html = w.HTML()
        splitting = w.VBox([
            w.HBox([self._test_size, self._seed, self._stratify]),
            w.HBox([button("Use this data", self.use_this_data, self._messages, style="success",
                           css="ftkit-use-data"), self._split_html]),
        ])
        super().__init__(children=[
            w.HTML("<h4>Data</h4>"), sources, w.HTML("<b>Columns</b>"), mapping,
            w.HTML("<b>Check</b>"), self._max_length, self._report_html,
            w.HTML("<b>What the model sees</b> (first rows)"), self._preview, self.figure,
            w.HTML("<b>Split</b>"), splitting, self._messages,
        ])
        self.add_class("ftkit-data-panel")
        if source is not None:
            if isinstance(source, str) and source in examples.names():
                self.use_example(source)
            else:
                self.load(source)

    # --- actions ------------------------------------------------------------------------------

    def load(self, source, mapping: dict[str, str] | None = None, *, _example: str | None = None) -> DataReport:
        """Read and check any source ``ftkit.load_data`` accepts; the mapping is detected unless
        given. Returns the report; its errors are shown in the panel."""
        self.source, self.mapping, self.splits, self.example = source, mapping, None, _example
        self._split_html.value = ""
        return self._check()

    def use_example(self, name: str) -> DataReport:
        """Load a built-in example by name."""
        self._example.value = name
        return self.load(examples.path(name), _example=name)

    @property
    def task(self):
        """The task the data is for (:mod:`ftkit.tasks`): a built-in example's own, with its house
        style; for other data, what its rows look like. Hand it to PromptLab, TrainPanel and
        ComparePanel as ``task=``."""
        if self.report is None or self.report.dataset is None:
            raise DataError("load data first")
        rows = self.report.dataset
        return (self._example_task() or tasks.infer(rows)[0]).for_rows(rows)  # a QA prompt reads the passage

    def _example_task(self):
        if self.example is not None and examples.info(self.example).task in tasks.TASKS:
            return tasks.get(examples.info(self.example).task).on(self.example)
        return None

    def load_path(self, path: str | os.PathLike | None = None) -> DataReport:
        """Load a file (CSV, TSV, JSON, JSONL, Parquet); without ``path``, the one typed in the box."""
        if path is not None:
            self._path.value = str(path)
        if not self._path.value.strip():
            raise DataError("type the path of a file first")
        return self.load(self._path.value.strip())

    def load_upload(self) -> DataReport | None:
        """Load the file chosen with the Upload button (None when no file is chosen)."""
        if not self._upload.value:
            return None
        upload = self._upload.value[0]
        target = Path(self._uploads.name) / Path(upload["name"]).name  # never a path outside
        target.write_bytes(bytes(upload["content"]))
        self._path.value = ""
        return self.load(target)

    def set_mapping(self, mapping: dict[str, str] | None) -> DataReport:
        """Map canonical fields to columns, e.g. ``{"prompt": "text", "completion": "label"}``;
        None detects the mapping again. A wrong mapping shows its error in the report."""
        if self.source is None:
            raise DataError("load data first")
        return self.load(self.source, dict(mapping) if mapping else None)

    def use_this_data(self, test_size: float | None = None, seed: int | None = None,
                      stratify: bool | None = None, group_by: str | None = None) -> dict[str, datasets.Dataset]:
        """Split the checked data into ``{"train": ..., "test": ...}`` and keep it as ``splits``.

        Arguments left out come from the panel's controls. ``test_size`` is a fraction of the rows
        or, from 1 up, a number of rows; ``stratify`` keeps the label proportions in both splits;
        ``group_by`` keeps the rows sharing that column on one side (default: the ``context``
        passage when the rows carry one, see :func:`ftkit.data.canonical.group_column`; ``""``: none).
        """
        if self.report is None or self.report.dataset is None:
            problems = "; ".join(self.report.errors) if self.report else "no data loaded"
            raise DataError(f"the data cannot be used yet: {problems}")
        for control, value in ((self._test_size, test_size), (self._seed, seed), (self._stratify, stratify)):
            if value is not None:
                control.value = value
        # Questions about one passage stay on one side (no held-out answer read in training), as ftkit run does.
        group = group_column(self.report.dataset, group_by)
        by = "label" if self._stratify.value and "label" in self.report.dataset.column_names and not group else None
        size = self._test_size.value
        parts = split(self.report.dataset, test_size=int(size) if size >= 1 else size, seed=self._seed.value,
                      stratify_by=by, group_by=group)
        self.splits = {"train": parts["train"], "test": parts["test"]}
        self._split_settings = {"test_size": int(size) if size >= 1 else size, "seed": self._seed.value,
                                "stratify_by": by, "group_by": group}
        how = " (stratified by label)" if by else f" (grouped by {group})" if group else ""
        self.leaks, leakage = overlap_note(self.splits["train"], self.splits["test"])
        self._split_html.value = _html.note(
            f"train: {len(self.splits['train'])} rows, test: {len(self.splits['test'])} rows{how}. "
            f"Leakage check: {leakage}")
        self._messages.value = ""
        return self.splits

    @property
    def data_record(self) -> dict | None:
        """Where the split rows came from and which were held out (see
        :func:`ftkit.data.provenance.data_record`), for ``TrainPanel(..., data_record=...)`` or
        ``train_sft(..., data_record=...)`` to keep with a run; None before :meth:`use_this_data`."""
        from ftkit.data.provenance import data_record

        if self.splits is None:
            return None
        return data_record(self.example or self.source, self.mapping, data=self.report.dataset,
                           used_mapping=self.report.mapping, test=self.splits["test"], **self._split_settings)

    # --- display ------------------------------------------------------------------------------

    def _apply_mapping(self) -> None:
        self.set_mapping({f: d.value for f, d in self._dropdowns.items() if d.value})

    def _recheck(self) -> None:
        if self.source is not None:
            self._check()

    def _length_changed(self) -> None:
        if not self._setting_length:  # the person chose a length: it stays, whatever data comes next
            self._task_length = False
        self._recheck()

    def _check(self) -> DataReport:
        max_length = self._max_length.value
        # Lengths are counted with the task's prompt around each row (inferred for other data).
        self.report = report = tasks.check_data(self.source, self.mapping, tokenizer=self.tokenizer,
                                                max_length=max_length, task=self._example_task())
        if self._task_length and report.task and tasks.get(report.task).max_length != max_length:
            self._setting_length = True  # checks again, with the task's length
            try:
                self._max_length.value = tasks.get(report.task).max_length
            finally:
                self._setting_length = False
            return self.report
        options = [("-", "")] + [(c, c) for c in report.columns]
        for f, dropdown in self._dropdowns.items():
            dropdown.options = options
            dropdown.value = report.mapping.get(f, "") if report.mapping.get(f) in report.columns else ""
        self._stratify.disabled = report.dataset is None or "label" not in report.dataset.column_names
        self._report_html.value = report._repr_html_()  # the report escapes every value itself
        self._messages.value = ""
        rows = report.dataset.select(range(min(PREVIEW_ROWS, len(report.dataset)))).to_list() \
            if report.dataset is not None else []
        self._preview.value = "".join(_html.pre(render_example(r, self.tokenizer)) for r in rows)
        lengths = report.lengths if report.dataset is not None and report.lengths else []
        with self.figure.batch_update():
            self.figure.data[0].x = lengths
            self.figure.layout.shapes, self.figure.layout.annotations = (), ()
        if lengths:  # add_vline cannot run inside batch_update (it reads the axes it spans)
            self.figure.add_vline(x=max_length, line_dash="dash", line_color="#b00020",
                                  annotation_text=f"max_length {max_length}")
        return report
