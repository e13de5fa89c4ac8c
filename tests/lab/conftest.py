"""Fixtures of the server extension's tests: a real Jupyter Server in-process (pytest-jupyter) with
ftkit's extension, and the runs folder it reads."""

from pathlib import Path

import pytest

# pytest-jupyter declares no pytest entry point: its fixtures (jp_fetch, jp_serverapp, jp_root_dir,
# http_server_client, ...) are imported here, for the tests of this folder alone.
try:
    from pytest_jupyter.jupyter_server import *  # noqa: F403 - its fixtures, by name
except ImportError as err:
    raise ImportError("these tests need pytest-jupyter: pip install 'pytest-jupyter[server]' "
                      "(part of the dev extra)") from err


@pytest.fixture
def runs_env() -> str | None:
    return None  # the default: <root_dir>/runs; a test parametrizes this to set FTKIT_RUNS


@pytest.fixture(autouse=True)
def _runs_env(monkeypatch, runs_env):
    # Set first, so the teardown restores the variable whatever the extension set for its kernels.
    monkeypatch.setenv("FTKIT_RUNS", runs_env or "")
    if runs_env is None:
        monkeypatch.delenv("FTKIT_RUNS")


@pytest.fixture
def runs(jp_root_dir) -> Path:
    return jp_root_dir / "runs"
