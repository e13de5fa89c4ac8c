"""The code task's tests column: one program (HumanEval's ``check(candidate)``) or a list of programs
(MBPP's asserts), as pass_at_1 runs them in the sandbox, from a row and through the pipeline."""

from __future__ import annotations

import csv
import json

import pytest

from ftkit.evaluation.metrics import code_tests, pass_at_1
from ftkit.evaluation.sandbox import run_tests

RIGHT = "def add(a, b):\n    return a + b"
WRONG = "def add(a, b):\n    return a * b"   # add(2, 2) is right: only some asserts catch it

# HumanEval's shape: constants, then a multi-line check(candidate) that only its harness calls.
CHECK = '''

METADATA = {"author": "ftkit", "dataset": "test"}


def check(candidate):
    assert candidate(2, 2) == 4
    assert candidate(2, 3) == 5
    for a in range(3):
        assert candidate(a, -a) == 0
'''


def score(answer: str, row: dict):
    return pass_at_1(f"```python\n{answer}\n```", "", row)


def test_a_multi_line_check_program_in_one_string_passes_a_right_answer_and_fails_a_wrong_one():
    row = {"tests": CHECK + "\ncheck(add)\n"}
    assert code_tests(row) == [row["tests"]]          # one program, not one per line
    right, wrong = score(RIGHT, row), score(WRONG, row)
    assert (float(right), right.note) == (1.0, "passed")
    assert (float(wrong), wrong.note) == (0.0, "assert failed: assert candidate(2, 3) == 5")


@pytest.mark.parametrize("column", ["test", "tests"])  # HumanEval names it `test`
def test_an_uncalled_check_is_called_on_the_entry_point(column):
    row = {column: CHECK, "entry_point": "add"}
    assert code_tests(row) == [CHECK, "check(add)"]
    right, wrong = score(RIGHT, row), score(WRONG, row)
    assert (float(right), right.note) == (1.0, "passed")
    assert (float(wrong), wrong.note) == (0.0, "assert failed: assert candidate(2, 3) == 5")
    # The run names the item that failed: the call, whose reason quotes the assert inside check.
    out = run_tests(WRONG, code_tests(row))
    assert out.failed_test == "check(add)" and out.reason == "assert failed: assert candidate(2, 3) == 5"
    # A check that is called already is not called twice; an uncalled one with no entry point is refused.
    assert code_tests({"tests": CHECK + "check(add)", "entry_point": "add"}) == [CHECK + "check(add)"]
    with pytest.raises(ValueError, match=r"defines check\(candidate\) but never calls it.*'entry_point' column"):
        code_tests({"tests": CHECK})


def test_an_mbpp_assert_list_runs_item_by_item_after_the_setup():
    tests = ["assert add(2, 2) == 4", "assert isclose(add(0.1, 0.2), 0.3)", "assert add(2, 3) == 5"]
    row = {"tests": tests, "test_setup": "from math import isclose"}
    assert code_tests(row) == tests
    assert float(score(RIGHT, row)) == 1.0
    wrong = score(WRONG, row)
    assert (float(wrong), wrong.note) == (0.0, "assert failed: assert isclose(add(0.1, 0.2), 0.3)")
    assert run_tests(WRONG, code_tests(row), row["test_setup"]).failed_test == tests[1]  # the item that failed


def test_a_json_list_in_a_csv_cell_is_a_list_of_programs():
    tests = ["assert add(2, 2) == 4", "assert add(2, 3) == 5"]
    row = {"tests": json.dumps(tests)}
    assert code_tests(row) == tests
    assert float(score(RIGHT, row)) == 1.0
    wrong = score(WRONG, row)   # split by lines, the cell was one harmless list expression: it passed
    assert (float(wrong), wrong.note) == (0.0, "assert failed: assert add(2, 3) == 5")
    # JSON that is not a list of strings is Python like any other program.
    assert code_tests({"tests": "[add(2, 2)]"}) == ["[add(2, 2)]"]
    assert code_tests({"tests": "[1, 2]"}) == ["[1, 2]"]


def test_a_multi_line_program_is_never_split_by_lines():
    loop = "for a, b in [(2, 2), (2, 3)]:\n    assert add(a, b) == a + b, (a, b)\n"
    assert float(score(RIGHT, {"tests": loop})) == 1.0
    wrong = score(WRONG, {"tests": loop})
    assert (float(wrong), wrong.note) == (0.0, "assert failed: assert add(a, b) == a + b, (a, b)")
    # One assert a line, as a spreadsheet cell holds them: one program, the failing line quoted.
    lines = "assert add(2, 2) == 4\n\nassert add(2, 3) == 5\n"
    assert float(score(RIGHT, {"tests": lines})) == 1.0
    assert score(WRONG, {"tests": lines}).note == "assert failed: assert add(2, 3) == 5"
    # The sandbox itself takes a string as one program too (list() of it would run each character).
    out = run_tests(WRONG, loop)
    assert (out.passed, out.failed_test) == (False, loop) and out.reason == wrong.note


