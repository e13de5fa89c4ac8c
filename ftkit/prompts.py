"""Prompt templates: a system prompt, an instruction filled from the row, and few-shot examples.

A template turns one canonical row into chat messages; the model's chat template then turns those
into the exact text the model reads. Named starting points are plain functions:

>>> t = zero_shot("Classify: {prompt}\\nAnswer with one of: {labels}", labels=["a", "b"])
>>> t.messages({"prompt": "hello"})
[{'role': 'user', 'content': 'Classify: hello\\nAnswer with one of: a, b'}]

Few-shot examples are shown as earlier user/assistant turns rendered by the same instruction, so
the model sees the exact answer format before the real question. They come from the training
split only; :func:`ftkit.evaluation.evaluate.evaluate` refuses a template whose shots are in the test rows.
Retrieved shots (the training rows nearest to each input, :mod:`ftkit.retrieval`) are a template
whose ``retriever`` picks them per request.

A tuned classifier needs no label list: :func:`without_label_list` (named ``"short prompt"``,
``sft.template: short prompt`` in a config, the default over :data:`LONG_LABEL_LIST` labels) trains
and asks it with the message alone, and constrained decoding (:mod:`ftkit.generation.labels`)
keeps its answers within the labels.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from ftkit.data.sources import as_rows

__all__ = [
    "CLASSIFY_INSTRUCTION", "CLASSIFY_SHORT_INSTRUCTION", "CLASSIFY_SYSTEM", "DEFAULT_INSTRUCTION", "LONG_LABEL_LIST",
    "SHORT_PROMPT", "PromptTemplate", "classify_few_shot", "shot_instruction", "without_label_list",
    "check_fits", "classify_with_system", "classify_zero_shot", "few_shot", "prompt_lengths", "select_shots",
    "with_system", "zero_shot",
]

DEFAULT_INSTRUCTION = "{prompt}"
CLASSIFY_INSTRUCTION = "Labels: {labels}\nMessage: {prompt}\nAnswer with the label only."
CLASSIFY_SYSTEM = "You sort messages into exactly one of the given labels."
# A tuned classifier's prompt: the label list left out. It learned the labels from its training
# answers, and on 77 labels (banking77) the list is 545 of the prompt's 605 tokens, in every request.
CLASSIFY_SHORT_INSTRUCTION = "Message: {prompt}\nAnswer with the label only."
SHORT_PROMPT = "short prompt"  # its name in tables, and what sft.template names it by
# More labels than this, and a classifier trains on the short prompt unless sft.template names
# another: at about 7 tokens a label (banking77: 545 tokens for 77), 20 labels are some 140 tokens
# of list beside a system prompt and message of about 60, most of every request; the tuned model
# learns the labels from its answers, and constrained decoding keeps its answers within them.
LONG_LABEL_LIST = 20


@dataclass
class PromptTemplate:
    """How a row becomes the model's input.

    ``instruction`` is a ``str.format`` template over the row's fields (``{prompt}``, any extra
    column such as ``{label}`` or ``{id}``) plus ``{labels}``, the comma-separated label set.
    """

    name: str = "prompt"
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={
        "help": "The user turn, with {placeholders} filled from the row, e.g. 'Translate: {prompt}'"})
    system: str | None = field(default=None, metadata={
        "help": "System prompt. None leaves it to the chat template (SmolLM2's adds its own default)"})
    shots: list[dict] = field(default_factory=list, metadata={
        "help": "Solved examples (rows with prompt and completion) shown before the question"})
    labels: list[str] = field(default_factory=list, metadata={
        "help": "The label set, for {labels} in the instruction"})
    retriever: Callable[[dict], list[dict]] | None = field(default=None, repr=False, metadata={
        "help": "Picks the shots per request instead (row -> solved examples), e.g. the nearest training "
                "rows: ftkit.retrieval.retrieved_shots"})

    def __post_init__(self):
        self._fields = _placeholders(self.instruction)
        self._shot_instruction = shot_instruction(self.instruction)

    def _fill(self, row: dict, instruction: str | None = None) -> str:
        # A missing value (a row without a passage in mostly passage-carrying data) shows as nothing, not "None".
        values = {"labels": ", ".join(self.labels),
                  **{k: "" if v is None or (isinstance(v, float) and v != v) else v  # NaN: pandas' missing value
                     for k, v in row.items() if isinstance(k, str)}}
        missing = sorted(self._fields - set(values))
        if missing:
            raise KeyError(f"instruction uses {{{missing[0]}}}, but the row has no such field; fields are: "
                           f"{', '.join(sorted(values))}")
        try:
            return (instruction or self.instruction).format(**values)
        except (ValueError, TypeError) as err:  # a format spec that does not fit the value, e.g. {id:d}
            raise ValueError(f"instruction {self.instruction!r} cannot format this row: {err}") from None

    def messages(self, row: dict) -> list[dict]:
        """The chat messages for one row, ending with the user turn the model must answer.

        A turn of a conversation (a row with ``history``: the true turns so far, ending with the
        user's, see :func:`ftkit.data.canonical.chat_turns`) keeps its earlier turns, each user turn
        through the instruction, after the system prompt and the shots (``retriever(row)``'s, when
        the template retrieves them per request)."""
        out, history = self._system(row.get("history") or [])
        shots = self.retriever(row) if self.retriever is not None else self.shots
        conversations = [s["messages"] for s in shots if "messages" in s]
        if conversations:  # whole example conversations are shown in the system prompt, never as turns
            out = _with_examples(out, conversations)
        for shot in shots:
            if "messages" in shot:
                continue
            out += [{"role": "user", "content": self._fill(shot, self._shot_instruction)},
                    {"role": "assistant", "content": shot["completion"]}]
        if history:
            return out + self._turns(history[:-1], row) + [{"role": "user", "content": self._fill(row)}]
        return out + [{"role": "user", "content": self._fill(row)}]

    def conversation(self, messages: list[dict], row: dict | None = None) -> list[dict]:
        """A whole conversation as training sees it: this template's system prompt (else the
        conversation's own), and every user turn through the instruction.

        >>> PromptTemplate(instruction="Q: {prompt}", system="Be brief.").conversation(
        ...     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Q: hi'}, {'role': 'assistant', 'content': 'hello'}]
        """
        head, messages = self._system(messages)
        return head + self._turns(messages, row or {})

    def _system(self, messages: list[dict]) -> tuple[list[dict], list[dict]]:
        """The system message to send (this template's, else the conversation's own), and the
        conversation's other turns."""
        system = self.system
        if messages and messages[0]["role"] == "system":
            system = system if system is not None else messages[0]["content"]
            messages = messages[1:]
        return ([] if system is None else [{"role": "system", "content": system}]), messages

    def _turns(self, messages: list[dict], row: dict) -> list[dict]:
        if self.instruction == DEFAULT_INSTRUCTION:
            return [dict(m) for m in messages]
        return [{"role": m["role"], "content": self._fill({**row, "prompt": m["content"]})}
                if m["role"] == "user" else dict(m) for m in messages]

    def render(self, row: dict, tokenizer) -> str:
        """The exact text the model sees, through its chat template, up to where it answers."""
        return tokenizer.apply_chat_template(self.messages(row), tokenize=False, add_generation_prompt=True)

    def token_count(self, row: dict, tokenizer) -> int:
        """Prompt tokens for this row, the system prompt the chat template adds included."""
        return len(tokenizer(self.render(row, tokenizer), add_special_tokens=False)["input_ids"])


def _placeholders(instruction: str) -> set[str]:
    """The row fields ``instruction`` names. Only ``{name}`` placeholders (with an optional
    conversion and format spec, e.g. ``{prompt!r}``, ``{prompt:.200}``) are allowed: a template comes
    from users and config files, and ``{prompt.__class__}`` or ``{prompt[0]}`` would reach into
    the values' attributes and items (a format-string injection), ``{}``/``{0}`` into nothing."""
    try:
        parsed = list(string.Formatter().parse(instruction))
    except ValueError as err:
        raise ValueError(f"instruction {instruction!r} is not a valid template ({err}); write {{{{ and }}}} "
                         "for a literal brace") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"instruction {instruction!r} has an unknown conversion !{conversion} in "
                             f"{{{name}!{conversion}}}; use !r, !s or !a, or none")
        if name == "" or name.isdigit():
            raise ValueError(f"instruction {instruction!r} has a positional placeholder {{{name}}}; name "
                             "the row field instead, e.g. {prompt}")
        if "." in name or "[" in name:
            raise ValueError(f"instruction {instruction!r} uses {{{name}}}: only plain field names are "
                             "allowed in placeholders, no attribute or index access; e.g. {prompt}")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"instruction {instruction!r} has a placeholder inside the format spec of "
                             f"{{{name}}}; write the spec out, e.g. {{{name}:.200}}")
        names.add(name)
    if not names:
        raise ValueError(f"instruction {instruction!r} has no placeholder; put {{prompt}} where "
                         "the row's text goes")
    return names


