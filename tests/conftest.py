"""Shared fixtures: a tiny model built from a config (fast, no network) and small data files.

Every test runs offline for real: a socket guard refuses any connection or name lookup that
leaves this machine (loopback stays open for JupyterLab and torch.distributed), so a test that
passes here does not depend on a network it happened to reach.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest
from tiny_models import make_tokenizer, save_tiny_model


# --- pytest-xdist: `make test` runs the suite on 2 workers (-n 2 --dist loadfile) ------------------
# Each test module runs on one worker, so a module's fixtures (a trained run, a started JupyterLab)
# are built once, and the notebooks run in tour order sharing their runs, as in one process.
# (--dist loadgroup would let small modules spread, but pytest-xdist 3.8 groups by rewriting
# item._nodeid, which pytest 9.2 no longer reads: xdist_group marks are silently ignored, pytest-xdist
# issue #1386, fix pending in #1388.) The modules start slowest first
# (with --no-loadscope-reorder): a module of several minutes that started last would leave the
# other worker idle at the end. Seconds each took on a 2-core CPU beside other jobs (pytest
# --durations, Dec 2026); modules not listed follow in collection order.
SLOW_MODULES = {"tests/test_notebooks.py": 1300, "tests/test_notebooks_shared_runs.py": 720,
                "tests/browser/test_jupyterlab.py": 400}


def pytest_configure(config):
    """Workers share the cores: each process gets its share as torch's thread count, the ceiling
    ftkit's choice never passes (ftkit.models.threads.torch_default), in the worker and in the
    notebook kernels, servers and runs it starts (OpenMP reads ``OMP_NUM_THREADS`` as they start).
    Left to choose, each process samples the load for 0.25 s as it loads a model and keeps what it
    chose: a sample taken while the other worker paused gives it both cores for its whole life,
    and two such processes on two cores wait on each other at every step. Set by hand, it stays."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        from ftkit.models.threads import available_cores

        share = max(1, available_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        order = {item.nodeid: i for i, item in enumerate(items)}
        items.sort(key=lambda item: (-SLOW_MODULES.get(item.nodeid.split("::")[0], 0), order[item.nodeid]))


class NetworkBlocked(OSError):
    """A test tried to reach the network."""


def _local(host) -> bool:
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded(method):
        def call(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
                raise NetworkBlocked(f"tests run offline: no connection to {address[0]}:{address[1]}")
            return method(self, address, *args)
        return call

    def lookup(host, *args, **kwargs):
        if not _local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests run offline: no name lookup of {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", lookup)

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


@pytest.fixture(scope="module")
def talkative(tiny_model_dir):
    """The tiny model with answers that show: its weights drawn wider (at the default scale every
    prompt gets the same greedy answer; wide enough that answers hold spaces, so a streamer hands
    text over word by word) and special and blank tokens never generated."""
    import torch

    from ftkit import load_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    model.generation_config.suppress_tokens = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
    return model, tok


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A 2-layer Llama with random weights and the embedded SmolLM2's tokenizer and context."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftkit.models.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-smollm-tokenizer")
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