def test_rows_without_usable_tests_say_what_to_give():
    expected = r"'tests' \(or HumanEval's 'test'\) column.*one program.*a list of programs.*has: prompt, completion"
    with pytest.raises(ValueError, match=expected):
        pass_at_1(RIGHT, "", {"prompt": "Write add", "completion": RIGHT})
    with pytest.raises(ValueError, match="'tests' column"):
        pass_at_1(RIGHT, "", {"tests": ["  ", ""]})
    with pytest.raises(ValueError, match=r"item 1 of 'tests' is int, not a program: 4; give each test as Python"):
        code_tests({"tests": ["assert add(2, 2) == 4", 4]})


# --- through the pipeline: the file as loaded, split and evaluated ------------------------------

FUNCTIONS = {  # name: (reference solution, [(arguments, result)])
    "add": ("def add(a, b):\n    return a + b", [((2, 3), 5), ((-1, 1), 0)]),
    "double": ("def double(x):\n    return 2 * x", [((2,), 4), ((0,), 0)]),
    "shout": ("def shout(text):\n    return text.upper() + '!'", [(("hi",), "HI!"), (("",), "!")]),
    "is_even": ("def is_even(n):\n    return n % 2 == 0", [((2,), True), ((3,), False)]),
    "last": ("def last(items):\n    return items[-1] if items else None", [(([1, 2],), 2), (([],), None)]),
    "span": ("def span(xs):\n    return max(xs) - min(xs)", [(([1, 5, 2],), 4), (([3],), 0)]),
}


def code_rows(style: str) -> list[dict]:
    rows = []
    for name, (solution, cases) in FUNCTIONS.items():
        row = {"id": name, "prompt": f"Write the Python function `{name}` ({len(rows)}).", "completion": solution}
        asserts = [f"assert {name}({', '.join(map(repr, args))}) == {result!r}" for args, result in cases]
        if style == "humaneval":   # one program with an uncalled check(candidate), and the entry point
            body = "".join(f"\n    {a.replace(f'assert {name}(', 'assert candidate(')}" for a in asserts)
            row |= {"tests": f"\n\ndef check(candidate):{body}\n", "entry_point": name}
        else:                      # MBPP's assert list, as JSON in a CSV cell
            row["tests"] = json.dumps(asserts)
        rows.append(row)
    return rows


@pytest.mark.parametrize("style", ["humaneval", "mbpp_csv"])
def test_the_pipeline_scores_a_reference_answer_with_the_rows_tests(style, tmp_path, tiny_model_dir, monkeypatch):
    """The tiny model writes no code, so a stand-in answers: each reference, and one wrong program."""
    import ftkit.evaluation.answering as module  # where evaluate generates its answers
    from ftkit.config import config_from_dict
    from ftkit.generation.generate import Generation
    from ftkit.pipeline import run_pipeline

    rows = code_rows(style)
    if style == "humaneval":
        (tmp_path / "code.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        with open(tmp_path / "code.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    wrong = []   # the first row asked gets a wrong answer, every time it is asked

    def answer(model, tok, conversations, **kwargs):
        out = []
        for messages in conversations:
            row = next(r for r in rows if r["prompt"] in messages[-1]["content"])
            wrong[:] = wrong or [row["id"]]
            text = "def nothing():\n    pass" if row["id"] == wrong[0] else row["completion"]
            out.append(Generation(text=f"```python\n{text}\n```", prompt_tokens=10, new_tokens=5, latency_s=0.01))
        return out

    monkeypatch.setattr(module, "generate", answer)
    config = config_from_dict({
        "task": "code",
        "data": {"source": "code.jsonl" if style == "humaneval" else "code.csv", "test_size": 0.5,
                 "stratify_by": None},
        "model": {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "templates": [{"kind": "zero_shot"}], "sft": None, "dpo": None, "max_new_tokens": 8,
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")},
    }, base=tmp_path)
    result = run_pipeline(config, say=lambda _line: None, progress=False)
    table = result.evaluation.table
    scores = dict(zip(table["id"], result.evaluation.column("zero-shot", "pass_at_1")))
    notes = dict(zip(table["id"], result.evaluation.notes("zero-shot", "pass_at_1")))
    assert len(scores) == 3 and wrong[0] in scores
    for name, value in scores.items():
        if name == wrong[0]:
            assert value == 0.0 and notes[name] == f"error: NameError: name '{name}' is not defined"
        else:
            assert value == 1.0 and notes[name] == "passed", (name, notes[name])
