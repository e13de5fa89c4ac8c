"""Code metrics: the generated program runs against the row's tests, in a sandbox.

:func:`pass_at_1` is a metric like the others in :mod:`ftkit.evaluation.metrics` (which lists it
among its built-ins); :func:`code_tests` reads a row's tests in the formats HumanEval and MBPP use.
The code itself never runs in this process: :mod:`ftkit.evaluation.sandbox` runs it.

>>> code_tests({"tests": ["assert f(1) == 2"]})
['assert f(1) == 2']
"""

from __future__ import annotations

import ast
import json

__all__ = ["Scored", "code_tests", "pass_at_1"]


class Scored(float):
    """A score that carries a note on why, shown beside the answer (a test's verdict).

    >>> s = Scored(0.0, "assert failed: assert f(2) == 4"); float(s), s.note
    (0.0, 'assert failed: assert f(2) == 4')
    """

    note: str

    def __new__(cls, value: float, note: str = ""):
        out = super().__new__(cls, value)
        out.note = note
        return out


# What a code row must hold, for the error messages.
_TESTS_FORMAT = ("a 'tests' (or HumanEval's 'test') column holding one program, as a string (e.g. a "
                 "'def check(candidate):' with an 'entry_point' column naming the function), or a list of "
                 "programs run in order (e.g. MBPP's assert lines; in a CSV cell, that list as JSON); "
                 "'test_setup', optional, runs after the code, before the tests")


def code_tests(row: dict | None) -> list[str]:
    """The programs that test a code row's answer, in the order :func:`pass_at_1` runs them.

    ``tests`` (or HumanEval's ``test``) holds either ONE program, as a string, never split into
    lines (a ``def check(candidate):`` or a ``for`` loop of asserts spans many), or a list of
    programs, each run after the one before, as MBPP's assert list is. A string that parses as a
    JSON list of strings (how a CSV cell holds a list) is that list. When the programs define
    ``check`` and never call it, ``check(<entry_point>)`` runs after them, as HumanEval's harness
    does: ``entry_point`` is the column that names the function.

    >>> code_tests({"tests": '["assert f(1) == 2", "assert f(2) == 3"]'})
    ['assert f(1) == 2', 'assert f(2) == 3']
    >>> code_tests({"test": "def check(candidate):\\n    assert candidate(1) == 2", "entry_point": "f"})[-1]
    'check(f)'
    """
    row = row or {}
    column = next((c for c in ("tests", "test") if _filled(row.get(c))), None)
    if column is None:
        raise ValueError(f"pass_at_1 needs the row's tests: {_TESTS_FORMAT}; this row has: "
                         f"{', '.join(map(str, row)) or 'no columns'}")
    value = row[column]
    value = value.tolist() if hasattr(value, "tolist") else value   # a numpy array from a data frame
    if isinstance(value, str):
        listed = _json_list(value)
        programs = [value] if listed is None else listed
    elif not isinstance(value, (list, tuple)):
        raise ValueError(f"the row's {column!r} is {type(value).__name__}; pass_at_1 needs {_TESTS_FORMAT}")
    else:
        programs = list(value)
        for i, program in enumerate(programs):
            if not isinstance(program, str):
                raise ValueError(f"item {i} of {column!r} is {type(program).__name__}, not a program: {program!r}; "
                                 "give each test as Python source text, e.g. 'assert f(2) == 4'")
    programs = [p for p in programs if p.strip()]   # a blank item tests nothing
    if not programs:   # else any answer would pass
        raise ValueError(f"the row's {column!r} column holds no test program; pass_at_1 needs {_TESTS_FORMAT}")
    if _defines_uncalled_check(programs):
        entry = row.get("entry_point")
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"the row's {column!r} defines check(candidate) but never calls it, so it would test "
                             "nothing: add an 'entry_point' column naming the function to test (check(<entry_point>) "
                             "then runs after it, as in HumanEval), or call check(...) in the tests")
        programs.append(f"check({entry.strip()})")   # its own item: a failure names the call
    return programs


def _filled(value) -> bool:
    """Whether a cell holds something: not missing, NaN (a data frame's empty cell), '' or []."""
    if value is None or isinstance(value, float):
        return False
    if isinstance(value, str):
        return bool(value.strip())
    return not hasattr(value, "__len__") or len(value) > 0


def _json_list(text: str) -> list[str] | None:
    """The list a JSON-list-of-strings cell holds; None for anything else (then it is Python)."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _defines_uncalled_check(programs: list[str]) -> bool:
    """Whether a top-level ``def check`` is in the programs and no call ``check(...)`` is."""
    defines = calls = False
    for program in programs:
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError):   # the sandbox reports it, quoting the line
            continue
        defines |= any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "check" for n in tree.body)
        calls |= any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"
                     for n in ast.walk(tree))
    return defines and not calls


def pass_at_1(prediction: str, reference: str | None = None, row: dict | None = None) -> float:
    """1.0 when the code in ``prediction`` (fenced or bare) passes every test of the row, else 0.0.

    The row's tests are one program (HumanEval's ``check(candidate)``, called on the row's
    ``entry_point`` when it is not called) or a list of programs (MBPP's asserts); each runs after
    the code, in order, in the tests' own process; ``test_setup``, if any, runs before them (see
    :func:`code_tests`). The code runs in :mod:`ftkit.evaluation.sandbox`: another process, with limits on
    time, memory, processes and output, no network and no inherited environment; never in this
    process. The result is a :class:`Scored` whose note says what happened ("passed", which assert
    failed, "timed out after 5 s").

    >>> row = {"test": "def check(candidate):\\n    assert candidate(2) == 4", "entry_point": "double"}
    >>> pass_at_1("def double(x):\\n    return 2 * x", None, row).note
    'passed'
    """
    from ftkit.evaluation import sandbox

    programs = code_tests(row)
    setup = row.get("test_setup")
    code = sandbox.extract_code(prediction)
    outcome = sandbox.run_tests(code, programs, setup if isinstance(setup, str) else "")
    return Scored(1.0 if outcome.passed else 0.0, outcome.reason)
