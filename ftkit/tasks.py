"""What each scenario needs, as plain data: its example, prompts, metrics, lengths and how to read
its number; and which task rows look like (:func:`detect`, which says how sure it is).

A :class:`Task` holds no code paths of its own: the data, prompt, evaluation and training
modules read its fields. Classification is one task among them. ``task.on(source, rows=...)``
fits it to the data in hand: the house style on the task's own example only, and QA prompts that
read the passage when the rows carry one (``task.for_rows(rows)`` alone does the second).

A task names its metrics (:meth:`Task.metric_names`); evaluation turns the names into functions.
The house rules of the shop's examples live in :mod:`ftkit.data.examples.house`, the language guess
in :mod:`ftkit.data.languages`. The module is over 400 lines because :func:`detect` reads rows
against the task table it chooses from, and :func:`resolve` falls back on it: apart, the two
halves would import each other.

>>> task = get("translation").on("shop_translation")   # with the house style of its own example
>>> task.headline, task.metric_names()
('chrf', ['chrf', 'bleu', 'glossary_accuracy'])
>>> task.template().messages({"prompt": "Your gift card is on its way."})[-1]["content"]
'Translate this text from the Hearth & Co. shop into German. Reply with the German text only.\\n\\nYour gift card is on its way.'
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, replace

from ftkit.data.canonical import chat_turns, check_data as _check_rows, label_set
from ftkit.data.examples.house import (  # noqa: F401  (public here before the house rules had a module)
    ACTION_PHRASES, BLURB_RULES, CHAT_RULES, CHAT_SYSTEM, PROMISE_WORDS, SUMMARY_FORMAT, blurb_rule_metrics,
    chat_rule_metrics, glossary_prompt, summary_rule_metrics)
from ftkit.data.languages import LANGUAGES as _LANGUAGES, column_language as _column_language
from ftkit.data.languages import language_name as _say, named_language as _named_language
from ftkit.data.report import DataReport, match_key
from ftkit.data.sources import as_rows
from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, PromptTemplate, few_shot
from ftkit.retrieval import retrieved_shots

__all__ = ["ACTION_PHRASES", "BLURB_RULES", "CHAT_RULES", "CLOSED_BOOK", "PROMISE_WORDS", "TASKS", "Task", "TaskGuess",
           "blurb_rule_metrics", "chat_rule_metrics", "check_data", "detect", "get", "glossary_prompt", "infer", "names", "resolve"]

CLOSED_BOOK = "closed book"  # the variant that asks without the passage, where the prompts read one


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
    # The score below which a variant does not work yet, as {metric: (floor, basis in a few words)},
    # where this task's reading of a metric differs from the metric's own floor
    # (ftkit.evaluation.floor.FLOORS, which the verdict uses otherwise).
    floors: dict[str, tuple[float, str]] = field(default_factory=dict)
    # Where the answer ends, so generation stops there (ftkit.generation.stops): "code block" (the
    # closing fence, or the end of the function), "first line" (a label); None: at end-of-turn only.
    answer_end: str | None = None
    reading: str = ""  # how to read the headline number, in one line
    # Extra prompt variants, as {name: instruction} or {name: (instruction, system prompt)}: the
    # prompt-engineering answer this task has besides zero- and few-shot (the glossary as the system
    # prompt for translation, say); used where most rows hold every field a variant names. A system prompt may be a
    # function, read when the template is built (the shop's glossary file).
    variants: dict[str, str | tuple] = field(default_factory=dict)
    # On the task's own example, what its house style asks for: the instruction that states it,
    # and the metrics that check it. Other data of the task gets the plain ones above.
    house_instruction: str | None = None
    house_metrics: tuple = ()
    house_variants: dict[str, str | tuple] = field(default_factory=dict)
    house_description: str = ""
    house_reading: str = ""  # the reading with the house metrics; on other data, `reading` alone
    # With a passage (a `context` non-empty in at least half the rows) the prompts read it: this
    # replaces `instruction`, which stays as the variant "closed book" (see `for_rows`).
    passage_instruction: str | None = None
    house_passage_instruction: str | None = None

    def on(self, source: str, rows=None) -> Task:
        """This task for ``source``: with its house instruction, metrics and reading when ``source``
        is the task's own built-in example, as it is otherwise; fitted to ``rows`` when given
        (:meth:`for_rows`).

        >>> get("summarization").on("shop_summaries").headline, len(get("summarization").on("x.csv").metrics)
        ('rouge_l', 1)
        """
        task = self
        if source in self.examples:
            reads = self.reads_passage
            closed = self.variants.get(CLOSED_BOOK, self.instruction) if reads else self.instruction
            variants = {k: v for k, v in {**self.variants, **self.house_variants}.items() if k != CLOSED_BOOK}
            task = replace(self, instruction=self.house_instruction or closed, variants=variants,
                           metrics=self.house_metrics or self.metrics,
                           passage_instruction=self.house_passage_instruction or self.passage_instruction,
                           description=self.house_description or self.description,
                           reading=self.house_reading or self.reading)
            task = task._reading_passage() if reads else task
        return task if rows is None else task.for_rows(rows)

    def for_rows(self, rows) -> Task:
        """This task fitted to ``rows``: when at least half of them carry a passage (a non-empty
        ``context``) and the task has a :attr:`passage_instruction`, every prompt reads it (zero-shot,
        few-shot, and so the one SFT trains on), and the closed-book instruction stays as the variant
        ``"closed book"``; otherwise the task as it is. Half, not all: a few rows without a passage
        still render (with an empty passage there), but most rows answer from their text.

        >>> qa = get("qa").for_rows([{"prompt": "Where?", "completion": "Kiel", "context": "It is in Kiel."}])
        >>> qa.template().messages({"prompt": "Where?", "context": "It is in Kiel."})[-1]["content"]
        'Answer the question in a few words, from this text only.\\n\\nText: It is in Kiel.\\n\\nQuestion: Where?'
        >>> list(qa.variants), get("qa").for_rows([{"prompt": "Where?", "context": None}]) == get("qa")
        (['closed book'], True)
        """
        rows = as_rows(rows)
        task = self._into(_column_language([str(r.get("completion", "")) for r in rows[:200]])) \
            if self.name == "translation" and rows and "completion" in rows[0] else self
        if task.passage_instruction is None or task.reads_passage or _share(rows, "context") < 0.5:
            return task
        return task._reading_passage()

    def _into(self, language: str | None) -> Task:
        """A translation task whose plain prompt asks for ``language`` (the answers' own), not German."""
        if language in (None, "de") or language not in _LANGUAGES or "German" not in self.instruction:
            return self
        name = _LANGUAGES[language]
        return replace(self, instruction=self.instruction.replace("German", name),
                       description=self.description.replace("(the plain prompt asks for German)", f"into {name}"))

    @property
    def reads_passage(self) -> bool:
        """Whether the prompts read the rows' passage (set by :meth:`for_rows`)."""
        return self.passage_instruction is not None and self.instruction == self.passage_instruction

    def _reading_passage(self) -> Task:
        return replace(self, instruction=self.passage_instruction,
                       variants={CLOSED_BOOK: self.instruction, **self.variants})

    @property
    def headline(self) -> str:
        return self.metric_names()[0]

    def metric_names(self) -> list[str]:
        """The names of the task's metrics, the headline first: a built-in metric's name, or the
        ``__name__`` of a metric function. The task names its metrics and evaluation scores them:
        ``ftkit.evaluation.metrics.resolve(task.metrics)`` gives ``{name: function}`` in this order.

        >>> get("qa").metric_names()
        ['token_f1', 'squad_exact_match']
        """
        return [m if isinstance(m, str) else getattr(m, "__name__", type(m).__name__) for m in self.metrics]

    @property
    def ends(self) -> dict:
        """Where its answers end, as :class:`~ftkit.evaluation.evaluate.Variant` and ``generate`` take it.

        >>> get("code").ends
        {'stop_strings': (), 'answer_end': 'code block'}
        """
        return {"stop_strings": self.stop_strings, "answer_end": self.answer_end}

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
        and k-shot from ``train`` (k = :attr:`shots`, never more than the training rows), fixed and
        retrieved per request ("retrieved k-shot", :mod:`ftkit.retrieval`); on rows
        with a passage, each reads it, and ``"closed book"`` asks without it (:meth:`for_rows`)."""
        train = chat_turns(train)  # a conversation's turns are rows too
        task = self.for_rows(train)
        # A variant is used where most rows hold every field it names (NQ's `context` is empty: closed book).
        fields = {k for k in train[0] if _share(train, k) >= 0.5} if train else set()
        out = [task.template("zero-shot", labels)]
        out += [task.template(name, labels) for name, v in task.variants.items()
                if {f for _, f, _, _ in string.Formatter().parse(v if isinstance(v, str) else v[0]) if f}
                - {"labels"} <= fields]
        k = min(task.shots, len(train))
        if k:
            out.append(few_shot(train, k=k, seed=seed, instruction=task.instruction, system=task.system,
                                labels=labels))
            # The same k, picked per request: the training rows nearest to the input (ftkit.retrieval).
            out.append(retrieved_shots(train, k=k, instruction=task.instruction, system=task.system, labels=labels))
        return out


TASKS: dict[str, Task] = {t.name: t for t in [
    Task(
        name="classification",
        description="Sort each text into one label of a fixed set.",
        house_description="Route each customer message to one of the shop's support queues.",
        examples=("support_routing",), instruction=CLASSIFY_INSTRUCTION, system=CLASSIFY_SYSTEM, shots=8,
        metrics=("exact_match",), max_new_tokens=12, answer_end="first line",
        reading="the share of rows answered with exactly the right label (macro-F1 weighs every label alike)",
    ),
    Task(
        name="qa",
        description="Answer questions in a few words: from the row's passage where the rows carry one "
                    "(`context`), else from what the model knows (closed book).",
        house_description="Answer customers' questions about the shop's policies in a few words, from the policy "
                          "passage; closed book, a base model cannot know them.",
        examples=("shop_qa",),
        instruction="Answer the question in a few words.\n\n{prompt}",
        house_instruction="Answer the customer's question about the Hearth & Co. shop in a few words.\n\n{prompt}",
        passage_instruction="Answer the question in a few words, from this text only.\n\n"
                            "Text: {context}\n\nQuestion: {prompt}",
        house_passage_instruction="Answer the customer's question about the Hearth & Co. shop in a few words, from "
                                  "this policy text only.\n\nPolicy: {context}\n\nQuestion: {prompt}",
        shots=4, metrics=("token_f1", "squad_exact_match"), max_new_tokens=24,
        reading="token F1: the overlap of the answer's words with the reference answer's (the best of the "
                "accepted answers, where the rows list them), 1 for the same words",
    ),
    Task(
        name="translation",
        description="Translate each text into the other language (the plain prompt asks for German).",
        house_description="Translate the shop's English texts into German with its fixed terms (the glossary).",
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
        house_reading="corpus chrF: character n-gram overlap with the reference translation, 0 to 1 (glossary "
                      "accuracy: the share of the shop's terms translated as its glossary says)",
    ),
    Task(
        name="summarization",
        description="Summarize a text in one sentence.",
        house_description="Summarize a support conversation in the shop's one-line case format.",
        examples=("shop_summaries",),
        instruction="Summarize this text in one sentence.\n\n{prompt}",
        house_instruction="Summarize this support conversation in one line: the customer's problem; the action "
                          "taken; the open item (or 'no open items'). At most 30 words.\n\n{prompt}",
        shots=2, metrics=("rouge_l",),
        house_metrics=("rouge_l", *summary_rule_metrics().values()),
        max_new_tokens=64, max_length=512,
        reading="ROUGE-L: the longest run of words shared with the reference summary, 0 to 1",
        house_reading="ROUGE-L: the longest run of words shared with the reference summary, 0 to 1 (and the share "
                      "of summaries within 30 words and in the case format)",
    ),
    Task(
        name="creative",
        description="Write to a brief (the prompt); the answer is compared with the reference text.",
        house_description="Write product blurbs to the shop's house rules, each of which is checked.",
        examples=("shop_blurbs",),
        instruction="{prompt}",
        house_instruction="Write a product blurb in the Hearth & Co. house style: three lines; the first starts "
                          "'Made for home: ' and the product name; the third starts 'Care:'; no exclamation "
                          "marks, no 'you'; at most 40 words.\n\n{prompt}",
        shots=3, metrics=("rouge_l",), house_metrics=tuple(blurb_rule_metrics().values()), max_new_tokens=80,
        # A good text to a brief can share few words with the one reference written for it: ROUGE-L's
        # own floor (0.15, a fluent answer to another row) would call good writing "not working".
        # Below 0.05 an answer shares almost no run of words with it, which fluent text on the same
        # brief rarely does.
        floors={"rouge_l": (0.05, "a text to a brief may share few words with its one reference")},
        reading="ROUGE-L against the reference text: the longest run of words shared with it, 0 to 1 (a good "
                "text can share few words with it: read some answers too)",
        house_reading="the share of blurbs that keep every house rule (each rule has its own column)",
    ),
    Task(
        name="chat",
        description="Hold a conversation: every assistant turn is answered after the true turns before it.",
        house_description="Answer the shop's support chat, every turn after the true turns before it, with its "
                          "tone rules.",
        examples=("shop_chat",),
        instruction="{prompt}", shots=0, metrics=("rouge_l",),
        house_metrics=("rouge_l", *chat_rule_metrics().values()),
        house_variants={"house rules in system prompt": ("{prompt}", CHAT_SYSTEM)},
        max_new_tokens=96, max_length=1024,
        reading="ROUGE-L of each answer against the reference answer of that turn, 0 to 1",
        house_reading="ROUGE-L of each answer against the reference answer of that turn, 0 to 1; also the share "
                      "of answers keeping each tone rule",
    ),
    Task(
        name="code",
        description="Write a Python function to a specification; the answer passes when it passes the row's tests, "
                    "run in a sandbox.",
        examples=("shop_code",),
        instruction="{prompt}\n\nReply with the Python code only.",
        shots=2, metrics=("pass_at_1",), max_new_tokens=256, max_length=768, answer_end="code block",
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


def check_data(source, mapping: dict[str, str] | None = None, *, task=None, **kwargs) -> DataReport:
    """:func:`ftkit.data.check_data`, with token lengths counted inside the task's prompt: ``task``
    is a :class:`Task`, its name, or None to infer it from the canonical rows (:func:`resolve`);
    ``report.task`` names the one used. Other arguments as there.

    >>> from tiny_models import CountingTokenizer                       # doctest: +SKIP
    >>> check_data([{"question": "2+2?", "answer": "4"}], tokenizer=CountingTokenizer()).task  # doctest: +SKIP
    'qa'
    """
    chosen = task if isinstance(task, Task) else (lambda rows: resolve(task, rows))
    return _check_rows(source, mapping, task=chosen, **kwargs)


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
    if labels or label_set(rows):
        return get("classification")
    return infer(rows)[0] if rows else get("creative")


def infer(rows) -> tuple[Task, str]:
    """The task canonical rows look like, and why, in words: :func:`detect`'s guess, or free
    generation (creative) where it cannot tell, with its reason and the ask to set ``task:``.

    >>> infer([{"prompt": f"m{i}", "completion": "ab"[i % 2], "label": "ab"[i % 2]} for i in range(10)])[0].name
    'classification'
    """
    guess = detect(rows)
    if guess.task is None:
        return get("creative"), f"{guess.why}; until then free generation (creative) is assumed"
    return guess.task, guess.why


@dataclass(frozen=True)
class TaskGuess:
    """What :func:`detect` makes of the rows: the task (None when it cannot tell), why, whether it
    is sure (a column says so) or it is a guess (from statistics or names), and what it looked at."""

    task: Task | None
    why: str
    sure: bool = False
    looked_at: dict = field(default_factory=dict)  # the columns, and each statistic read with its value

    def summary(self) -> str:
        """One line: ``"translation (sure: ...)"``, ``"creative (a guess: ...)"`` or ``"unknown: ..."``."""
        if self.task is None:
            return f"unknown: {self.why}"
        return f"{self.task.name} ({'sure' if self.sure else 'a guess'}: {self.why})"


def detect(rows, mapping: dict[str, str] | None = None) -> TaskGuess:
    """The task canonical rows look like, how sure that is, and what was looked at.

    Sure, from a column: conversations (chat), ``tests`` (code), a ``label`` or few answers that
    repeat (classification), a ``context`` passage or ``answers`` list (QA), ``terms`` or a
    ``*_lang`` column (translation), or prompts and answers in two languages (a stop-word guess
    over en/de/fr/es/it/nl/pt, and other scripts by name). A guess: column names that say
    translation (``mapping``, the source columns of the canonical fields: ``src``/``tgt``,
    ``en``/``de``), prompts much longer than answers (summarization), prompts that ask for a
    poem, story or blurb (creative). Anything else, and preference pairs (DPO data, whose task is
    the SFT data's), is ``task=None``: the ``why`` asks for ``task:``.

    >>> g = detect([{"prompt": f"The lamp {i} is made of brass and glass.",
    ...              "completion": f"Die Lampe {i} ist aus Messing."} for i in range(3)])
    >>> g.task.name, g.sure, g.looked_at["completion language"]
    ('translation', True, 'de')
    """
    rows = as_rows(rows)
    first = rows[0] if rows else {}
    seen: dict = {"rows": len(rows), "columns": list(first)}
    ask = f"set task: in the config (or pass task=) to one of: {', '.join(TASKS)}"

    def guess(name, why, sure=True):
        return TaskGuess(get(name) if name else None, why, sure, seen)

    if "messages" in first or "history" in first:
        return guess("chat", "the rows are conversations")
    if "chosen" in first and "rejected" in first:
        return guess(None, "the rows are preference pairs (prompt/chosen/rejected): DPO data, which says which "
                           f"answer is better, not the task; {ask}", False)
    if first.get("tests") or (first.get("test") and first.get("entry_point")):
        return guess("code", "the rows carry tests to run")
    if "completion" not in first:
        return guess(None, f"the rows are neither conversations nor prompt/completion pairs; {ask}", False)
    prompts, completions = [str(r["prompt"]) for r in rows], [str(r["completion"]) for r in rows]
    seen["distinct answers"] = len(set(completions))
    if first.get("label") is not None or len(set(completions)) <= max(2, len(rows) // 10):
        return guess("classification", f"{len(set(completions))} distinct answers repeat across {len(rows)} rows")
    seen["rows with a passage"] = f"{_share(rows, 'context'):.0%}"
    if _share(rows, "context") >= 0.5:
        return guess("qa", f"{seen['rows with a passage']} of the rows carry a context passage")
    if first.get("answers"):
        return guess("qa", "the rows carry a list of accepted answers (closed book: no passage)")
    tagged = {c: first[c] for c in first if c == "terms" or re.search(r"(^|_)lang(uage)?($|_)", c)}
    if tagged:
        return guess("translation", "the rows carry " + ", ".join(
            "glossary terms" if c == "terms" else f"{c} ({v})" for c, v in tagged.items()))
    source, target = _column_language(prompts), _column_language(completions)
    seen["prompt language"], seen["completion language"] = source, target
    # A translation is about as long as its source (German ~1.2x English in characters); a poem to a
    # one-line brief, or a summary of a long text, in another language is not one.
    length = sum(map(len, completions)) / max(1, sum(map(len, prompts)))
    seen["answer length / prompt length"] = round(length, 2)
    alike = 1 / 3 <= length <= 3 or not {source, target} <= set(_LANGUAGES)  # other scripts count differently
    if source and target and source != target and alike:
        return guess("translation", f"the prompts read as {_say(source)} and the answers as {_say(target)}")
    named = {k: (mapping or {}).get(k, k) for k in ("prompt", "completion")}
    seen["column names"] = named
    codes = [_named_language(c) for c in named.values()]
    words = [set(re.split(r"[^a-z]+", c.lower())) for c in named.values()]
    roles = words[0] & {"source", "src"} and words[1] & {"target", "tgt"}
    if (roles or None not in codes and codes[0] != codes[1]) and not (source and source == target):
        return guess("translation", f"the columns are named {named['prompt']!r} and {named['completion']!r}, "
                                    "though the texts do not show two languages; set task: translation to be sure",
                     False)
    prompt_words = sum(len(p.split()) for p in prompts) / len(rows)
    answer_words = sum(len(c.split()) for c in completions) / len(rows)
    seen["words per prompt"], seen["words per answer"] = round(prompt_words, 1), round(answer_words, 1)
    if prompt_words > 3 * answer_words and prompt_words > 40:
        return guess("summarization", f"prompts ({prompt_words:.0f} words on average) are much longer than "
                                      f"answers ({answer_words:.0f})", False)
    briefs = sum(bool(_BRIEF.search(p)) and not _CODE.search(p) for p in prompts) / len(rows)
    seen["prompts asking for a poem, story or the like"] = f"{briefs:.0%}"
    if briefs >= 0.5:
        return guess("creative", f"{briefs:.0%} of the prompts ask for a piece of writing (a poem, story, blurb...)",
                     False)
    language = f" in {_say(source)}" if source and source == target else ""
    return guess(None, f"the prompts and answers are free text{language} and no column says which task they are "
                       f"(a free-form answer could be creative writing, an instruction followed, a rewrite...); "
                       f"{ask}", False)


_BRIEF = re.compile(r"\b(write|compose|draft|poem|poetry|story|sonnet|haiku|limerick|verse|lyrics|song|blurb|essay|"
                    r"slogan|tagline)s?\b", re.I)
_CODE = re.compile(r"\b(function|code|program|script|python|sql|class|method)s?\b", re.I)

def _share(rows: list[dict], column: str) -> float:
    """The share of rows whose ``column`` holds something (not None, NaN or blank: the leakage check's rule)."""
    full = sum(match_key(r.get(column)) is not None for r in rows)
    return full / len(rows) if rows else 0.0
