"""What each scenario needs, as plain data: its example, prompts, metrics, lengths and how to read
its number.

A :class:`Task` holds no code paths of its own: the data, prompt, evaluation and training
modules read its fields. Classification is one task among them.

>>> task = get("translation").on("shop_translation")   # with the house style of its own example
>>> task.headline, [name for name, _ in task.metric_functions()]
('chrf', ['chrf', 'bleu', 'glossary_accuracy'])
>>> task.template().messages({"prompt": "Your gift card is on its way."})[-1]["content"]
'Translate this text from the Hearth & Co. shop into German. Reply with the German text only.\\n\\nYour gift card is on its way.'
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ftkit import metrics as M
from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, PromptTemplate, few_shot

__all__ = ["ACTION_PHRASES", "BLURB_RULES", "CHAT_RULES", "PROMISE_WORDS", "TASKS", "Task", "blurb_rule_metrics",
           "chat_rule_metrics", "get", "glossary_prompt", "infer", "names", "resolve"]


@dataclass(frozen=True)
class Task:
    """One scenario: everything the kit needs to prompt, train and measure it."""

    name: str
    description: str
    examples: tuple[str, ...]  # built-in example names, the first is the default
    instruction: str  # the user turn; {prompt} and any column of the rows
    system: str | None = None
    shots: int = 4  # few-shot examples that fit the context of a small model
    metrics: tuple = ("exact_match",)  # names or callables; the first is the headline
    higher_is_better: bool = True
    max_new_tokens: int = 32
    max_length: int = 256  # training: longest example in tokens
    stop_strings: tuple[str, ...] = ()
    reading: str = ""  # how to read the headline number, in one line
    # Extra prompt variants, as {name: instruction} or {name: (instruction, system prompt)}: the
    # prompt-engineering answer this task has besides zero- and few-shot (the passage in context
    # for QA, say); used where the rows hold every field a variant names. A system prompt may be a
    # function, read when the template is built (the shop's glossary file).
    variants: dict[str, str | tuple] = field(default_factory=dict)
    # On the task's own example, what its house style asks for: the instruction that states it,
    # and the metrics that check it. Other data of the task gets the plain ones above.
    house_instruction: str | None = None
    house_metrics: tuple = ()
    house_variants: dict[str, str | tuple] = field(default_factory=dict)

    def on(self, source: str) -> Task:
        """This task for ``source``: with its house instruction and metrics when ``source`` is the
        task's own built-in example, as it is otherwise.

        >>> get("summarization").on("shop_summaries").headline, len(get("summarization").on("x.csv").metrics)
        ('rouge_l', 1)
        """
        if source not in self.examples:
            return self
        return replace(self, instruction=self.house_instruction or self.instruction,
                       metrics=self.house_metrics or self.metrics, variants={**self.variants, **self.house_variants})

    @property
    def headline(self) -> str:
        return self.metric_functions()[0][0]

    def metric_functions(self) -> list[tuple[str, Callable]]:
        """The task's metrics as ``(name, callable)``, the headline first."""
        return list(M.resolve(list(self.metrics)).items())

    def template(self, name: str = "zero-shot", labels=()) -> PromptTemplate:
        """The zero-shot template (the instruction alone, with the chat template's own system prompt),
        or one of :attr:`variants` by name (with the task's system prompt)."""
        if name == "zero-shot":
            return PromptTemplate(name=name, instruction=self.instruction, labels=list(labels))
        if name not in self.variants:
            raise KeyError(f"task {self.name!r} has no prompt variant {name!r}; it has: zero-shot"
                           + "".join(f", {v}" for v in self.variants))
        instruction, system = (self.variants[name], self.system) if isinstance(self.variants[name], str) \
            else self.variants[name]
        return PromptTemplate(name=name, instruction=instruction, system=system() if callable(system) else system,
                              labels=list(labels))

    def templates(self, train, labels=(), seed: int = 0) -> list[PromptTemplate]:
        """The prompt variants to measure: zero-shot, the task's variants the rows have fields for,
        and k-shot from ``train`` (k = :attr:`shots`, never more than the training rows)."""
        from ftkit.data import chat_turns

        train = chat_turns(train)  # a conversation's turns are rows too
        # A variant is used where the rows hold every field it names (NQ's `context` is empty: closed book).
        fields = {k for k, v in train[0].items() if v not in (None, "")} if train else set()
        out = [self.template("zero-shot", labels)]
        out += [self.template(name, labels) for name, v in self.variants.items()
                if {f for _, f, _, _ in string.Formatter().parse(v if isinstance(v, str) else v[0]) if f}
                - {"labels"} <= fields]
        k = min(self.shots, len(train))
        if k:
            out.append(few_shot(train, k=k, seed=seed, instruction=self.instruction, system=self.system,
                                labels=labels))
        return out


