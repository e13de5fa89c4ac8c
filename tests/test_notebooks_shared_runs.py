"""The notebooks that reuse the runs others recorded, run top to bottom in tour order with one runs
folder, as in a real session: 04 and 05 reuse the runs 03 and 04 recorded, 08 a finished SFT run.
(The others run in tests/test_notebooks.py: two modules, so that two test workers run them side by side.)"""

import pytest
from test_notebooks import NOTEBOOKS, SHARED_RUNS, _ids, run_notebook

TOUR = [p for p in NOTEBOOKS if p.stem in SHARED_RUNS]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.mark.integration
@pytest.mark.parametrize("path", TOUR, ids=_ids(TOUR))
def test_notebook_runs_top_to_bottom_after_the_runs_before_it(path, tmp_path, runs_root, monkeypatch):
    run_notebook(path, tmp_path, runs_root, monkeypatch)
