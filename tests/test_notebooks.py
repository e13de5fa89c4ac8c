"""The guided notebooks: stripped, parameterised, and executed top to bottom on the embedded model.

Each notebook has one cell tagged ``parameters`` (the papermill convention). The execution test
inserts a cell after it with small values, like papermill's ``injected-parameters`` cell, so the
whole tour runs in minutes; a failing cell fails the test with that cell's source and error
(nbclient's ``CellExecutionError``).
"""

from __future__ import annotations

import ast
import html
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

# Small enough that each notebook runs in a few minutes on a 2-core CPU shared with other jobs
# (20 s to 4.5 min each, measured so). TEST_SIZE 0.05 keeps the stratified split valid (24 held-out
# rows, 3 per queue); EVAL_ROWS then evaluates a few of them.
SMALL = {
    "00_quickstart": dict(TEST_SIZE=0.05, TRAIN_ROWS=16, EVAL_ROWS=8, K_SHOTS=2, SFT_MINUTES=0,
                          SFT_STEPS=2, BATCH_SIZE=4),
    "01_data": dict(TEST_SIZE=0.2, REALDATA=str(REALDATA) if REALDATA.is_dir() else None),
    "02_prompt_engineering": dict(TEST_SIZE=0.05, EVAL_ROWS=6, K_SHOTS=2, SHOT_COUNTS=[0, 1, 2, 4]),
    "03_sft": dict(TEST_SIZE=0.05, TRAIN_ROWS=16, VAL_ROWS=8, EVAL_ROWS=6, SFT_MINUTES=0, SFT_STEPS=2,
                   EVAL_STEPS=2, BATCH_SIZE=4),
    "04_dpo": dict(TEST_SIZE=0.05, TRAIN_ROWS=16, EVAL_ROWS=6, RATE_ROWS=4, PAIRS_ROWS=8, SFT_MINUTES=0, SFT_STEPS=2,
                   DPO_MINUTES=0, DPO_STEPS=2, BATCH_SIZE=4),
    # TIMING_ROUNDS=1: one round of the timing phase (a batch and two rows alone per variant), not three.
    "05_compare": dict(TIMING_ROUNDS=1, TEST_SIZE=0.05, TRAIN_ROWS=16, EVAL_ROWS=6, K_SHOTS=2, PAIRS_ROWS=8,
                       SFT_MINUTES=0, SFT_STEPS=2, DPO_MINUTES=0, DPO_STEPS=2, BATCH_SIZE=4, PROBE_ROWS=4,
                       CURVE_SIZES=[4, 8], CURVE_MINUTES=0, CURVE_STEPS=1, SCRATCH_MINUTES=0, SCRATCH_STEPS=1,
                       NEW_QUEUE_ROWS=4),
    # Every task still runs: one held-out row each, one SFT step, short answers. Its time is generation
    # with long few-shot prompts (4 tasks x 3-4 variants, each scored, warmed up, timed batched and
    # alone): 316 s of 357 s in one process were generate calls (cProfile, Dec 2026). One row instead
    # of two halves the prompt tokens and drops the second row timed alone. The interval code takes
    # one row (metrics.corpus_score and power.detectable_difference report no spread below two).
    "06_scenarios": dict(TIMING_ROUNDS=1, EVAL_ROWS=1, MAX_NEW_TOKENS=16, SFT_MINUTES=0, SFT_STEPS=1, BATCH_SIZE=2,
                         RATE_ROWS=2, DPO_MINUTES=0, DPO_STEPS=1),
    "07_chat_and_code": dict(TIMING_ROUNDS=1, CHAT_EVAL_CONVERSATIONS=1, CODE_EVAL_ROWS=2, MAX_NEW_TOKENS=16,
                             SFT_MINUTES=0, SFT_STEPS=1, BATCH_SIZE=2),
    # ENDPOINT_URL "": no hosted model even if the environment names one; the embedded model stands in.
    "08_hosted_baseline": dict(TIMING_ROUNDS=1, TEST_SIZE=0.05, TRAIN_ROWS=16, EVAL_ROWS=6, SFT_MINUTES=0, SFT_STEPS=2,
                               BATCH_SIZE=4, ENDPOINT_URL=""),
}


def _ids(paths):
    return [p.stem for p in paths]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _parameters_index(nb) -> int:
    found = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected exactly one cell tagged 'parameters', found {len(found)}"
    return found[0]


def test_the_tour_is_complete():
    assert [p.stem for p in NOTEBOOKS] == list(SMALL), "every notebook needs small parameters in SMALL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_outputs_are_stripped(path):
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count; clear it"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata, "saved widget state is an output too; clear it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_parameters_cell_assigns_the_small_values(path):
    nb = _read(path)
    cell = nb.cells[_parameters_index(nb)]
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert "MODEL" in assigned
    missing = set(SMALL[path.stem]) - assigned
    assert not missing, f"the test sets {sorted(missing)}, which the parameters cell does not define"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebooks_define_no_library_code(path):
    """A cell is a call into ftkit plus explanation: no functions or classes of its own."""
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        defined = [n for n in ast.walk(ast.parse(cell.source))
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defined, f"cell {i} defines {defined[0].name}; put reusable code in ftkit"
        imports = [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.ImportFrom)]
        assert all(not (n.module or "").startswith("notebooks") for n in imports)


def with_parameters(nb, values: dict):
    """A copy of ``nb`` with a cell setting ``values`` right after its parameters cell."""
    nb = nbformat.from_dict(nb)
    source = "# Injected by the test: small values\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_index(nb) + 1, cell)
    return nb


# The notebooks that reuse the runs others recorded (04 and 05 those of 03 and 04, 08 a finished
# SFT run) run in tests/test_notebooks_shared_runs.py, in tour order with one runs folder; the others
# here. Two modules, so that `make test`'s two workers (--dist loadfile) run them side by side.
SHARED_RUNS = ["03_sft", "04_dpo", "05_compare", "08_hosted_baseline"]
ON_THEIR_OWN = [p for p in NOTEBOOKS if p.stem not in SHARED_RUNS]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.mark.integration
@pytest.mark.parametrize("path", ON_THEIR_OWN, ids=_ids(ON_THEIR_OWN))
def test_notebook_runs_top_to_bottom(path, tmp_path, runs_root, monkeypatch):
    run_notebook(path, tmp_path, runs_root, monkeypatch)


def test_every_notebook_runs_in_one_of_the_two_modules():
    assert sorted([p.stem for p in ON_THEIR_OWN] + SHARED_RUNS) == [p.stem for p in NOTEBOOKS]


def run_notebook(path, tmp_path, runs_root, monkeypatch):
    """Run ``path`` top to bottom with its small parameters and ``runs_root`` as its runs folder."""
    from nbclient import NotebookClient

    monkeypatch.setenv("FTKIT_RUNS", str(runs_root))
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    nb = with_parameters(_read(path), {**SMALL[path.stem], "RUNS_ROOT": str(runs_root)})
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError with the failing cell's source and traceback
    print(f"{path.stem}: executed in {time.perf_counter() - t0:.0f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    if path.stem == "05_compare":  # the verdict it prints (the ComparePanel's object) opens its report
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                          if o.output_type == "stream")
        verdict = next(line for line in printed.splitlines() if line.startswith("Verdict: "))
        assert html.escape(verdict) in (workdir / "05_compare_report.html").read_text(encoding="utf-8")
