"""Fixtures for the panel tests: a fresh tiny model (``talkative``, made to answer visibly, is in
tests/conftest.py)."""

from __future__ import annotations

import pytest

from ftkit import load_model


@pytest.fixture
def tiny(tiny_model_dir):
    """A fresh tiny model (training changes a model in place) and its tokenizer."""
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
