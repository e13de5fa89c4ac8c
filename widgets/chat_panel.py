"""ChatPanel: chat with the base model and each tuned run side by side, answers streamed.

>>> chat = ChatPanel(model, tokenizer, runs=[sft_run, dpo_run], system="You help a shop's customers.")  # doctest: +SKIP
>>> chat.send("Where is my parcel?")          # {"base": "...", sft_run.id: "...", dpo_run.id: "..."}  # doctest: +SKIP
>>> chat.rate(0, dpo_run.id, up=True); chat.rate(0, "base", up=False); chat.save_pairs("pairs.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ipywidgets as w
import traitlets

from ftkit import tasks
from ftkit.generation.chat import NO_EFFECT, adapter_effect, next_token_logits, stream_reply, with_adapters
from ftkit.generation.generate import render_prompts
from ftkit.evaluation.metrics import normalize
from ftkit.runs import Run, load_run
from ftkit.widgets import _html
from ftkit.widgets._ui import button, guarded

BASE = "base"
# A browser redraw every 0.1 s reads as smooth streaming; a redraw per token would send a fast
# model's hundreds of updates a second through the kernel. The final text is always drawn.
THROTTLE_S = 0.1
CURSOR = "▌"


class ChatPanel(w.VBox):
    """Type a message; the base model and each finished run answer it side by side, streamed.

    Columns: ``"base"`` (``model`` with every adapter off) and one per run, named by run id.
    Every column answers the same user messages, and each column's history holds its own
    earlier answers, as when two chatbots are compared: the second answer of a run follows from
    its own first answer, not from the base model's. ``system`` (editable in the panel; empty:
    the chat template's default) opens every conversation and applies from the next answer on
    when edited. ``task`` supplies the system prompt when ``system`` is None, and its stop strings.
    Greedy by default, so a column answers exactly what :func:`ftkit.generation.generate.generate` would;
    tick *sample* for temperature/top-p sampling (every column from the same seed, so their
    differences come from the adapters, not the dice).

    Runs share ``model``'s weights instead of being loaded as fresh models as ComparePanel does:
    their adapters go into a structural copy of ``model`` whose modules are new but whose weight
    tensors are ``model``'s (see :func:`ftkit.generation.chat.with_adapters`). One set of weights in memory
    serves every column, the base column is those very weights with adapters off, and ``model``
    is left unchanged for other panels (no LoRA layers put into it, its trainable flags kept).
    The columns follow ``model``'s weights: change them in place and the columns change too.
    :meth:`check`, run when the panel is built, raises if the base column would not answer as
    ``model`` does and warns (in ``warnings`` and in the panel) about any adapter that changes
    nothing.

    A run answers the message as typed, not wrapped in the prompt template it was trained on:
    this is a free conversation, ComparePanel is where runs are measured on their task.
    ``runs``: finished :class:`~ftkit.runs.Run` objects, or their ids. Thumbs up/down under each
    answer build DPO preference pairs (:meth:`pairs`).
    """

    status = traitlets.Unicode("idle", help="idle, or 'answering: <column>' while a message is answered").tag(sync=True)
    turns = traitlets.Int(0, help="user messages sent since the last reset").tag(sync=True)

    def __init__(self, model, tokenizer, runs=(), system: str | None = None, max_new_tokens: int = 128, task=None):
        task = tasks.resolve(task) if task is not None else None
        if system is None and task is not None:
            system = task.system
        self.model, self.tokenizer = model, tokenizer
        # A run id (or a unique start of one) is found under the runs folder, as the CLI finds it.
        self.runs = {run.id: run for run in (r if isinstance(r, Run) else load_run(r) for r in runs)}
        if BASE in self.runs:
            raise ValueError(f"a run may not be called {BASE!r}: that is the base model's column")
        self.stop_strings = list(task.stop_strings) if task is not None else []
        self.chat_model = with_adapters(model, self.runs.values())
        self.columns = [BASE, *self.runs]
        self.user_messages: list[str] = []
        self.history: dict[str, list[dict]] = {c: [] for c in self.columns}
        self.warnings: list[str] = []
        self.effects: dict[str, float] = {}
        self.throttle_s = THROTTLE_S
        self._ratings: dict[tuple[int, str], bool] = {}
        self._answers: dict[tuple[int, str], w.HTML] = {}
        self._thumbs: dict[tuple[int, str], tuple[w.Button, w.Button]] = {}

        self._messages = w.HTML()
        self._warnings_html = w.HTML()
        self._system = w.Textarea(value=system or "", description="system",
                                  placeholder="(empty: the chat template's default)",
                                  tooltip="Opens every column's conversation; an edit applies from the next answer on",
                                  layout={"width": "100%", "height": "4em"})
        self._system.add_class("ftkit-chat-system")
        self._do_sample = w.Checkbox(value=False, description="sample", indent=False,
                                     tooltip="Off: greedy, the same answer every time (what evaluation uses)")
        self._temperature = w.FloatSlider(value=0.7, min=0.05, max=2.0, step=0.05, description="temperature",
                                          style={"description_width": "initial"},
                                          tooltip="Above 1: more varied, below: more predictable (sampling only)")
        self._top_p = w.FloatSlider(value=0.9, min=0.05, max=1.0, step=0.05, description="top p",
                                    style={"description_width": "initial"},
                                    tooltip="Sample only from the most likely tokens that add up to this share")
        self._max_new = w.BoundedIntText(value=max_new_tokens, min=1, max=4096, description="max new tokens",
                                         style={"description_width": "initial"}, layout={"width": "16em"})
        self._seed = w.IntText(value=0, description="seed", layout={"width": "10em"},
                               tooltip="Every column samples from this seed: the same seed, the same answers")
        self._do_sample.observe(lambda change: self._sampling_controls(), names="value")
        self._sampling_controls()
        self._columns_box = w.HBox([self._column_box(c) for c in self.columns],
                                   layout={"width": "100%", "align_items": "flex-start"})
        self._input = w.Text(placeholder="Type a message, then Send", layout={"width": "60%"})
        self._input.add_class("ftkit-chat-input")
        self._send_button = button("Send", self._send_typed, self._messages, css="ftkit-chat-send", style="primary")
        self._pairs_html = w.HTML()
        self._pairs_path = w.Text(value="chat_pairs.jsonl", description="save to")
        super().__init__(children=[
            w.HTML("<h4>Chat</h4>"), self._warnings_html, self._system,
            w.HBox([self._do_sample, self._temperature, self._top_p]), w.HBox([self._max_new, self._seed]),
            self._columns_box,
            w.HBox([self._input, self._send_button,
                    button("Reset", self.reset, self._messages, css="ftkit-chat-reset",
                           tooltip="Forget the conversation (the system prompt and settings stay)")]),
            w.HBox([self._pairs_path, button("Save pairs", lambda: self.save_pairs(self._pairs_path.value),
                                             self._messages, css="ftkit-save-pairs")]),
            self._pairs_html, self._messages,
        ])
        self.add_class("ftkit-chat-panel")
        self.check()

    # --- settings -------------------------------------------------------------------------------

    @property
    def system(self) -> str | None:
        """The system prompt the controls hold; None when empty (the chat template's default)."""
        return self._system.value.strip() or None

    def set_system(self, text: str | None) -> None:
        """Set the system prompt; empty or None leaves it to the chat template."""
        self._system.value = text or ""

    @property
    def settings(self) -> dict:
        """The generation settings the controls hold, as :func:`ftkit.generation.chat.stream_reply` takes them."""
        sample = self._do_sample.value
        return dict(do_sample=sample, temperature=self._temperature.value, top_p=self._top_p.value,
                    max_new_tokens=self._max_new.value, seed=self._seed.value if sample else None)

    def set(self, **settings) -> None:
        """Set generation settings: ``do_sample``, ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``."""
        controls = {"do_sample": self._do_sample, "temperature": self._temperature, "top_p": self._top_p,
                    "max_new_tokens": self._max_new, "seed": self._seed}
        unknown = set(settings) - set(controls)
        if unknown:
            raise ValueError(f"no setting {min(unknown)!r}; settings are: {', '.join(controls)}")
        for name, value in settings.items():
            controls[name].value = value

    # --- the conversation -----------------------------------------------------------------------

    def conversation(self, column: str, turn: int | None = None) -> list[dict]:
        """The messages ``column``'s model reads: the system prompt, then its history (up to and
        including user message ``turn``, when given)."""
        self._check_column(column)
        history = self.history[column]
        if turn is not None:
            history = history[:2 * turn + 1]
        return ([{"role": "system", "content": self.system}] if self.system else []) + list(history)

    def rendered(self, column: str = BASE, message: str | None = None) -> str:
        """The exact text ``column``'s model reads for its next answer, with ``message`` as the
        next user message (default: after the last one sent)."""
        messages = self.conversation(column)
        if message is not None:
            messages.append({"role": "user", "content": message})
        return render_prompts(self.tokenizer, [messages])[0]

    def answers(self, column: str) -> list[str]:
        """``column``'s answers, one per user message."""
        self._check_column(column)
        return [m["content"] for m in self.history[column] if m["role"] == "assistant"]

    def send(self, text: str) -> dict[str, str]:
        """Send a user message; every column answers it in turn, streamed into its column.
        Returns ``{column: answer}``. If a column fails, the message is taken back from every
        column (the conversations stay in step) and the error is raised."""
        text = (text or "").strip()
        if not text:
            raise ValueError("type a message first")
        if self.status != "idle":
            raise RuntimeError(f"still {self.status}; wait for it to finish")
        turn = len(self.user_messages)
        self.user_messages.append(text)
        for column, box in zip(self.columns, self._columns_box.children):
            self.history[column].append({"role": "user", "content": text})
            box.children = (*box.children, *self._turn_widgets(turn, column, text))
        self._send_button.disabled = True
        self.turns = turn + 1  # after the turn's widgets exist: an observer may watch them
        replies = {}
        try:
            for column in self.columns:
                self.status = f"answering: {column}"
                replies[column] = self._stream(turn, column)
                self.history[column].append({"role": "assistant", "content": replies[column]})
        except BaseException:
            self._take_back(turn)
            raise
        finally:
            self.status = "idle"
            self._send_button.disabled = False
        self._messages.value = ""
        return replies

    def reset(self) -> None:
        """Forget the conversation and the ratings; the system prompt and settings stay."""
        if self.status != "idle":
            raise RuntimeError(f"still {self.status}; reset when it has finished")
        self.user_messages.clear()
        self.history = {c: [] for c in self.columns}
        self._ratings.clear()
        self._answers.clear()
        self._thumbs.clear()
        self._columns_box.children = [self._column_box(c) for c in self.columns]
        self.turns = 0
        self._pairs_html.value = self._messages.value = ""

    def answer_widget(self, turn: int, column: str) -> w.HTML:
        """The widget that shows ``column``'s answer to user message ``turn`` (streamed into it)."""
        self._check_column(column)
        if (turn, column) not in self._answers:
            raise IndexError(f"turn {turn} does not exist; there are {len(self.user_messages)} turns")
        return self._answers[(turn, column)]

    # --- checks ---------------------------------------------------------------------------------

    def check(self) -> dict[str, float]:
        """Check the columns: raise if the base column does not answer as ``model`` does (with its
        adapters off); warn, in ``warnings`` and in the panel, about each run whose adapter changes
        no next-token logit (an untrained LoRA, or one that did not load). Returns each run's
        effect (:func:`ftkit.generation.chat.adapter_effect`)."""
        probe = self._probe()
        if self.chat_model is not self.model:
            ours = next_token_logits(self.chat_model, self.tokenizer, probe, adapter=False)
            theirs = next_token_logits(self.model, self.tokenizer, probe, adapter=False)
            gap = float((ours - theirs).abs().max())
            if gap > NO_EFFECT:
                raise RuntimeError(f"the base column would not be the base model: with its adapters off it differs "
                                   f"from the model you passed (next-token logits differ by up to {gap:.3g}). Pass "
                                   "the base model as loaded by ftkit.load_model()")
        self.effects = {run_id: adapter_effect(self.chat_model, self.tokenizer, run_id, probe) for run_id in self.runs}
        self.warnings = [
            f"run {run_id}'s adapter changes nothing (next-token logits move by {effect:.2g}): its column will "
            "answer as the base model does. Was it trained? (An untrained LoRA starts at zero.)"
            for run_id, effect in self.effects.items() if effect < NO_EFFECT]
        self._warnings_html.value = "".join(_html.error(message) for message in self.warnings)
        for column, box in zip(self.columns, self._columns_box.children):
            box.children[0].value = self._header(column)
        return self.effects

    # --- ratings and preference pairs ------------------------------------------------------------

    @property
    def ratings(self) -> dict[tuple[int, str], bool]:
        """The thumbs so far, ``{(turn index, column): True (up) / False (down)}``: a copy, in the
        shape :func:`ftkit.evaluation.judge.judge` checks a judge against (``names`` = two columns)."""
        return dict(self._ratings)

    def rate(self, turn_index: int, column: str, up: bool | None) -> None:
        """Thumbs up (True) or down (False) on ``column``'s answer to user message ``turn_index``;
        None clears it."""
        self._check_column(column)
        if not 0 <= turn_index < len(self.answers(column)):
            raise IndexError(f"turn {turn_index} has no answer from {column!r}; there are "
                             f"{len(self.answers(column))} answered turns (counting from 0)")
        if up is None:
            self._ratings.pop((turn_index, column), None)
        else:
            self._ratings[(turn_index, column)] = bool(up)
        self._style_thumbs(turn_index, column)
        self._pairs_html.value = _html.note(f"{len(self.pairs())} preference pairs from your ratings (a pair is "
                                            "an answer rated up and another rated down at the same turn)")

    def pairs(self, conversational: bool = False) -> list[dict]:
        """Preference pairs from the ratings: at each turn, every answer rated up is ``chosen``
        against every answer rated down (the rule of :func:`ftkit.evaluation.evaluate.pairs_from_ratings`;
        there is no reference answer here, so a turn with only downs makes no pair). Empty answers
        and answers that are the same after normalization make no pair.

        Canonical rows (default), ready for ``ftkit.load_data`` and ``train_dpo``: ``prompt`` is
        the user message of that turn, and ``history`` keeps the whole conversation up to it as
        messages (system prompt included), as the chosen answer's column saw it: the columns'
        histories differ after the first turn, and the chosen answer followed from its own.
        ``train_dpo`` prompts with that history (as :meth:`PromptTemplate.messages` does for a
        conversation's turn, see :func:`ftkit.data.canonical.chat_turns`). ``conversational=True`` gives TRL's conversational preference rows instead (``prompt``:
        that conversation as messages; ``chosen``/``rejected``: one assistant message each), for
        TRL's ``DPOTrainer`` directly.
        """
        out, seen = [], set()
        for turn in sorted({t for t, _ in self._ratings}):
            rated = {c: up for (t, c), up in self._ratings.items() if t == turn}
            for good in [c for c, up in rated.items() if up]:
                for bad in [c for c, up in rated.items() if not up]:
                    chosen, rejected = self.answers(good)[turn], self.answers(bad)[turn]
                    key = (turn, normalize(chosen), normalize(rejected))
                    if not chosen.strip() or not rejected.strip() or key[1] == key[2] or key in seen:
                        continue
                    seen.add(key)
                    conversation = self.conversation(good, turn)
                    if conversational:
                        out.append({"prompt": conversation, "chosen": [{"role": "assistant", "content": chosen}],
                                    "rejected": [{"role": "assistant", "content": rejected}]})
                    else:
                        out.append({"prompt": self.user_messages[turn], "chosen": chosen, "rejected": rejected,
                                    "history": conversation})
        return out

    def save_pairs(self, path: str | os.PathLike, conversational: bool = False) -> Path:
        """Write the pairs as JSONL (see :meth:`pairs`), ready for ``ftkit.load_data`` and ``train_dpo``."""
        pairs = self.pairs(conversational)
        if not pairs:
            raise ValueError("no preference pairs yet: rate one answer up and another down at the same turn")
        path = Path(path)
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        self._pairs_html.value = _html.note(f"{len(pairs)} preference pairs written to {path}")
        return path

    # --- internals ------------------------------------------------------------------------------

    def _send_typed(self) -> None:
        self.send(self._input.value)
        self._input.value = ""

    def _stream(self, turn: int, column: str) -> str:
        widget = self._answers[(turn, column)]
        adapter = False if column == BASE else column
        text, drawn = "", 0.0
        for chunk in stream_reply(self.chat_model, self.tokenizer, self.conversation(column), adapter=adapter,
                                  stop_strings=self.stop_strings, **self.settings):
            text += chunk
            now = time.monotonic()
            if now - drawn >= self.throttle_s:
                widget.value = _html.pre(text + CURSOR)
                drawn = now
        widget.value = _html.pre(text) if text else _html.note("(an empty answer: the model ended at once)")
        return text

    def _take_back(self, turn: int) -> None:
        """Remove user message ``turn`` and whatever was answered to it, from every column."""
        del self.user_messages[turn:]
        for column, box in zip(self.columns, self._columns_box.children):
            del self.history[column][2 * turn:]
            for table in (self._answers, self._thumbs, self._ratings):
                table.pop((turn, column), None)
            box.children = box.children[:1 + 3 * turn]  # the header, then three widgets a turn
        self.turns = turn

    def _probe(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": "Hello! Who are you?"}]

    def _check_column(self, column: str) -> None:
        if column not in self.history:
            raise ValueError(f"no column {column!r}; columns are: {', '.join(self.columns)}")

    def _sampling_controls(self) -> None:
        for control in (self._temperature, self._top_p, self._seed):
            control.disabled = not self._do_sample.value

    def _header(self, column: str) -> str:
        if column == BASE:
            return f"<b>{_html.esc(BASE)}</b>" + _html.note("the model with adapters off")
        effect = self.effects.get(column)
        note = "" if effect is None else f"adapter moves next-token logits by up to {effect:.3g}"
        return f"<b>{_html.esc(column)}</b>" + _html.note(note)

    def _column_box(self, column: str) -> w.VBox:
        box = w.VBox([w.HTML(self._header(column))], layout={"flex": "1 1 0", "min_width": "14em",
                                                             "padding": "0 6px", "border_left": "1px solid #ddd"})
        box.add_class("ftkit-chat-column")
        return box

    def _turn_widgets(self, turn: int, column: str, text: str) -> list[w.Widget]:
        user = w.HTML("<div style='background:#f2f4f7;padding:2px 6px;margin-top:6px'><b>you:</b>"
                      f"{_html.pre(text)}</div>")
        answer = w.HTML(_html.note("waiting…"))
        answer.add_class("ftkit-chat-answer")
        up = w.Button(description="👍", layout={"width": "3em"}, tooltip="A good answer")
        down = w.Button(description="👎", layout={"width": "3em"}, tooltip="A bad answer")
        # A second click on the same thumb clears it, as in ComparePanel.
        up.on_click(guarded(lambda: self.rate(turn, column, None if self._ratings.get((turn, column)) else True),
                            self._messages))
        down.on_click(guarded(lambda: self.rate(
            turn, column, None if self._ratings.get((turn, column)) is False else False), self._messages))
        self._answers[(turn, column)] = answer
        self._thumbs[(turn, column)] = (up, down)
        return [user, answer, w.HBox([up, down])]

    def _style_thumbs(self, turn: int, column: str) -> None:
        up, down = self._thumbs[(turn, column)]
        rating = self._ratings.get((turn, column))
        up.button_style = "success" if rating is True else ""
        down.button_style = "danger" if rating is False else ""