def _with_examples(head: list[dict], conversations: list[list[dict]]) -> list[dict]:
    """``head`` (the system message, if any) with example conversations appended to the system prompt
    as transcripts: turns of another conversation placed before the real one would read as part of it."""
    shown = "\n\n".join("\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in c if m["role"] != "system")
                         for c in conversations)
    text = f"Example conversations, to show how the assistant answers:\n\n{shown}"
    if head:
        return [{"role": "system", "content": f"{head[0]['content']}\n\n{text}"}]
    return [{"role": "system", "content": text}]


def _whole_conversations(rows: list[dict]) -> list[dict] | None:
    """Rows that are conversations (``messages``) or turns of them (``history``, from
    :func:`ftkit.data.canonical.chat_turns`) as whole conversations, ``{"messages": [...]}``; None for other rows."""
    if rows and "messages" in rows[0]:
        return [{"messages": r["messages"], **({"id": r["id"]} if "id" in r else {})} for r in rows]
    if rows and "history" in rows[0]:
        last: dict = {}
        for r in rows:  # each conversation's last answered turn holds it whole
            key = r.get("conversation")
            if key not in last or r.get("turn", 0) >= last[key].get("turn", 0):
                last[key] = r
        return [{"messages": [*r["history"], {"role": "assistant", "content": r["completion"]}]}
                for r in last.values()]
    return None


