"""The judge for open-ended answers: both orders, unreadable replies, agreement with ratings, and the
prompt it sends; with a scripted backend (it records what it was asked) and through an Endpoint
against the fake OpenAI server."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from ftkit import tasks
from ftkit.data.examples.house import CHAT_SYSTEM
from ftkit.evaluation.evaluate import EvalResult
from ftkit.evaluation.judge import (DEFAULT_RULES, cohen_kappa, judge, judge_variants, parse_verdict, preferences,
                                   rules_text)
from ftkit.generation.backend import Backend, Generation
from ftkit.generation.endpoint import Endpoint

from fake_openai import KEY, KEY_ENV, FakeOpenAI, completion


class ScriptedJudge:
    """A generation backend whose reply to each conversation is ``reply(user_text)``; it records
    every conversation it was sent and the options it was asked with."""

    hosted = False
    warmup_rows = 0

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[list[dict]] = []
        self.options: list[dict] = []

    @property
    def name(self) -> str:
        return "scripted"

    def generate(self, conversations, *, max_new_tokens=32, **options):
        self.prompts += conversations
        self.options.append(dict(options, max_new_tokens=max_new_tokens))
        return [Generation(self.reply(c[-1]["content"]), 0, 0, 0.0) for c in conversations]

    def prompt_tokens(self, conversations):
        return None

    def cost_usd(self, prompt_tokens, new_tokens):
        return None


def shown(text: str) -> tuple[str, str]:
    """The two answers a judge prompt shows, as (A, B)."""
    m = re.search(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich answer", text, flags=re.S)
    return m.group(1), m.group(2)


def prefers_good(text: str) -> str:
    """A fair judge: the answer saying "good" wins, wherever it is shown; both or neither: a tie."""
    first, second = shown(text)
    if ("good" in first) == ("good" in second):
        return "tie"
    return "A" if "good" in first else "B"


def rows(n):
    return [{"prompt": f"request {i}"} for i in range(n)]


def test_the_scripted_judge_is_a_backend():
    assert isinstance(ScriptedJudge(prefers_good), Backend)


# --- position bias --------------------------------------------------------------------------------

def test_a_judge_that_always_says_a_gives_half_and_no_consistency():
    always_a = ScriptedJudge(lambda text: "A")
    result = judge(always_a, rows(5), ["good"] * 5, ["bad"] * 5, progress=False)
    # Each request: a wins when shown first, loses when shown second -> a tie by the both-orders rule.
    assert result.win_rate == 0.5 and (result.wins, result.ties, result.losses) == (0, 5, 0)
    assert result.ci_low == result.ci_high == 0.5
    assert result.consistency == 0.0
    assert result.first_shown == 1.0 and result.unparsable == 0
    assert len(always_a.prompts) == 10  # every pair asked twice


def test_a_fair_judge_gives_the_better_variant_every_request_in_both_orders():
    result = judge(ScriptedJudge(prefers_good), rows(4), ["good"] * 4, ["bad"] * 4, progress=False)
    assert result.win_rate == 1.0 and result.wins == 4
    assert result.consistency == 1.0
    assert result.first_shown == 0.5  # it picked the first answer in one order, the second in the other


def test_a_win_in_one_order_and_a_tie_in_the_other_is_a_tie():
    # First order (a shown first): "A" = a wins. Second order: "tie". Conservative rule: a tie, inconsistent.
    replies = iter(["A", "A", "tie", "tie"])
    result = judge(ScriptedJudge(lambda text: next(replies)), rows(2), ["x", "x"], ["y", "y"], progress=False)
    assert result.win_rate == 0.5 and result.ties == 2 and result.consistency == 0.0


# --- unreadable replies ---------------------------------------------------------------------------

def test_unreadable_replies_count_as_ties_and_are_counted():
    # Row 0 is unreadable in both orders, row 1 readable in both (a wins), row 2 unreadable in the second.
    replies = iter(["I cannot say.", "A", "A", "Hmm, maybe", "B", "Maybe"])
    result = judge(ScriptedJudge(lambda text: next(replies)), rows(3), ["a0", "a1", "a2"], ["b0", "b1", "b2"],
                   progress=False)
    assert result.unparsable == 3
    assert list(result.table["verdict"]) == ["tie", "a", "tie"]
    assert result.win_rate == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result.consistency == pytest.approx(1 / 3)  # two unreadable rows are not "consistent"
    assert "3 unreadable replies" in result.line()


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("b", "B"), (" B.", "B"), ("Tie", "tie"), ("tie.", "tie"), ("**A**", "A"), ("`B`", "B"),
    ("Answer: B", "B"), ("Answer B", "B"), ("(A)", "A"), ("A is better because it greets.", "A"),
    ("A\nIt follows the rules.", "A"), ("I prefer Answer A.", "A"), ("Both are equally good.", "tie"),
    ("A good answer would greet.", None), ("Answer A is good but Answer B is better", None), ("", None),
    ("Sure, here is my verdict", None), ("A, B or tie.", None), ("A or B", None), ("B/A", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# --- agreement with ratings -----------------------------------------------------------------------

# Ten requests. The fair judge's verdicts follow the answers; the ratings agree on 7 of them.
#   judge:  a a a a b b b tie tie tie      (a 4/10, b 3/10, tie 3/10)
#   people: a a a b b b a tie tie b        (a 4/10, b 4/10, tie 2/10)
# observed agreement po = 7/10 = 0.70 (rows 0, 1, 2, 4, 5, 7, 8)
# chance agreement pe = 0.4*0.4 + 0.3*0.4 + 0.3*0.2 = 0.16 + 0.12 + 0.06 = 0.34
# kappa = (0.70 - 0.34) / (1 - 0.34) = 0.36 / 0.66 = 6/11 = 0.5454...
JUDGE_SAYS = ["a", "a", "a", "a", "b", "b", "b", "tie", "tie", "tie"]
PEOPLE_SAY = ["a", "a", "a", "b", "b", "b", "a", "tie", "tie", "b"]
NAMES = ("LoRA SFT", "zero-shot")


def answers_for(verdicts):
    a = ["good answer" if v == "a" else "bad answer" if v == "b" else "good too" for v in verdicts]
    b = ["bad answer" if v == "a" else "good answer" if v == "b" else "good too" for v in verdicts]
    return a, b


def ratings_for(preferred):
    out = {}
    for i, p in enumerate(preferred):
        up_a, up_b = {"a": (True, False), "b": (False, True), "tie": (i % 2 == 0, i % 2 == 0)}[p]
        out[(i, NAMES[0])], out[(i, NAMES[1])] = up_a, up_b
    return out


def test_cohen_kappa_by_hand():
    assert cohen_kappa(JUDGE_SAYS, PEOPLE_SAY) == pytest.approx(6 / 11)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == 1.0
    assert math.isnan(cohen_kappa(["tie"] * 3, ["tie"] * 3))  # one label for everything: undefined
    with pytest.raises(ValueError, match="equally long"):
        cohen_kappa(["a"], ["a", "b"])


def test_thumbs_become_preferences():
    ratings = {(0, "x"): True, (0, "y"): False, (1, "x"): False, (1, "y"): True, (2, "x"): True, (2, "y"): True,
               (3, "x"): False, (3, "y"): False, (4, "x"): True, (4, "other"): False, (5, "other"): True}
    assert preferences(ratings, ("x", "y"), rows=6) == {0: "a", 1: "b", 2: "tie", 3: "tie"}
    with pytest.raises(ValueError, match="ratings for row 7, but only 6 rows"):
        preferences({(7, "x"): True}, ("x", "y"), rows=6)


def test_a_judge_with_known_agreement_reports_its_kappa_and_interval():
    a, b = answers_for(JUDGE_SAYS)
    result = judge(ScriptedJudge(prefers_good), rows(10), a, b, names=NAMES, ratings=ratings_for(PEOPLE_SAY),
                   progress=False)
    assert list(result.table["verdict"]) == JUDGE_SAYS
    assert result.win_rate == pytest.approx((4 + 0.5 * 3) / 10)
    assert result.rated == 10 and result.kappa == pytest.approx(6 / 11)
    assert result.kappa_low < result.kappa < result.kappa_high
    # 0.55 clears 0.40, but ten ratings leave an interval that reaches far below it: not used.
    assert not result.usable
    assert result.kappa_low < 0.4
    assert "reaches down to" in result.line() and "10 rated requests" in result.line()


def test_a_judge_that_agrees_with_enough_ratings_is_usable():
    says = ["a", "b", "tie"] * 4
    a, b = answers_for(says)
    result = judge(ScriptedJudge(prefers_good), rows(12), a, b, names=NAMES, ratings=ratings_for(says),
                   progress=False)
    assert result.kappa == 1.0 and result.kappa_low == 1.0 and result.usable
    assert "used: agreement clears 0.40" in result.line()


def test_a_few_agreeing_ratings_do_not_make_a_judge_usable():
    says = ["a", "b", "tie"]
    a, b = answers_for(says)
    result = judge(ScriptedJudge(prefers_good), rows(3), a, b, names=NAMES, ratings=ratings_for(says),
                   progress=False)
    assert result.kappa == 1.0 and not result.usable
    assert result.line().endswith("not used: only 3 rated requests, 10 needed to check it")
    one = judge(ScriptedJudge(prefers_good), rows(2), ["good", "bad"], ["bad", "good"], names=NAMES,
                ratings={(0, NAMES[0]): True, (0, NAMES[1]): False, (1, NAMES[0]): True}, progress=False)
    # One rated request: each side used one label, so chance agreement is 1 and kappa is undefined.
    assert one.rated == 1 and math.isnan(one.kappa) and "agreement undefined" in one.line()


def test_a_judge_below_the_agreement_and_one_without_ratings_are_not_used():
    a, b = answers_for(JUDGE_SAYS)
    always_tie = judge(ScriptedJudge(lambda text: "tie"), rows(10), a, b, names=NAMES,
                       ratings=ratings_for(PEOPLE_SAY), progress=False)
    # The judge says tie to all: pe = share of people's ties = po, so kappa = 0.
    assert always_tie.kappa == pytest.approx(0.0) and not always_tie.usable
    assert always_tie.line().endswith("not used: agreement 0.00 below 0.40")
    unrated = judge(ScriptedJudge(prefers_good), rows(10), a, b, names=NAMES, progress=False)
    assert unrated.kappa is None and unrated.kappa_low is None and unrated.rated == 0 and not unrated.usable
    assert unrated.line().endswith("not used: no ratings to check it against")


# --- the prompt ---------------------------------------------------------------------------------

def test_the_prompt_shows_both_answers_in_both_orders_with_the_rules_and_the_conversation():
    scripted = ScriptedJudge(lambda text: "A")
    asked = [{"prompt": "Where is my parcel?", "history": [{"role": "user", "content": "Hi, I'm Ann"},
                                                           {"role": "assistant", "content": "Hi Ann!"},
                                                           {"role": "user", "content": "Where is my parcel?"}]}]
    judge(scripted, asked, ["It left today, Ann."], ["No idea."], rules=tasks.get("chat").on("shop_chat"),
          progress=False)
    first, second = (c[-1]["content"] for c in scripted.prompts)
    assert shown(first) == ("It left today, Ann.", "No idea.")
    assert shown(second) == ("No idea.", "It left today, Ann.")
    for text in (first, second):
        assert CHAT_SYSTEM in text  # the shop's house rules
        assert "user: Hi, I'm Ann\n\nassistant: Hi Ann!" in text  # the turns before, not the answered one twice
        assert "Request:\nWhere is my parcel?" in text
        assert text.endswith("Reply with one word: A, B or tie.")
    assert scripted.prompts[0][0]["role"] == "system" and "one word" in scripted.prompts[0][0]["content"]
    assert scripted.options[0]["max_new_tokens"] == 8


def test_rules_from_a_task_text_or_nothing():
    blurbs = rules_text(tasks.get("creative").on("shop_blurbs"))
    assert blurbs.startswith("Write a product blurb in the Hearth & Co. house style") and "{prompt}" not in blurbs
    assert rules_text(tasks.get("creative")) == DEFAULT_RULES  # its instruction is the bare request
    scripted = ScriptedJudge(lambda text: "A")
    judge(scripted, rows(1), ["x"], ["y"], rules="No exclamation marks.", progress=False)
    assert "Rules:\nNo exclamation marks." in scripted.prompts[0][-1]["content"]
    judge(scripted, rows(1), ["x"], ["y"], progress=False)
    assert f"Rules:\n{DEFAULT_RULES}" in scripted.prompts[-1][-1]["content"]


def test_what_the_judge_refuses():
    with pytest.raises(TypeError, match="LocalModel\\(model, tokenizer\\)"):
        judge(object(), rows(1), ["x"], ["y"])
    with pytest.raises(ValueError, match="2 rows, 1 answers"):
        judge(ScriptedJudge(prefers_good), rows(2), ["x"], ["y", "z"])
    with pytest.raises(ValueError, match="different names"):
        judge(ScriptedJudge(prefers_good), rows(1), ["x"], ["y"], names=("same", "same"))


# --- from an evaluation ----------------------------------------------------------------------------

def test_judge_variants_reads_an_evaluation_and_the_compare_panel_ratings():
    verdicts = ["a", "b", "a", "tie"]
    tuned, prompted = answers_for(verdicts)
    table = pd.DataFrame({"history": ["user: Hi\n\nassistant: Hello"] * 4, "input": [f"q{i}" for i in range(4)],
                          "reference": ["r"] * 4, "LoRA SFT: output": tuned, "zero-shot: output": prompted,
                          "8-shot: output": ["z"] * 4})
    result = EvalResult(table=table, summary=pd.DataFrame(),
                        scores={name: {"rouge_l": np.zeros(4)} for name in ("zero-shot", "8-shot", "LoRA SFT")})
    # As ComparePanel keys them; ratings of another variant and of a row past the limit are left out.
    ratings = {(0, "LoRA SFT"): True, (0, "zero-shot"): False, (1, "LoRA SFT"): True, (1, "zero-shot"): False,
               (2, "8-shot"): True, (3, "LoRA SFT"): True, (3, "zero-shot"): True}
    scripted = ScriptedJudge(prefers_good)
    out = judge_variants(scripted, result, "LoRA SFT", "zero-shot", ratings=ratings, limit=3, progress=False)
    assert (out.a, out.b, out.rows, out.rated) == ("LoRA SFT", "zero-shot", 3, 2)
    assert list(out.table["verdict"]) == ["a", "b", "a"] and out.wins == 2 and out.losses == 1
    assert list(out.table["rated"]) == ["a", "a", ""]  # "": not rated
    assert len(scripted.prompts) == 6
    assert "The conversation so far:\nuser: Hi\n\nassistant: Hello" in scripted.prompts[0][-1]["content"]


# --- through an endpoint --------------------------------------------------------------------------

def test_a_judge_behind_an_openai_compatible_endpoint(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def reply(n, body):
        text = prefers_good(body["messages"][-1]["content"])
        return 200, completion(f"Answer: {text}", 50, 2), {}, 0.0

    a, b = answers_for(JUDGE_SAYS)
    with FakeOpenAI(reply) as fake:
        endpoint = Endpoint(base_url=fake.base_url, model="fake-model", api_key_env=KEY_ENV)
        result = judge(endpoint, rows(10), a, b, names=NAMES, ratings=ratings_for(PEOPLE_SAY), progress=False)
    assert len(fake.requests) == 20
    sent = fake.requests[0]["body"]
    assert sent["max_tokens"] == 8 and sent["temperature"] == 0  # greedy, a word or two
    assert result.judge == "fake-model" and result.unparsable == 0
    assert list(result.table["verdict"]) == JUDGE_SAYS
    assert result.kappa == pytest.approx(6 / 11) and result.consistency == 1.0
