"""A judge model for open-ended answers (chat, creative writing), checked against your ratings.

ROUGE-L against one reference punishes a good answer worded differently, and rules check only what
a rule can see. A judge is a model asked which of two answers to the same request is better by the
task's rules. Any generation :class:`~ftkit.generation.backend.Backend` can judge: a hosted
:class:`~ftkit.generation.endpoint.Endpoint`, a model behind ``ftkit serve`` (``server.endpoint()``),
or a local :class:`~ftkit.generation.generate.LocalModel`.

How it is made honest:

- **Both orders.** Every pair is asked twice, each answer shown first once. A judge that prefers
  the first answer it reads would otherwise make whichever variant is shown first win. A request
  counts as a win only when the judge picks the same answer in both orders; anything else (one
  order A, the other B; a win in one order and a tie in the other; an unreadable reply) is a tie.
  This is the conservative rule of MT-Bench (Zheng et al., 2023): position bias can only turn wins
  into ties, never into wins, and each request gets one verdict (a, b or tie) that can be set
  against the ratings. It costs power (a half-signal counts as a tie), so the interval is wider
  than averaging the two orders would give. ``consistency`` reports the share of requests where
  both replies were readable and named the same winner (or both a tie): a judge that always says
  "A" has consistency 0 and win rate 0.5.
- **One word.** The judge is asked for ``A``, ``B`` or ``tie``; :func:`parse_verdict` reads that
  word (and a few common longer forms). A reply it cannot read counts as a tie in that order, and
  ``unparsable`` says how many there were.
- **An interval.** ``win_rate`` (a's wins plus half the ties, over requests) comes with a 95%
  percentile bootstrap interval over requests. Not Wilson: a tie counts a half, so the score is
  not a count of successes. With a handful of requests the bootstrap interval is too narrow.
- **Checked against people.** Where you rated both answers of a request (thumbs in ComparePanel
  or ChatPanel, keyed ``(row index, variant name) -> True/False``), up against down is a
  preference and two ups or two downs a tie. ``kappa`` is Cohen's kappa between those preferences
  and the judge's verdicts (written here: scikit-learn is not a dependency for one formula), with a
  95% percentile bootstrap interval over the rated requests. A judge is **usable** only when at
  least ``min_rated`` requests (default 10) were rated and the interval's *low end* reaches
  ``min_agreement`` (default 0.4, the start of "moderate" agreement on Landis and Koch's scale):
  a judge that agreed with a few ratings by luck is not trusted, and with perfect agreement on
  three ratings every resample agrees too, so the count is required as well.

>>> result = judge(server.endpoint(), rows, tuned_answers, prompt_answers, rules=tasks.get("chat"),
...                ratings=panel_ratings)                          # doctest: +SKIP
>>> print(result.line())                                            # doctest: +SKIP
judge SmolLM2-135M-Instruct: LoRA SFT wins 55% against zero-shot (95% CI 41% to 69%, 24 requests; ...
>>> parse_verdict("**B**"), parse_verdict("Answer A is better."), parse_verdict("I think so")
('B', 'A', None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ftkit.evaluation.evaluate import EvalResult, _interval, _resamples, bootstrap_ci, conversation_text
from ftkit.generation.backend import Backend
from ftkit.tasks import Task

__all__ = ["DEFAULT_RULES", "JudgeResult", "cohen_kappa", "judge", "judge_messages", "judge_variants",
           "parse_verdict", "preferences", "rules_text"]

DEFAULT_RULES = "Answer the request helpfully, correctly and briefly; invent no facts."
# Landis and Koch (1977): 0.41-0.60 is "moderate" agreement, below it "fair" or worse.
MIN_AGREEMENT = 0.4
# Below this many rated requests a bootstrap interval of kappa says little (with perfect agreement
# on three ratings every resample agrees too); the judge is then reported, not used.
MIN_RATED = 10
JUDGE_SYSTEM = "You compare two answers to the same request and reply with one word: A, B or tie."
A, B, TIE = "a", "b", "tie"  # one request's verdict: which variant won


def rules_text(task: Task) -> str:
    """The rules a task's prompts state, as plain text for a judge: its instruction without the
    row's fields, its system prompt and its variants' system prompts (where the house rules of a
    chat live); :data:`DEFAULT_RULES` when they state none.

    >>> from ftkit import tasks
    >>> rules_text(tasks.get("chat").on("shop_chat")).startswith("You are the customer support assistant")
    True
    >>> rules_text(tasks.get("creative")) == DEFAULT_RULES
    True
    """
    texts = [re.sub(r"\{[^{}]*\}", "", task.instruction), task.system or ""]
    for variant in task.variants.values():
        if not isinstance(variant, str):
            instruction, system = variant
            texts += [re.sub(r"\{[^{}]*\}", "", instruction), system() if callable(system) else system or ""]
    kept = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    return "\n".join(kept) or DEFAULT_RULES


def judge_messages(request: str, first: str, second: str, rules: str = DEFAULT_RULES, history: str = "") -> list[dict]:
    """The conversation a judge answers: the rules, the conversation so far (if any), the request,
    the two answers as A (``first``) and B (``second``), and the ask for one word.

    >>> judge_messages("Hi", "Hello", "Go away", "Be kind.")[-1]["content"].splitlines()[-1]
    'Which answer follows the rules and answers the request better? Reply with one word: A, B or tie.'
    """
    before = f"The conversation so far:\n{history.strip()}\n\n" if history and history.strip() else ""
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Rules:\n{rules.strip()}\n\n{before}Request:\n{request.strip()}\n\n"
                                        f"Answer A:\n{first.strip()}\n\nAnswer B:\n{second.strip()}\n\n"
                                        "Which answer follows the rules and answers the request better? Reply "
                                        "with one word: A, B or tie."}]


_ONE_WORD = re.compile(r"^\W*(?:answer\s*)?([ab]|tie|equal|same|both)\W*$", re.I)
_NAMED = re.compile(r"\b(?:answer|assistant|option|response)\s*\(?([AB])\)?(?![\w'])", re.I)
# "A." / "B: ..." / "A is better" / "A" then a new line; not "A good answer ..."
_LEADING = re.compile(r"^\W*([AB])(?:\s*$|\s*[.:),\-]|\s+is\b|\s*\n)")
_TIE = re.compile(r"\b(tie|equal(?:ly)?|the same|both)\b", re.I)
# The choices listed, not one chosen: "A, B or tie" (a small model echoes the question), "A or B", "A/B".
_LISTED = re.compile(r"\b([AB])\s*(?:,|/|\bor\b)\s*(?!\1)[AB]\b")


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a judge's reply, or None when it cannot be read (it names
    both answers, or neither, or lists the choices as a small model echoing the question does).

    >>> [parse_verdict(t) for t in ["A", " b.", "Tie", "Answer: B", "A is better", "(A)", "A good start", ""]]
    ['A', 'B', 'tie', 'B', 'A', 'A', None, None]
    """
    text = (text or "").replace("*", "").replace("`", "").strip()
    if _LISTED.search(text):
        return None
    whole = _ONE_WORD.match(text)
    if whole:
        word = whole.group(1).lower()
        return word.upper() if word in ("a", "b") else "tie"
    text = re.sub(r"^\W*(?:verdict|answer|winner|better)\s*[:\-]\s*", "", text, flags=re.I)
    whole = _ONE_WORD.match(text)
    if whole:
        word = whole.group(1).lower()
        return word.upper() if word in ("a", "b") else "tie"
    found = {m.upper() for m in _NAMED.findall(text)}
    leading = _LEADING.match(text)
    if leading:
        found.add(leading.group(1))
    if _TIE.search(text) and not found:
        return "tie"
    return found.pop() if len(found) == 1 else None


