"""Fixtures for the panel tests: the tiny model, fresh or made to answer visibly."""

from __future__ import annotations

import pytest

from ftkit import load_model


@pytest.fixture
def tiny(tiny_model_dir):
    """A fresh tiny model (training changes a model in place) and its tokenizer."""
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


@pytest.fixture(scope="module")
def talkative(tiny_model_dir):
    """The tiny model with answers that show: its weights drawn wider (at the default scale every
    prompt gets the same greedy answer) and special and blank tokens never generated."""
    import torch

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    model.generation_config.suppress_tokens = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
    return model, tok