def select_shots(train, k: int, strategy: str = "balanced", seed: int = 0,
                 label_column: str = "label") -> list[dict]:
    """Pick ``k`` solved examples from the training rows.

    ``"first"``: the first k rows. ``"random"``: k rows drawn with ``seed``. ``"balanced"``: round
    robin over the labels (each label's rows in a seeded random order), so every label appears
    before any appears twice; without a label column it falls back to random.

    Conversations give whole conversations, drawn from the shorter half (each is shown in full
    in the system prompt, see :meth:`PromptTemplate.messages`), never single turns: a turn of
    another conversation before the real one would read as part of it.

    >>> rows = [{"prompt": f"m{i}", "completion": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(6)]
    >>> [r["label"] for r in select_shots(rows, 4, "balanced")]
    ['a', 'b', 'a', 'b']
    """
    rows = as_rows(train)
    conversations = _whole_conversations(rows)
    if conversations is not None:
        if k > len(conversations):
            raise ValueError(f"asked for {k} shots but the training rows hold only {len(conversations)} conversations")
        if strategy == "first":
            return conversations[:k]
        size = sorted(conversations, key=lambda c: sum(len(m["content"]) for m in c["messages"]))
        return random.Random(seed).sample(size[:max(k, len(size) // 2)], k)
    if k > len(rows):
        raise ValueError(f"asked for {k} shots but the training rows hold only {len(rows)}")
    rng = random.Random(seed)
    if strategy == "first":
        return rows[:k]
    if strategy == "balanced" and rows and rows[0].get(label_column) is not None:
        groups = defaultdict(list)
        for r in rows:
            groups[r[label_column]].append(r)
        queues = [rng.sample(g, len(g)) for _, g in sorted(groups.items())]
        picked = []
        while len(picked) < k:
            for q in queues:
                if q and len(picked) < k:
                    picked.append(q.pop())
        return picked
    if strategy in ("random", "balanced"):
        return rng.sample(rows, k)
    raise ValueError(f"unknown shot strategy {strategy!r}; use 'first', 'random' or 'balanced'")


# --- named starting points: plain functions, no class hierarchy ---------------------------------

def zero_shot(instruction: str = DEFAULT_INSTRUCTION, labels=(), name: str = "zero-shot") -> PromptTemplate:
    """Just the instruction; the chat template supplies any default system prompt."""
    return PromptTemplate(name=name, instruction=instruction, labels=list(labels))


def with_system(system: str, instruction: str = DEFAULT_INSTRUCTION, labels=(),
                name: str = "zero-shot + system") -> PromptTemplate:
    """Zero-shot with your own system prompt (replacing the chat template's default one)."""
    return PromptTemplate(name=name, instruction=instruction, system=system, labels=list(labels))


def few_shot(train, k: int = 5, strategy: str = "balanced", seed: int = 0, *,
             instruction: str = DEFAULT_INSTRUCTION, system: str | None = None, labels=(),
             name: str | None = None) -> PromptTemplate:
    """``k`` solved examples from ``train`` before the question."""
    shots = select_shots(train, k, strategy, seed)
    return PromptTemplate(name=name or f"{k}-shot", instruction=instruction, system=system,
                          shots=shots, labels=list(labels))


# Ready-made classification variants: the label set goes in the instruction.
classify_zero_shot = partial(zero_shot, CLASSIFY_INSTRUCTION)
classify_with_system = partial(with_system, CLASSIFY_SYSTEM, CLASSIFY_INSTRUCTION)
classify_few_shot = partial(few_shot, instruction=CLASSIFY_INSTRUCTION, system=CLASSIFY_SYSTEM)


def shot_instruction(instruction: str) -> str:
    """The instruction a solved example is shown with: without the line(s) that hold the label list,
    which the question's own turn shows. Repeated in every shot, the list made banking77's 8-shot
    prompt 5,253 tokens (77 labels, 545 tokens each time); shown once, 965 (medians). An instruction
    whose label list shares the line of ``{prompt}`` is kept whole.

    >>> shot_instruction(CLASSIFY_INSTRUCTION)
    'Message: {prompt}\\nAnswer with the label only.'
    >>> shot_instruction("Sort {prompt} into {labels}") == "Sort {prompt} into {labels}"
    True
    """
    if "{labels}" not in instruction:
        return instruction
    kept = [line for line in instruction.split("\n") if "{labels}" not in line]
    shown = "\n".join(kept)
    return shown if "{prompt}" in shown else instruction


def without_label_list(template: PromptTemplate, name: str = SHORT_PROMPT) -> PromptTemplate:
    """``template`` for a tuned classifier: the instruction without the label list
    (:data:`CLASSIFY_SHORT_INSTRUCTION`), the same system prompt, no shots. Train on it and ask the
    tuned model with it (the run records it); a model that was not tuned has no way to know the labels.

    >>> t = without_label_list(classify_with_system(labels=["billing", "refund"]))
    >>> t.name, t.messages({"prompt": "I was charged twice"})[1]["content"]
    ('short prompt', 'Message: I was charged twice\\nAnswer with the label only.')
    """
    return replace(template, name=name, instruction=CLASSIFY_SHORT_INSTRUCTION, shots=[], retriever=None)


def prompt_lengths(template: PromptTemplate, rows, tokenizer) -> list[int]:
    """Prompt tokens of each row with ``template``, as the model reads them (system prompt and shots included)."""
    return [template.token_count(r, tokenizer) for r in as_rows(rows)]


def check_fits(template: PromptTemplate, rows, tokenizer, context: int, max_new_tokens: int,
               counts: list[int] | None = None) -> int:
    """The prompt tokens of the longest row; raise ``ValueError`` when its prompt plus the answer
    would not fit the model's ``context`` (for a few-shot template, naming a shot count that fits).
    ``counts``: the rows' :func:`prompt_lengths`, when the caller has them already.

    >>> check_fits(zero_shot(), [{"prompt": "hi"}], tokenizer, context=2048, max_new_tokens=32)  # doctest: +SKIP
    12
    """
    import dataclasses

    rows = as_rows(rows)
    if not rows:
        return 0
    counts = counts if counts is not None else prompt_lengths(template, rows, tokenizer)
    longest = max(counts)
    if longest + max_new_tokens <= context:
        return longest
    hint = ""
    shown = len(template.shots) or getattr(template.retriever, "k", 0)
    if shown:
        row = rows[counts.index(longest)]
        bare = dataclasses.replace(template, shots=[], retriever=None).token_count(row, tokenizer)
        per_shot = (longest - bare) / shown
        fits = int((context - max_new_tokens - bare) // max(per_shot, 1))
        hint = f"; use at most {fits} shots" if fits > 0 else "; even without shots it does not fit"
    raise ValueError(f"the {template.name!r} prompt of the longest row is {longest} tokens, and with "
                     f"{max_new_tokens} new tokens it exceeds the model's context of {context} tokens{hint}")