def cohen_kappa(x, y) -> float:
    """Cohen's kappa of two raters' labels of the same items: (observed agreement - chance
    agreement) / (1 - chance agreement); NaN when chance agreement is 1 (both gave one and the
    same label to every item: agreement is perfect but says nothing).

    >>> round(cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"]), 3)  # po 0.75, pe 0.5*0.25+0.5*0.75
    0.5
    """
    x, y = list(x), list(y)
    if len(x) != len(y) or not x:
        raise ValueError(f"kappa needs two equally long, non-empty lists of labels; got {len(x)} and {len(y)}")
    n = len(x)
    observed = sum(p == q for p, q in zip(x, y)) / n
    chance = sum((x.count(c) / n) * (y.count(c) / n) for c in set(x) | set(y))
    return float("nan") if chance >= 1 else (observed - chance) / (1 - chance)


def preferences(ratings: dict[tuple[int, str], bool], names: tuple[str, str], rows: int) -> dict[int, str]:
    """Which answer people preferred, per request where both answers were rated: ``"a"`` (``names[0]``
    up, ``names[1]`` down), ``"b"`` (the reverse) or ``"tie"`` (both up or both down). Ratings of
    other variants, and requests where only one answer was rated, are left out.

    >>> preferences({(0, "x"): True, (0, "y"): False, (1, "x"): False, (1, "y"): False, (2, "x"): True},
    ...             ("x", "y"), rows=3)
    {0: 'a', 1: 'tie'}
    """
    a, b = names
    outside = sorted(i for i, name in ratings if name in names and not 0 <= i < rows)
    if outside:
        raise ValueError(f"ratings for row {outside[0]}, but only {rows} rows were judged; pass the ratings of "
                         "these rows (keys are (row index, variant name))")
    out = {}
    for i in sorted({i for i, name in ratings if name in names}):
        if (i, a) in ratings and (i, b) in ratings:
            up_a, up_b = bool(ratings[(i, a)]), bool(ratings[(i, b)])
            out[i] = TIE if up_a == up_b else A if up_a else B
    return out


