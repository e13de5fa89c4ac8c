"""The verdict floor: below it on every compared variant, the verdict says "neither works yet"
(issue 30: pass@1 0.05 everywhere read as "prompting is enough"); above it, the verdict is as before."""

import numpy as np
import pytest

from ftkit.evaluation.evaluate import EvalResult
from ftkit.evaluation.floor import FLOORS, basis, floor
from ftkit.evaluation.verdict import advise
from test_verdict import PROMPT_36, TUNED_36, FakeRun, StandInJudge, result, scored

TRY = ("try a larger model through an endpoint (ftkit's Endpoint, notebook 08), more training rows, or more "
       "training steps")


def renamed(evaluation: EvalResult, metric: str) -> EvalResult:
    """``evaluation`` (scored on exact_match by the helpers) with its scores under ``metric``."""
    scores = {name: {metric: s["exact_match"]} for name, s in evaluation.scores.items()}
    return EvalResult(table=evaluation.table, summary=evaluation.summary.rename(columns={"exact_match": metric}),
                      scores=scores, n_boot=evaluation.n_boot, seed=evaluation.seed)


def issue_30() -> EvalResult:
    """20 code tasks: zero-shot passes none, 8-shot and the tuned model one each (0.05), on other
    rows; every prompt sends as many tokens as the tuned model."""
    one, other = [1] + [0] * 19, [0, 1] + [0] * 18
    return renamed(scored({"zero-shot": [0] * 20, "8-shot": one, "LoRA SFT": other},
                          {"zero-shot": 40, "8-shot": 40, "LoRA SFT": 40}), "pass_at_1")


def test_pass_at_1_of_0_05_everywhere_is_neither_works_yet_with_the_best_named():
    advice = advise(issue_30(), ["zero-shot", "8-shot"], {"LoRA SFT": FakeRun(600)})
    assert advice.floor == 0.1 and advice.below_floor
    assert advice.conclusion == "neither works yet"
    # A tie at the top names both; the difference is still said, and what to try.
    assert advice.reason.startswith("the best are LoRA SFT and 8-shot (0.050 each), below the floor 0.100 of pass_at_1, "
                                    "prompted or tuned; LoRA SFT - 8-shot is +0.00 pass_at_1 (95% CI ")
    assert advice.reason.endswith(TRY)
    assert "floor: below 0.100 pass_at_1 a variant does not work yet (fewer than 1 task in 10 solved)" in advice.lines()
    assert advice.row()["floor"] == 0.1 and advice.row()["verdict"] == "neither works yet"
    assert advice.as_dict()["floor"] == 0.1
    # One best: 3 of 40 rows (0.075) against 1 of 40 (0.025), both under exact match's 0.10.
    lone = advise(result([1] * 3 + [0] * 37, [1] + [0] * 39), ["8-shot"], ["LoRA SFT"])
    assert lone.conclusion == "neither works yet"
    assert lone.reason.startswith("the best is 8-shot (0.075), below the floor 0.100 of exact_match")


def test_below_the_floor_a_usable_judge_is_shown_only_and_its_note_says_why():
    judge = StandInJudge("LoRA SFT", "8-shot", 0.7, 0.6, 0.8, rows=20)
    advice = advise(issue_30(), ["zero-shot", "8-shot"], ["LoRA SFT"], judge=judge)
    assert advice.conclusion == "neither works yet" and not advice.judge_decides
    assert advice.judge_note == "the judge is shown only: neither scores above the floor 0.100 of pass_at_1"
    # Nothing above 0: the note of before floors.
    zero = advise(result([0] * 10, [0] * 10), ["8-shot"], ["LoRA SFT"], judge=judge)
    assert zero.conclusion == "neither works yet" and zero.reason.startswith("no answer scores above 0 on exact_match")
    assert zero.judge_note == "the judge is shown only: no answer scores above 0 on exact_match"


def test_above_the_floor_the_conclusions_are_those_of_before():
    # 10 of 40 against 36 of 40: 0.25 and 0.90, both above 0.10; the tuned model wins beyond noise.
    clear = advise(result([0] * 30 + [1] * 10, [1] * 36 + [0] * 4), ["8-shot"], {"LoRA SFT": FakeRun(600)})
    assert clear.conclusion == "fine-tuning pays" and not clear.below_floor
    # 3 of 36 (0.083, below) against 6 of 36 (0.167, above): one variant works, so the floor says nothing.
    mixed = advise(result(PROMPT_36, TUNED_36), ["8-shot"], {"LoRA SFT": FakeRun(60)})
    assert mixed.floor == 0.1 and not mixed.below_floor
    assert mixed.conclusion == "no evidence either way"
    no_floor = advise(result(PROMPT_36, TUNED_36), ["8-shot"], {"LoRA SFT": FakeRun(60)}, floor=0)
    assert (mixed.conclusion, mixed.reason) == (no_floor.conclusion, no_floor.reason)
    # At the floor is not below it: 4 of 40 is 0.10 exactly.
    at = advise(result([1] * 4 + [0] * 36, [0] * 4 + [1] * 4 + [0] * 32, prompt_tokens=(100, 100)), ["8-shot"],
                ["LoRA SFT"])
    assert at.prompt_score == 0.1 and at.conclusion == "prompting is enough"


