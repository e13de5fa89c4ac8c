"""Thread choice from the cores other processes leave free: the rule, applying it, measuring the
load of other processes (and not our own), and re-choosing during training."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from ftkit.models import threads
from ftkit.models.device import describe_device
from ftkit.models.loading import load_model


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Each test starts from ftkit's state as it was and leaves torch's thread count as it found it."""
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "_torch_default", threads._torch_default)
    monkeypatch.setattr(threads, "_local", threading.local())  # no choice made yet
    for name in ("_current", "_current_setting"):
        monkeypatch.setattr(threads, name, None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def fake_load(others: float, cores: int = 2) -> threads.Load:
    return threads.Load(others_busy=others, own_busy=1.0, cores=cores, seconds=30.0)


# --- the rule ------------------------------------------------------------------------------------

def test_one_busy_core_of_two_leaves_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    choice = threads.choose_threads(others_busy=1.0, cores=2)
    assert (choice.threads, choice.cores, choice.torch_default) == (1, 2, 2)
    assert str(choice) == "1 thread of 2 cores (other processes keep 1.0 busy)"
    assert "1 free" in choice.reason


def test_a_quiet_machine_gets_torch_default(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    assert threads.choose_threads(others_busy=0.0, cores=2).threads == 2
    assert threads.choose_threads(others_busy=0.1, cores=2).threads == 2  # a background blip


def test_a_core_busy_more_than_a_quarter_of_the_time_is_not_free(monkeypatch):
    # benchmarks/contention.py --duty: past ~0.2 busy a second thread gained nothing, past 0.5 it lost.
    monkeypatch.setattr(threads, "_torch_default", 2)
    assert threads.choose_threads(others_busy=0.2, cores=2).threads == 2
    assert threads.choose_threads(others_busy=0.3, cores=2).threads == 1
    assert threads.choose_threads(others_busy=0.5, cores=2).threads == 1


def test_never_above_torch_default_never_below_one(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 4)
    assert threads.choose_threads(others_busy=0.0, cores=16).threads == 4
    assert threads.choose_threads(others_busy=2.0, cores=2).threads == 1
    assert threads.choose_threads(others_busy=7.5, cores=2).threads == 1
    assert threads.choose_threads(others_busy=2.0, cores=8).threads == 4
    assert threads.choose_threads(others_busy=5.0, cores=8).threads == 3


def test_a_setting_wins_then_the_environment(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    assert str(threads.choose_threads(3, others_busy=2.0, cores=2)) == "3 threads of 2 cores (as set)"
    monkeypatch.setenv(threads.ENV, "1")
    choice = threads.choose_threads(others_busy=0.0, cores=2)
    assert choice.threads == 1 and choice.reason == "FTKIT_THREADS=1" and choice.others_busy is None
    assert threads.choose_threads(2, others_busy=0.0, cores=2).threads == 2  # the setting still wins
    monkeypatch.setenv(threads.ENV, "0")
    assert threads.choose_threads(others_busy=0.0, cores=2).threads == 2  # 0: automatic
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="FTKIT_THREADS='two' is not a whole number"):
        threads.choose_threads(others_busy=0.0, cores=2)
    with pytest.raises(ValueError, match="0 for the automatic choice"):
        threads.choose_threads(-1)


# --- applying it ---------------------------------------------------------------------------------

def test_apply_sets_torch_threads_and_remembers(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    choice = threads.apply(others_busy=1.0, cores=2)
    assert torch.get_num_threads() == 1 and threads.current() == choice
    threads.apply(others_busy=0.0, cores=2)
    assert torch.get_num_threads() == 2 and threads.current().threads == 2


def test_apply_reuses_a_recent_choice_without_measuring(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    calls = []
    monkeypatch.setattr(threads, "measure", lambda *a: calls.append(1) or fake_load(1.0))
    assert threads.apply(reuse_s=60).threads == 1
    assert threads.apply(reuse_s=60).threads == 1 and len(calls) == 1  # reused
    assert threads.apply(2, reuse_s=60).threads == 2  # another setting: chosen anew (no measuring)
    threads.apply(reuse_s=60)
    assert len(calls) == 2


def test_a_count_set_by_hand_becomes_the_ceiling(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    threads.apply(others_busy=0.0, cores=2)
    torch.set_num_threads(1)  # the user's own call, after ftkit's
    assert threads.apply(others_busy=0.0, cores=2).threads == 1


def test_a_count_ftkit_set_in_another_thread_is_not_taken_for_one_set_by_hand(monkeypatch):
    # torch's count is per thread: a training thread's own choice leaves this thread's count as it was.
    monkeypatch.setattr(threads, "_torch_default", 2)
    threads.apply(others_busy=1.0, cores=2)
    worker = threading.Thread(target=lambda: (torch.ones(8).sum(), threads.apply(others_busy=0.0, cores=2)))
    worker.start()
    worker.join()
    assert threads.apply(others_busy=0.0, cores=2).threads == 2


def test_describe_device_and_load_model_say_and_apply_the_choice(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(threads, "measure", lambda *a: fake_load(1.0))
    monkeypatch.setattr(threads, "_torch_default", 2)
    text = describe_device("cpu", "float32")
    assert text.startswith("cpu (float32): ") and text.endswith("; 1 thread of 2 cores (other processes keep 1.0 busy)")
    assert describe_device("cpu", "float32", threads=2).endswith("; 2 threads of 2 cores (as set)")
    load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False, threads=1)
    assert torch.get_num_threads() == 1 and threads.current().reason == "as set"


# --- measuring -----------------------------------------------------------------------------------

def test_a_busy_process_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # past its start-up
        load = threads.measure(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert load.others_busy >= 0.3, load
    assert load.seconds >= 0.5 and load.source == "psutil"


def test_our_own_busy_threads_are_not_counted_as_others():
    quiet = threads.measure(0.5).others_busy
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        meter = threads.LoadMeter()
        time.sleep(0.5)
        load = meter.read()
    finally:
        stop.set()
        worker.join()
    assert load.own_busy >= 0.3, load  # every thread of this process counts as its own
    assert load.others_busy <= quiet + 0.4, (quiet, load)


def test_without_psutil_the_load_average_stands_in(monkeypatch):
    monkeypatch.setattr(threads, "_psutil", lambda: None)
    load = threads.LoadMeter().read()
    assert load.source == "loadavg" and 0 <= load.others_busy <= load.cores
    assert "of" in str(load) and "cores busy" in str(load)


# --- during training -----------------------------------------------------------------------------

def test_the_training_callback_follows_the_load(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    monkeypatch.setattr(threads, "measure", lambda *a: fake_load(0.0))
    seen = iter([fake_load(0.1), fake_load(1.0), fake_load(0.9), fake_load(0.0)])
    monkeypatch.setattr(threads.LoadMeter, "read", lambda self, restart=False: next(seen))
    callback = threads.training_callback(every_s=0, verbose=False)
    callback.on_train_begin(None, None, None)
    assert torch.get_num_threads() == 2
    counts = []
    for _ in range(4):
        callback.on_step_end(None, None, None)
        counts.append(torch.get_num_threads())
    assert counts == [2, 1, 1, 2]  # a neighbour came and went
    assert [c.threads for c in callback.changes] == [2, 1, 2]


def test_the_training_callback_checks_only_every_so_often(monkeypatch):
    monkeypatch.setattr(threads, "_torch_default", 2)
    monkeypatch.setattr(threads, "measure", lambda *a: fake_load(0.0))
    reads = []
    monkeypatch.setattr(threads.LoadMeter, "read", lambda self, restart=False: reads.append(1) or fake_load(1.0))
    callback = threads.training_callback(every_s=3600, verbose=False)
    callback.on_train_begin(None, None, None)
    callback.on_step_end(None, None, None)
    assert reads == [] and torch.get_num_threads() == 2
    fixed = threads.training_callback(1, every_s=0, verbose=False)
    fixed.on_train_begin(None, None, None)
    fixed.on_step_end(None, None, None)
    assert reads == [] and torch.get_num_threads() == 1  # a fixed count is not measured


def test_the_training_callback_keeps_the_setting_last_applied():
    from ftkit.models import threads

    before = threads.torch_default()
    try:
        threads.apply(1)  # a run's model.threads: 1
        callback = threads.training_callback(every_s=0.0)
        callback.on_train_begin(None, None, None)
        callback.on_step_end(None, None, None)
        assert callback.setting == 1 and [c.threads for c in callback.changes] == [1]
        assert threads.current().reason == "as set"
    finally:
        threads.apply(before)