# --- creative writing: the house rules of a product blurb, each a checkable metric --------------

def _lines(text: str) -> list[str]:
    return text.strip().split("\n")


BLURB_RULES: dict[str, Callable[[str, dict], bool]] = {
    "three_lines": lambda text, row: len(_lines(text)) == 3 and all(line.strip() for line in _lines(text)),
    "opening": lambda text, row: _lines(text)[0].startswith(f"Made for home: {row.get('product', '')}"),
    "no_exclamation": lambda text, row: "!" not in text,
    "within_40_words": lambda text, row: 0 < M.word_count(text) <= 40,
    "care_line": lambda text, row: len(_lines(text)) == 3 and _lines(text)[2].startswith("Care:"),
    "no_you": lambda text, row: re.search(r"\byour?\b", text, flags=re.I) is None,
}


def blurb_rule_metrics() -> dict[str, Callable]:
    """One metric per house rule, and ``all_rules`` (1.0 only when every rule holds), headline first."""
    return _rule_metrics(BLURB_RULES, "all_rules")


SUMMARY_FORMAT = r"[^;\n]+; [^;\n]+; [^;\n]+"


def glossary_prompt() -> str:
    """The shop's fixed terms as a system prompt: the prompt-engineering answer to terminology."""
    from ftkit import examples

    terms = "\n".join(f"{g['en']} = {g['de']}" for g in examples.glossary())
    return f"You translate for the Hearth & Co. shop. Always use these German terms:\n{terms}"

# --- chat: the shop's tone rules, checked on each answered turn ----------------------------------

ACTION_PHRASES = ("i've cancelled", "i've started a return", "i've arranged a replacement", "i've updated the address",
                  "i've issued a refund", "i've booked a collection", "i've reopened")
PROMISE_WORDS = ("guarantee", "guaranteed", "promise", "promised", "regardless", "exception", "no matter")
CHAT_SYSTEM = ("You are the customer support assistant of Hearth & Co., a home-goods web shop. Greet the customer "
               "by their first name in your first reply. Before you cancel, return, replace, refund or change "
               "anything, repeat the order number and ask the customer to confirm it. Offer only what the shop's "
               "policy allows; never promise a refund.")


def _plain(text: str) -> str:
    return text.replace("\u2019", "'").casefold()


def _acts(text: str) -> bool:
    return any(p in _plain(text) for p in ACTION_PHRASES)


_YES = re.compile(r"^\W*(yes|yep|yeah|yup|ya|correct|right|exactly|confirmed|sure|ok|okay|"
                  r"that's (right|it|correct|the one)|that is (right|correct))\b", re.I)


def _confirmed(text: str, row: dict) -> bool:
    """The answer names the order, and an earlier answer asked to confirm it, and the customer said yes."""
    order = str(row.get("order") or "").casefold()
    if not order or order not in _plain(text):
        return False
    history = row.get("history", [])
    for asked, reply in zip(history, history[1:]):
        said = _plain(asked["content"])
        if (asked["role"] == "assistant" and order in said and re.search(r"\bconfirm\b", said)
                and reply["role"] == "user" and _YES.match(_plain(reply["content"]))):
            return True
    return False


CHAT_RULES: dict[str, Callable[[str, dict], bool]] = {
    # The first answer of a conversation greets the customer by first name.
    "greets_by_name": lambda text, row: row.get("turn") != 1 or not row.get("customer") or re.search(
        rf"\b{re.escape(str(row['customer']).split()[0])}\b", text, flags=re.I) is not None,
    # An answer that acts (cancels, refunds, ...) names the order, which an earlier answer asked to confirm.
    "confirms_before_acting": lambda text, row: not _acts(text) or _confirmed(text, row),
    # Refunds only as the policy allows: never a promise.
    "no_refund_promise": lambda text, row: re.search(
        r"\b(" + "|".join(map(re.escape, PROMISE_WORDS)) + r")\b", _plain(text)) is None,
}