@dataclass
class JudgeResult:
    """What :func:`judge` found: ``a``'s win rate against ``b`` by the judge, with its 95% interval,
    and the judge's agreement with the ratings, with its own (see the module's docstring)."""

    a: str  # the tuned variant
    b: str  # the prompt it is compared with
    win_rate: float  # share of requests a wins, ties counted half
    ci_low: float
    ci_high: float
    rows: int
    kappa: float | None  # None: no request had both answers rated
    kappa_low: float | None
    kappa_high: float | None
    rated: int  # requests with both answers rated
    min_agreement: float = MIN_AGREEMENT
    min_rated: int = MIN_RATED
    judge: str = ""  # the judging model's name
    wins: int = 0
    ties: int = 0
    losses: int = 0
    consistency: float = 0.0  # share of requests whose two orders were readable and agreed
    unparsable: int = 0  # replies (of 2 x rows) that named no verdict, counted as ties
    first_shown: float = 0.0  # share of all replies that picked the answer shown first
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # one row per request

    @property
    def checked(self) -> bool:
        """Whether the agreement could be measured: enough rated requests and a defined kappa."""
        return (self.kappa is not None and not np.isnan(self.kappa) and self.kappa_low is not None
                and self.rated >= self.min_rated)

    @property
    def usable(self) -> bool:
        """True when the agreement was checked (at least ``min_rated`` rated requests) and the low
        end of kappa's 95% interval reaches ``min_agreement``: not the point estimate, which a few
        lucky ratings can lift."""
        return self.checked and self.kappa_low >= self.min_agreement

    def why_not(self) -> str | None:
        """Why the judge is not used, in words; None when it is usable."""
        if self.kappa is None:
            return "no ratings to check it against"
        if np.isnan(self.kappa):
            return (f"agreement undefined: the judge and the ratings each gave all {self.rated} rated requests one "
                    "and the same verdict")
        if self.rated < self.min_rated:
            return f"only {self.rated} rated requests, {self.min_rated} needed to check it"
        if self.kappa < self.min_agreement:
            return f"agreement {self.kappa:.2f} below {self.min_agreement:.2f}"
        if not self.usable:
            return (f"agreement {self.kappa:.2f}, but its 95% interval reaches down to {self.kappa_low:.2f}, below "
                    f"{self.min_agreement:.2f}: rate more requests")
        return None

    def line(self) -> str:
        """One line: the win rate with its interval, how the judge behaved, its agreement with the
        ratings (and how many), and whether it is used and why not."""
        who = f"judge {self.judge}: " if self.judge else "judge: "
        said = (f"{who}{self.a} wins {self.win_rate:.0%} against {self.b} (95% CI {self.ci_low:.0%} to "
                f"{self.ci_high:.0%}, {self.rows} requests; wins {self.wins}, ties {self.ties}, losses {self.losses}); "
                f"same verdict in both orders {self.consistency:.0%}, {self.unparsable} unreadable replies")
        if self.kappa is not None and not np.isnan(self.kappa):
            interval = (f"95% CI {self.kappa_low:.2f} to {self.kappa_high:.2f}, " if self.kappa_low is not None
                        else "no interval: every resample was one verdict, ")  # a single rated request
            said += f"; agreement with ratings kappa {self.kappa:.2f} ({interval}{self.rated} rated requests)"
        reason = self.why_not()
        return said + (f"; not used: {reason}" if reason else f"; used: agreement clears {self.min_agreement:.2f}")

    def __str__(self) -> str:
        return self.line()


