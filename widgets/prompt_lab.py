"""PromptLab: edit a prompt, see exactly what the model reads, try it, measure it, keep it.

>>> lab = PromptLab(model, tokenizer, train=splits["train"], eval=splits["test"])  # doctest: +SKIP
>>> lab.set_shots(8, strategy="balanced"); lab.run_eval().summary               # doctest: +SKIP
>>> lab.save_variant("8-shot")                                                   # doctest: +SKIP

A hosted model is prompted the same way: ``PromptLab(Endpoint(model="gpt-4o-mini"), None, ...)``
(see :class:`ftkit.generation.endpoint.Endpoint`); the lab then shows the messages it sends, and the token
counts come from the server's answers.
"""

from __future__ import annotations

import dataclasses

import ipywidgets as w

from ftkit.data.canonical import as_rows, chat_turns, label_set
from ftkit.evaluation.evaluate import EvalResult, Variant, conversation_text, evaluate
from ftkit.generation.generate import Generation, generate
from ftkit import tasks
from ftkit.evaluation import metrics as M
from ftkit.prompts import PromptTemplate, select_shots
from ftkit.retrieval import ShotRetriever
from ftkit.widgets import _html
from ftkit.widgets._ui import button, guarded

MAX_SHOTS = 32  # beyond this the prompt outgrows a small model's useful context