def _rule_metrics(rules: dict[str, Callable[[str, dict], bool]], overall: str) -> dict[str, Callable]:
    """One metric per rule, and ``overall`` (1.0 only when every rule holds), that one first."""
    def rule(name):
        def metric(prediction: str, reference: str, row: dict | None = None) -> float:
            return float(rules[name](prediction, row or {}))
        metric.__name__ = name
        return metric

    def every(prediction: str, reference: str, row: dict | None = None) -> float:
        return float(all(check(prediction, row or {}) for check in rules.values()))

    every.__name__ = overall
    return {overall: every, **{name: rule(name) for name in rules}}


def chat_rule_metrics() -> dict[str, Callable]:
    """The shop chat's tone rules, one metric each, and ``tone_rules`` (every rule kept), first.

    >>> row = {"turn": 1, "customer": "Priya", "order": "HC-10233", "history": []}
    >>> {name: fn("Hi Priya, I've cancelled order HC-10233.", "", row) for name, fn in chat_rule_metrics().items()}
    {'tone_rules': 0.0, 'greets_by_name': 1.0, 'confirms_before_acting': 0.0, 'no_refund_promise': 1.0}
    """
    return _rule_metrics(CHAT_RULES, "tone_rules")


TASKS: dict[str, Task] = {t.name: t for t in [
    Task(
        name="classification",
        description="Route each message to one label of a fixed set (customer-support queues).",
        examples=("support_routing",), instruction=CLASSIFY_INSTRUCTION, system=CLASSIFY_SYSTEM, shots=8,
        metrics=("exact_match",), max_new_tokens=12,
        reading="the share of rows answered with exactly the right label (macro-F1 weighs every label alike)",
    ),
    Task(
        name="qa",
        description="Answer questions in a few words; the shop's example asks about its own policies, which a "
                    "base model cannot know.",
        examples=("shop_qa",),
        instruction="Answer the question in a few words.\n\n{prompt}",
        house_instruction="Answer the customer's question about the Hearth & Co. shop in a few words.\n\n{prompt}",
        shots=4, metrics=("token_f1", "squad_exact_match"), max_new_tokens=24,
        reading="token F1: the overlap of the answer's words with the reference answer's, 1 for the same words",
        variants={"passage in context": "Answer the question in a few words, from this text only.\n\n"
                                        "Text: {context}\n\nQuestion: {prompt}"},
    ),
    Task(
        name="translation",
        description="Translate English texts into German; the shop's example has a fixed terminology.",
        examples=("shop_translation",),
        instruction="Translate this text into German. Reply with the German text only.\n\n{prompt}",
        house_instruction="Translate this text from the Hearth & Co. shop into German. Reply with the German "
                          "text only.\n\n{prompt}",
        house_variants={"glossary in prompt": (
            "Translate this text from the Hearth & Co. shop into German, using the shop's terms. Reply with "
            "the German text only.\n\n{prompt}", lambda: glossary_prompt())},
        shots=4, metrics=("chrf", "bleu"), house_metrics=("chrf", "bleu", "glossary_accuracy"),
        max_new_tokens=96, max_length=384,
        reading="corpus chrF: character n-gram overlap with the reference translation, 0 to 1",
    ),
    Task(
        name="summarization",
        description="Summarize a text in one sentence; the shop's example uses its one-line case format.",
        examples=("shop_summaries",),
        instruction="Summarize this text in one sentence.\n\n{prompt}",
        house_instruction="Summarize this support conversation in one line: the customer's problem; the action "
                          "taken; the open item (or 'no open items'). At most 30 words.\n\n{prompt}",
        shots=2, metrics=("rouge_l",),
        house_metrics=("rouge_l", M.within_words(30), M.matches(SUMMARY_FORMAT, "house_format")),
        max_new_tokens=64, max_length=512,
        reading="ROUGE-L: the longest run of words shared with the reference summary, 0 to 1",
    ),
    Task(
        name="creative",
        description="Write to a brief; the shop's example is product blurbs whose house rules can be checked.",
        examples=("shop_blurbs",),
        instruction="{prompt}",
        house_instruction="Write a product blurb in the Hearth & Co. house style: three lines; the first starts "
                          "'Made for home: ' and the product name; the third starts 'Care:'; no exclamation "
                          "marks, no 'you'; at most 40 words.\n\n{prompt}",
        shots=3, metrics=("rouge_l",), house_metrics=tuple(blurb_rule_metrics().values()), max_new_tokens=80,
        reading="the share of blurbs that keep every house rule (each rule has its own column); on other data, "
                "ROUGE-L against the reference text",
    ),
    Task(
        name="chat",
        description="Hold a conversation: every assistant turn is answered after the true turns before it; the "
                    "shop's example is its support chat, with tone rules.",
        examples=("shop_chat",),
        instruction="{prompt}", shots=0, metrics=("rouge_l",),
        house_metrics=("rouge_l", *chat_rule_metrics().values()),
        house_variants={"house rules in system prompt": ("{prompt}", CHAT_SYSTEM)},
        max_new_tokens=96, max_length=1024,
        reading="ROUGE-L of each answer against the reference answer of that turn, 0 to 1; on the shop's chat, "
                "also the share of answers keeping each tone rule",
    ),
    Task(
        name="code",
        description="Write a Python function to a specification; the answer passes when it passes the row's tests, "
                    "run in a sandbox.",
        examples=("shop_code",),
        instruction="{prompt}\n\nReply with the Python code only.",
        shots=2, metrics=("pass_at_1",), max_new_tokens=256, max_length=768,
        reading="pass@1: the share of tasks whose one generated answer passes every test (run in a sandbox)",
    ),
]}