def labelled(k: int) -> EvalResult:
    """40 rows whose references cycle through ``k`` labels, scored as evaluate() scores them with a
    label set (``label_accuracy`` beside exact match): the prompt right on rows 0-7, the tuned model
    on rows 8-15 (0.20 each, a difference of 0), at the same prompt tokens."""
    evaluation = scored({"8-shot": [1] * 8 + [0] * 32, "LoRA SFT": [0] * 8 + [1] * 8 + [0] * 24},
                        {"8-shot": 40, "LoRA SFT": 40})
    for s in evaluation.scores.values():
        s["label_accuracy"] = s["exact_match"].copy()
    evaluation.summary["label_accuracy"] = evaluation.summary["exact_match"]
    evaluation.table["reference"] = [f"Queue {i % k}" for i in range(40)]
    return evaluation


def test_exact_match_s_floor_is_chance_for_the_labels_known():
    assert floor("exact_match", labels=4) == 0.25 and floor("exact_match", labels=77) == pytest.approx(0.012987, abs=1e-6)
    assert floor("exact_match", labels=["refund", "shipping", "refund", "other", "order_status"]) == 0.25
    assert floor("label_accuracy", labels=4) == 0.25
    assert floor("exact_match") == 0.1 and floor("exact_match", labels=1) == 0.1  # unknown, or no choice to make
    assert floor("pass_at_1", labels=4) == 0.1  # a label set is no chance level for code
    assert basis("exact_match", labels=77) == "chance for 77 labels, 1/77"
    # 0.20 on both: below chance for 4 labels (the references name them), above it for 77.
    four = advise(labelled(4), ["8-shot"], ["LoRA SFT"])
    assert four.floor == 0.25 and four.floor_basis == "chance for 4 labels, 1/4"
    assert four.conclusion == "neither works yet"
    assert four.reason.startswith("the best are LoRA SFT and 8-shot (0.200 each), below the floor 0.250 of exact_match")
    many = advise(labelled(4), ["8-shot"], ["LoRA SFT"], labels=[f"Queue {i}" for i in range(77)])
    assert many.floor == pytest.approx(1 / 77) and many.conclusion == "prompting is enough"
    # No label set: the fixed 0.10, which 0.20 is above.
    free = advise(scored({"8-shot": [1] * 8 + [0] * 32, "LoRA SFT": [0] * 8 + [1] * 8 + [0] * 24},
                         {"8-shot": 40, "LoRA SFT": 40}), ["8-shot"], ["LoRA SFT"])
    assert free.floor == 0.1 and free.conclusion == "prompting is enough"


def test_an_explicit_floor_of_0_restores_the_verdict_of_before_floors():
    old = advise(issue_30(), ["zero-shot", "8-shot"], ["LoRA SFT"], floor=0)
    assert old.conclusion == "prompting is enough"  # what issue 30 reported
    assert old.floor == 0 and old.floor_basis == "given as floor="
    zero = advise(result([0] * 10, [0] * 10), ["8-shot"], ["LoRA SFT"], floor=0)
    assert zero.conclusion == "neither works yet"  # an exact 0 everywhere still is
    # A metric with no floor in the table behaves as before too, and shows no floor line.
    unknown = advise(renamed(scored({"8-shot": [1] + [0] * 19, "LoRA SFT": [0, 1] + [0] * 18},
                                    {"8-shot": 40, "LoRA SFT": 40}), "json_valid"), ["8-shot"], ["LoRA SFT"])
    assert floor("json_valid") is None and unknown.floor is None and unknown.conclusion == "prompting is enough"
    assert not any(line.startswith("floor:") for line in unknown.lines()) and unknown.row()["floor"] is None


def test_every_floor_in_the_table_is_a_score_with_its_reasons():
    for metric, entry in FLOORS.items():
        assert 0 < entry.value < 1 and entry.basis and len(entry.reason) > len(entry.basis), metric
        assert floor(metric) == entry.value and basis(metric) == entry.basis


def test_a_task_states_its_own_floor_where_the_metric_s_would_misread_it():
    """Creative writing: one reference among many good texts, so ROUGE-L 0.08 is not "not working"
    there, as it is for a summary; the pipeline passes the task's Floor, with its basis."""
    from ftkit import tasks

    creative = tasks.get("creative").floors["rouge_l"]
    assert creative[0] < FLOORS["rouge_l"].value and tasks.get("summarization").floors == {}
    table = renamed(scored({"8-shot": [0.08] * 20, "LoRA SFT": [0.09] * 20}, {"8-shot": 40, "LoRA SFT": 40}),
                    "rouge_l")
    assert advise(table, ["8-shot"], ["LoRA SFT"]).conclusion == "neither works yet"  # the metric's floor, 0.15
    written = advise(table, ["8-shot"], ["LoRA SFT"], floor=creative)
    assert written.conclusion != "neither works yet" and written.floor == 0.05
    assert written.floor_basis == creative[1] and any(creative[1] in line for line in written.lines())