class PromptLab(w.VBox):
    """Prompt a model on your data: system prompt, instruction, few-shot examples.

    ``train`` supplies the few-shot examples, ``eval`` the rows to try and measure on (at most
    ``limit`` of them). ``task`` (a name or a :class:`~ftkit.tasks.Task`; default: classification
    for labelled rows, else what :func:`ftkit.tasks.infer` reads from them) gives the starting
    instruction, system prompt, metrics and answer length; for classification the label set
    (default: the labels of ``train``) also adds label accuracy and macro-F1. ``variants`` collects
    the templates saved for ComparePanel. ``model`` may be a hosted
    :class:`~ftkit.generation.endpoint.Endpoint` with ``tokenizer=None``.
    """

    def __init__(self, model, tokenizer, train=None, eval=None, labels=None, limit: int | None = None,
                 metrics=None, max_new_tokens: int | None = None, task=None):
        self.model, self.tokenizer = model, tokenizer
        train, eval = (as_rows(train) if train is not None else []), (as_rows(eval) if eval is not None else [])
        self.task = tasks.resolve(task, train or eval, labels).for_rows(train or eval)  # a QA prompt reads the passage
        # Conversations, turn by turn: each assistant turn answered after the true turns before it.
        self._train, self._eval = chat_turns(train), chat_turns(eval)
        classify = self.task.name == "classification"
        self.labels = list(label_set(self._train) if labels is None else labels) if classify else []
        self.limit = limit
        self.metrics = metrics or M.resolve(self.task.metrics)
        max_new_tokens = max_new_tokens or self.task.max_new_tokens
        self.variants: dict[str, PromptTemplate] = {}
        self.result: EvalResult | None = None

        self._messages = w.HTML()
        self._system = w.Textarea(value=self.task.system or "", description="system",
                                  tooltip=PromptTemplate.__dataclass_fields__["system"].metadata["help"],
                                  placeholder="(empty: the chat template's default)",
                                  layout={"width": "100%", "height": "4em"})
        self._instruction = w.Textarea(
            value=self.task.instruction, description="instruction",
            tooltip=PromptTemplate.__dataclass_fields__["instruction"].metadata["help"],
            layout={"width": "100%", "height": "6em"})
        self._shots = w.IntSlider(value=0, min=0, max=min(MAX_SHOTS, len(self._train)), description="shots",
                                  tooltip="Solved examples from the training split shown before the question",
                                  disabled=not self._train)
        self._strategy = w.Dropdown(options=["balanced", "random", "first", "retrieved"], description="picked",
                                    tooltip="balanced: every label before any repeats; random: seeded; "
                                            "first: the first rows; retrieved: per row, the training rows "
                                            "nearest to its input (BM25)")
        self._retrievers: dict[int, ShotRetriever] = {}  # by k: the index is built once per shot count
        self._seed = w.IntText(value=0, description="seed", layout={"width": "12em"})
        self._index = w.BoundedIntText(value=0, min=0, max=max(len(self._rows()) - 1, 0), description="example",
                                       tooltip="Which evaluation row to render and try", layout={"width": "14em"})
        self._max_new = w.IntText(value=max_new_tokens, description="max new tokens", layout={"width": "14em"},
                                  style={"description_width": "8em"})
        self._rendered = w.HTML()
        self._tokens = w.HTML()
        self._try_html = w.HTML()
        self._progress = w.Output()  # generation's tqdm.auto bar renders here
        self._summary = w.HTML()
        self._outputs = w.HTML()
        self._variant_name = w.Text(placeholder="name, e.g. 8-shot", description="variant")
        self._variants_html = w.HTML()
        refresh = guarded(self._refresh, self._messages)
        for control in (self._system, self._instruction, self._shots, self._strategy, self._seed, self._index):
            control.observe(refresh, names="value")
        super().__init__(children=[
            w.HTML("<h4>Prompt lab</h4>"), self._system, self._instruction,
            w.HBox([self._shots, self._strategy, self._seed]),
            w.HBox([self._index, self._max_new]),
            w.HTML("<b>What the model reads</b>"), self._tokens, self._rendered,
            w.HBox([button("Try it", self.try_one, self._messages, css="ftkit-try"),
                    button("Run on evaluation split", self.run_eval, self._messages, style="primary",
                           css="ftkit-run-eval")]),
            self._try_html, self._progress, self._summary, self._outputs,
            w.HBox([self._variant_name, button("Save variant", lambda: self.save_variant(self._variant_name.value),
                                               self._messages, css="ftkit-save-variant")]),
            self._variants_html, self._messages,
        ])
        self.add_class("ftkit-prompt-lab")
        refresh()

    # --- the prompt -----------------------------------------------------------------------------

    def set_system(self, text: str | None) -> None:
        """The system prompt; empty or None leaves it to the chat template."""
        self._system.value = text or ""

    def set_instruction(self, text: str) -> None:
        """The user turn, with ``{prompt}`` (and any row field, or ``{labels}``) as placeholders."""
        self._instruction.value = text

    def set_shots(self, k: int, strategy: str = "balanced", seed: int | None = None) -> None:
        """Show ``k`` solved training examples, picked ``"balanced"``, ``"random"`` or ``"first"``, or
        ``"retrieved"`` per row: the training rows nearest to its input (:mod:`ftkit.retrieval`)."""
        if k > self._shots.max:
            raise ValueError(f"at most {self._shots.max} shots here (training rows: {len(self._train)})")
        self._strategy.value = strategy
        if seed is not None:
            self._seed.value = seed
        self._shots.value = k

    @property
    def template(self) -> PromptTemplate:
        """The prompt the controls describe, as a :class:`~ftkit.prompts.PromptTemplate`."""
        k = self._shots.value
        retrieved = bool(k) and self._strategy.value == "retrieved"
        if retrieved and k not in self._retrievers:
            self._retrievers[k] = ShotRetriever(self._train, k)
        shots = select_shots(self._train, k, self._strategy.value, self._seed.value) if k and not retrieved else []
        name = f"{k}-shot" if k else ("zero-shot + system" if self._system.value.strip() else "zero-shot")
        return PromptTemplate(name=f"retrieved {name}" if retrieved else name, instruction=self._instruction.value,
                              system=self._system.value or None, shots=shots, labels=self.labels,
                              retriever=self._retrievers[k] if retrieved else None)

    def rendered(self, index: int | None = None) -> str:
        """The exact text the model reads for evaluation row ``index`` (default: the chosen one);
        for a hosted model without a tokenizer, the messages sent (its server applies its own
        chat template)."""
        if self.tokenizer is None:
            return conversation_text(self.template.messages(self._row(index)))
        return self.template.render(self._row(index), self.tokenizer)

    def token_count(self, index: int | None = None) -> int | None:
        """Prompt tokens for that row, the chat template's own additions included; None for a
        hosted model without a tokenizer (its server counts them: see :meth:`try_one`)."""
        if self.tokenizer is None:
            return None
        return self.template.token_count(self._row(index), self.tokenizer)

    # --- trying and measuring -------------------------------------------------------------------

    def try_one(self, index: int | None = None) -> Generation:
        """Generate the answer for one evaluation row and show it beside the reference."""
        row = self._row(index)
        out = generate(self.model, self.tokenizer, [self.template.messages(row)], max_new_tokens=self._max_new.value,
                       progress=False, **self.task.ends)[0]
        self._try_html.value = (
            f"<b>output</b>{_html.pre(out.text)}<b>reference</b>{_html.pre(row.get('completion', ''))}"
            + _html.note(f"{out.prompt_tokens} prompt tokens, {out.new_tokens} new tokens, "
                         f"{out.latency_s:.2f} s"))
        self._messages.value = ""
        return out

    def run_eval(self) -> EvalResult:
        """Run the prompt on the evaluation rows (at most ``limit``); show the metric and outputs."""
        if not self._eval:
            raise ValueError("no evaluation rows: pass eval=splits['test']")
        rows = self._eval[:self.limit] if self.limit else self._eval
        template = self.template
        self._progress.clear_output()
        with self._progress:
            self.result = evaluate([Variant(self.model, self.tokenizer, template, max_new_tokens=self._max_new.value,
                                            **self.task.ends)],
                                   rows, self.metrics, labels=self.labels or None)
        line = self.result.summary.iloc[0]
        scored = list(self.result.scores[template.name])
        self._summary.value = _html.note(
            f"{template.name} on {len(rows)} rows: "
            + ", ".join(f"{m} {line[m]:.3f} (95% CI {line[f'{m}_low']:.3f} to {line[f'{m}_high']:.3f})"
                        for m in scored)
            + f"; {line['prompt_tokens']:.0f} prompt tokens and {line['latency_s']:.2f} s per request"
            + (f" (and {line['retrieval_s'] * 1000:.1f} ms to retrieve the shots)" if "retrieval_s" in line else "")
            + (f", {line['usd_per_request']:.6f} USD" if "usd_per_request" in line else ""))
        table = self.result.table.rename(columns=lambda c: c.removeprefix(f"{template.name}: "))
        shown = [c for c in ("history", "input") if c in table.columns]  # a conversation: its earlier turns too
        self._outputs.value = _html.table(table[[*shown, "reference", "output", *scored]])
        self._messages.value = ""
        return self.result

    def save_variant(self, name: str) -> PromptTemplate:
        """Keep the current prompt under ``name`` in ``variants`` (for ComparePanel)."""
        name = (name or "").strip()
        if not name:
            raise ValueError("give the variant a name, e.g. '8-shot'")
        self.variants[name] = dataclasses.replace(self.template, name=name)
        self._variants_html.value = _html.note("saved variants: " + ", ".join(self.variants))
        return self.variants[name]

    # --- internals ------------------------------------------------------------------------------

    def _rows(self) -> list[dict]:
        return self._eval or self._train

    def _row(self, index: int | None) -> dict:
        rows = self._rows()
        if not rows:
            raise ValueError("no rows to render: pass train= or eval=")
        index = self._index.value if index is None else index
        if not 0 <= index < len(rows):
            raise IndexError(f"row {index} does not exist; there are {len(rows)} rows")
        return rows[index]

    def _refresh(self) -> None:
        self._rendered.value = _html.pre(self.rendered())
        count = self.token_count()
        self._tokens.value = _html.note(f"{count} prompt tokens" if count is not None else
                                        f"the messages sent to {getattr(self.model, 'model', 'the server')}; "
                                        "its server counts the tokens")
        self._messages.value = ""