def names() -> list[str]:
    return list(TASKS)


def get(name: str) -> Task:
    """A task by name."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"no task {name!r}; tasks are: {', '.join(TASKS)}") from None


def resolve(task, rows=(), labels=None) -> Task:
    """A task from a name, a :class:`Task`, or None: then classification when there is a label set
    (``labels``, or a ``label`` column in ``rows``), else what :func:`infer` reads from ``rows``.

    >>> resolve(None, [{"prompt": "hi", "completion": "a", "label": "a"}]).name, resolve("qa").name
    ('classification', 'qa')
    """
    if isinstance(task, Task):
        return task
    if task is not None:
        return get(task)
    from ftkit.data import label_set

    if labels or label_set(rows):
        return get("classification")
    return infer(rows)[0] if rows else get("creative")


def infer(rows) -> tuple[Task, str]:
    """The task canonical rows look like, and why, in words.

    Labels (few distinct completions that repeat) mean classification; a ``context`` passage or an
    ``answers`` list, QA; ``terms`` or a ``target_lang``, translation; long prompts with much shorter
    completions, summarization; otherwise free generation (creative writing) is assumed.

    >>> infer([{"prompt": f"m{i}", "completion": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(10)])[0].name
    'classification'
    """
    from ftkit.sources import as_rows

    rows = as_rows(rows)
    if rows and ("messages" in rows[0] or "history" in rows[0]):
        return get("chat"), "the rows are conversations"
    if rows and rows[0].get("tests"):
        return get("code"), "the rows carry tests to run"
    if not rows or "completion" not in rows[0]:
        return get("creative"), "the rows are not prompt/completion pairs"
    completions = [str(r["completion"]) for r in rows]
    if rows[0].get("label") is not None or len(set(completions)) <= max(2, len(rows) // 10):
        return get("classification"), f"{len(set(completions))} distinct answers repeat across {len(rows)} rows"
    if rows[0].get("context") or rows[0].get("answers"):
        return get("qa"), "the rows carry a context passage or a list of accepted answers"
    if "terms" in rows[0] or "target_lang" in rows[0]:
        return get("translation"), "the rows carry glossary terms or a target language"
    prompt_words = sum(M.word_count(str(r["prompt"])) for r in rows) / len(rows)
    answer_words = sum(M.word_count(c) for c in completions) / len(rows)
    if prompt_words > 3 * answer_words and prompt_words > 40:
        return get("summarization"), (f"prompts ({prompt_words:.0f} words on average) are much longer than "
                                      f"answers ({answer_words:.0f})")
    return get("creative"), "free-form answers"