def _short(name: str) -> str:
    """A model's name without its folder (a local model's name is its path)."""
    return str(name).rstrip("/").rsplit("/", 1)[-1] or str(name)


def _pick(verdict: str | None, a_first: bool) -> str:
    """Which variant a reply picked, from the position it named and the order shown."""
    if verdict in ("A", "B"):
        return A if (verdict == "A") == a_first else B
    return TIE


def judge(backend, rows, answers_a, answers_b, *, rules: str | Task | None = None,
          names: tuple[str, str] = ("LoRA SFT", "zero-shot"), ratings: dict[tuple[int, str], bool] | None = None,
          min_agreement: float = MIN_AGREEMENT, min_rated: int = MIN_RATED, max_new_tokens: int = 8,
          batch_size: int = 8, n_boot: int = 1000, seed: int = 0, progress: bool = True) -> JudgeResult:
    """Ask ``backend`` which of two answers to each request is better, in both orders.

    ``rows``: the requests, as dicts with ``prompt`` (and ``history``: the conversation so far, as
    text or as messages ending with this user turn); ``answers_a``/``answers_b``: what the two
    variants ``names`` answered, row by row. ``rules``: text, or a task whose prompts state them
    (:func:`rules_text`). ``ratings``: ``{(row index, variant name): True/False}`` as the panels
    collect them. Greedy, ``max_new_tokens`` per reply (a word, and room for "Answer: A").

    >>> result = judge(LocalModel(model, tok), rows, tuned, prompted, rules=tasks.get("chat"))  # doctest: +SKIP
    """
    if not isinstance(backend, Backend):
        raise TypeError(f"the judge must be a generation backend, got {type(backend).__name__}: pass "
                        "LocalModel(model, tokenizer), an Endpoint, or server.endpoint() of ftkit serve")
    rows, answers_a, answers_b = list(rows), [str(t) for t in answers_a], [str(t) for t in answers_b]
    if not rows or not len(rows) == len(answers_a) == len(answers_b):
        raise ValueError(f"judge needs as many answers of each variant as rows, and at least one row; got {len(rows)} "
                         f"rows, {len(answers_a)} answers of {names[0]!r}, {len(answers_b)} of {names[1]!r}")
    if names[0] == names[1]:
        raise ValueError(f"the two variants need different names; got {names}")
    rules = rules_text(rules) if isinstance(rules, Task) else (rules or DEFAULT_RULES)
    asked = []
    for a_first in (True, False):
        for row, x, y in zip(rows, answers_a, answers_b):
            history = row.get("history") or ""
            if not isinstance(history, str):  # messages ending with the user turn being answered
                history = conversation_text(history[:-1] if history and history[-1]["role"] == "user" else history)
            first, second = (x, y) if a_first else (y, x)
            asked.append(judge_messages(str(row["prompt"]), first, second, rules, history))
    replies = [g.text for g in backend.generate(asked, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                progress=progress)]
    n = len(rows)
    read = [parse_verdict(t) for t in replies]
    ab = [_pick(v, True) for v in read[:n]]
    ba = [_pick(v, False) for v in read[n:]]
    verdicts = [p if p == q else TIE for p, q in zip(ab, ba)]
    scores = np.array([{A: 1.0, TIE: 0.5, B: 0.0}[v] for v in verdicts])
    win_rate, low, high = bootstrap_ci(scores, n_boot, seed)
    agreed = [p is not None and q is not None and _pick(p, True) == _pick(q, False) for p, q in zip(read[:n], read[n:])]
    said = [v for v in read if v in ("A", "B")]

    people = preferences(ratings or {}, names, n)
    kappa = kappa_low = kappa_high = None
    if people:
        idx = sorted(people)
        theirs, ours = [people[i] for i in idx], [verdicts[i] for i in idx]
        kappa = cohen_kappa(ours, theirs)
        boots = np.array([cohen_kappa([ours[j] for j in d], [theirs[j] for j in d])
                          for d in _resamples(len(idx), n_boot, seed)])  # the evaluation's own resampling
        boots = boots[~np.isnan(boots)]
        if len(boots):
            kappa_low, kappa_high = _interval(boots)

    table = pd.DataFrame({"request": [str(r["prompt"]) for r in rows], f"{names[0]}": answers_a,
                          f"{names[1]}": answers_b, "reply (a first)": replies[:n], "reply (b first)": replies[n:],
                          "verdict": verdicts, "rated": [people.get(i, "") for i in range(n)]})  # "": not rated
    return JudgeResult(a=names[0], b=names[1], win_rate=win_rate, ci_low=low, ci_high=high, rows=n, kappa=kappa,
                       kappa_low=kappa_low, kappa_high=kappa_high, rated=len(people), min_agreement=min_agreement,
                       min_rated=min_rated, judge=_short(backend.name), wins=verdicts.count(A),
                       ties=verdicts.count(TIE), losses=verdicts.count(B), consistency=float(np.mean(agreed)),
                       unparsable=read.count(None), first_shown=(said.count("A") / len(read)), table=table)


def judge_variants(backend, result: EvalResult, a: str, b: str, *, ratings: dict[tuple[int, str], bool] | None = None,
                   rules: str | Task | None = None, limit: int | None = None, **options) -> JudgeResult:
    """:func:`judge` on two variants of an evaluation: the requests and each variant's answers from
    ``result``'s table, ``ratings`` keyed as ComparePanel keys them (``(row index, variant name)``),
    ``limit``: only the first rows (and their ratings). Other options as for :func:`judge`.

    >>> verdict = judge_variants(server.endpoint(), result, "LoRA SFT", "zero-shot", rules=task,
    ...                          ratings=compare_panel_ratings)    # doctest: +SKIP
    """
    n = len(result.table) if limit is None else min(limit, len(result.table))
    table = result.table.iloc[:n]
    histories = table["history"] if "history" in table.columns else [""] * n  # a conversation's earlier turns
    rows = [{"prompt": p, "history": h} for p, h in zip(table["input"], histories)]
    kept = {k: v for k, v in (ratings or {}).items() if k[0] < n}
    return judge(backend, rows, result.outputs(a)[:n], result.outputs(b)[:n], rules=rules, names=(a, b),
                 ratings=kept, **options)

