"""Shared fixtures: a tiny model built from a config (fast, no network) and small data files."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import make_tokenizer, save_tiny_model

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"shared real data not found at {REALDATA} (it lives beside the project checkout)")
    return REALDATA
