"""The timing phase: every variant timed together, interleaved, so a load hits all alike.

The clock is fake: each forward pass of a model costs one unit, five while "another job" runs.
Identical variants must then come out equal whatever the load did, and a real difference must
show with an interval that excludes 0.
"""

import copy

import numpy as np
import pytest

import ftkit.generation.timing as timing
from ftkit.evaluation.evaluate import EvalResult, Variant, evaluate
from ftkit.models.loading import load_model
from ftkit.prompts import zero_shot
from ftkit.models.threads import Load
from ftkit.generation.timing import LatencyDifference, Timing, time_variants

ROWS = [{"prompt": f"Where is order {i}?", "completion": "order_status"} for i in range(10)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


class FakeClock:
    """Time that passes only when a model computes: one unit per forward pass, ``slow`` units while
    ``loaded()`` says another job shares the machine."""

    def __init__(self, models, loaded, slow: float = 5.0):
        self.now, self.loaded, self.slow, self.calls = 0.0, loaded, slow, []
        self.hooks = [m.register_forward_pre_hook(self._tick) for m in models]

    def _tick(self, module, args):
        self.calls.append(module)
        self.now += self.slow if self.loaded(module) else 1.0

    def __call__(self) -> float:
        return self.now

    def remove(self):
        for h in self.hooks:
            h.remove()


def test_a_load_while_one_variant_runs_does_not_make_it_look_slower(tiny, monkeypatch):
    model, tok = tiny
    twin = copy.deepcopy(model)  # the same weights: the same answers, the same work per request
    # Another job runs until the twin first answers: in a per-variant block timing (main before
    # this phase existed) the first variant was timed entirely under it and looked 5x slower.
    clock = FakeClock([model, twin], lambda m: twin not in clock.calls)
    monkeypatch.setattr(timing, "clock", clock)
    try:
        result = evaluate([Variant(model, tok, zero_shot(), name="a", max_new_tokens=3),
                           Variant(twin, tok, zero_shot(), name="b", max_new_tokens=3)],
                          ROWS, batch_size=5, progress=False, n_boot=200)
    finally:
        clock.remove()
    s = result.summary
    assert model in clock.calls[:3] and s.loc["a", "latency_s"] > 0  # the load was there, and timing ran
    assert s.loc["a", "latency_s"] == s.loc["b", "latency_s"]
    assert s.loc["a", "latency_1_s"] == s.loc["b", "latency_1_s"]
    assert s.loc["a", "latency_s_low"] <= s.loc["a", "latency_s"] <= s.loc["a", "latency_s_high"]
    d = result.timing.difference("a", "b")
    assert d.median == 0 and not d.significant and d.samples == 3  # 3 rounds of one batch of 5


def test_a_burst_in_one_round_does_not_decide(tiny, monkeypatch):
    model, tok = tiny
    twin = copy.deepcopy(model)
    state = {"burst": False, "seen": 0}
    clock = FakeClock([model, twin], lambda m: state["burst"])
    monkeypatch.setattr(timing, "clock", clock)
    real = timing.generate

    def burst_in_first_batch_of_a(m, tok, conversations, **kwargs):
        # the first timed batch of "a" (5 rows; the warm-up asks 4) runs beside a burst of load
        state["burst"] = m is model and len(conversations) == 5 and state["seen"] == 0
        state["seen"] += state["burst"]
        try:
            return real(m, tok, conversations, **kwargs)
        finally:
            state["burst"] = False

    monkeypatch.setattr(timing, "generate", burst_in_first_batch_of_a)
    variants = [Variant(model, tok, zero_shot(), name="a", max_new_tokens=3),
                Variant(twin, tok, zero_shot(), name="b", max_new_tokens=3)]
    try:
        t = time_variants(variants, ROWS, batch_size=5, rounds=3, rows=5, progress=False, n_boot=200)
    finally:
        clock.remove()
    a, b = t.batched["a"], t.batched["b"]
    assert a[0] == 5 * b[0] and a[1:] == b[1:]  # the burst slowed one sample of "a" five-fold
    assert t.median("a")[0] == t.median("b")[0]
    assert not t.difference("a", "b").significant


def test_a_real_difference_shows_with_its_interval(talkative, monkeypatch):
    model, tok = talkative  # never stops early: a longer answer is more forward passes
    clock = FakeClock([model], lambda m: False)
    monkeypatch.setattr(timing, "clock", clock)
    try:
        t = time_variants([Variant(model, tok, zero_shot(), name="short", max_new_tokens=2),
                           Variant(model, tok, zero_shot(), name="long", max_new_tokens=6)],
                          ROWS, batch_size=4, rounds=3, rows=8, progress=False, n_boot=200)
    finally:
        clock.remove()
    d = t.difference("long", "short")
    # Batched: 6 forward passes for a batch of 4 rows against 2 -> +1.0 unit per request, every sample.
    assert (d.median, d.low, d.high) == (1.0, 1.0, 1.0) and d.significant
    alone = t.difference("long", "short", "alone")
    assert alone.median == 4.0 and alone.significant and alone.samples == 3 * 2
    assert t.summary().loc["long", "latency_1_s"] == 6.0
    assert "long - short: +1.000 s per request batched (95% CI +1.000 to +1.000)" == str(d)


def test_variants_take_turns_batch_by_batch_and_the_order_rotates(tiny, monkeypatch):
    model, tok = tiny
    seen = []
    real = timing.generate

    def spy(m, tok, conversations, **kwargs):
        seen.append((conversations[0][-1]["content"], len(conversations), kwargs["batch_size"]))
        return real(m, tok, conversations, **kwargs)

    monkeypatch.setattr(timing, "generate", spy)
    marked = [zero_shot(), zero_shot()]
    marked[1].name = "b"
    variants = [Variant(model, tok, t, name=n, max_new_tokens=2) for t, n in zip(marked, ["a", "b"])]
    t = time_variants(variants, ROWS, batch_size=4, rounds=2, rows=8, interactive_rows=1, progress=False)
    assert [len(v) for v in t.batched.values()] == [4, 4] and [len(v) for v in t.alone.values()] == [2, 2]
    timed = seen[2:]  # after one warm-up each
    assert [(n, b) for _, n, b in timed] == [(4, 4)] * 4 + [(1, 1)] * 2 + [(4, 4)] * 4 + [(1, 1)] * 2
    # round 1: a, b for each batch; round 2 starts with b
    assert timed[0][0] == timed[1][0] == ROWS[0]["prompt"] and timed[2][0] == ROWS[4]["prompt"]


def test_notes_say_the_load_and_a_wide_spread():
    quiet = Timing(batched={"a": [1.0, 1.1, 1.0], "b": [1.0, 1.0, 1.1]}, alone={"a": [2.0] * 3, "b": [2.0] * 3},
                   rows=8, batch_size=8, rounds=3,
                   load=Load(others_busy=0.05, own_busy=1.9, cores=2, seconds=30.0))
    assert quiet.notes() == ["timed together, interleaved: 3 rounds of 8 rows in batches of 8, and one at a time "
                             "on 1 row; medians with 95% intervals"]
    busy = Timing(batched={"a": [1.0, 3.0, 1.0], "b": [1.0, 1.0, 1.1]}, rows=8, batch_size=8, rounds=3,
                  load=Load(others_busy=0.9, own_busy=1.1, cores=2, seconds=30.0, loadavg_start=(1.1, 1, 1),
                            loadavg_end=(1.9, 1, 1)))
    notes = " ".join(busy.notes())
    assert "other processes kept 0.9 of 2 cores busy" in notes and "load average 1.10 -> 1.90" in notes
    assert "the load changed while timing: a's batches spread 100% of their median" in notes


def test_merge_drops_latency_and_with_timing_gives_it_back():
    def one(name, values):
        import pandas as pd

        table = pd.DataFrame({"input": ["q1", "q2"], "reference": ["x", "y"]})
        summary = pd.DataFrame([{"variant": name, "em": float(np.mean(values)), "latency_s": 9.0}]).set_index("variant")
        return EvalResult(table=table, summary=summary, scores={name: {"em": np.array(values)}})

    merged = one("a", [1.0, 0.0]).merge(one("b", [1.0, 1.0]))
    assert "latency_s" not in merged.summary.columns and merged.timing is None
    with pytest.raises(ValueError, match="the timing has no 'b'"):
        merged.with_timing(Timing(batched={"a": [1.0]}, rows=1, batch_size=1, rounds=1))
    timed = merged.with_timing(Timing(batched={"a": [1.0, 2.0, 3.0], "b": [0.5, 0.5, 0.5]}, rows=2, batch_size=2,
                                      rounds=3))
    assert list(timed.summary["latency_s"]) == [2.0, 0.5] and timed.timing.rounds == 3
    assert timed.summary.loc["a", "em"] == 0.5  # the scores stay


def test_latency_difference_words():
    d = LatencyDifference(a="t", b="p", kind="alone", median=-0.2, low=-0.3, high=-0.1, samples=6)
    assert d.significant and str(d) == "t - p: -0.200 s per request one at a time (95% CI -0.300 to -0.100)"
    assert not LatencyDifference("t", "p", "batched", 0.1, -0.1, 0.3, 3).significant


def test_the_phase_stops_at_its_budget_with_every_variant_sampled_both_ways_and_says_so(talkative, monkeypatch):
    """Long answers make three full rounds cost more than the scoring: the budget ends the phase once
    every variant has a batched and a one-at-a-time sample and the next step would pass it."""
    model, tok = talkative  # never stops early: a batch or a row costs max_new_tokens forward passes
    clock = FakeClock([model], lambda m: False)
    monkeypatch.setattr(timing, "clock", clock)
    variants = [Variant(model, tok, zero_shot(), name="short", max_new_tokens=2),
                Variant(model, tok, zero_shot(), name="long", max_new_tokens=6)]
    try:
        # warm-up 8 units; round 1: two batches (8 each) and a row alone (8) reach 32; the next row
        # alone would end at 40, past 30
        t = time_variants(variants, ROWS, batch_size=4, rounds=3, rows=8, progress=False, n_boot=200, budget_s=30)
        unlimited = time_variants(variants, ROWS, batch_size=4, rounds=3, rows=8, progress=False, n_boot=200,
                                  budget_s=None)
    finally:
        clock.remove()
    assert (len(t.batched["short"]), len(t.alone["short"]), len(t.alone["long"]), t.rounds) == (2, 1, 1, 1)
    one = t.difference("long", "short", "alone")
    assert one.median == 4.0 and one.samples == 1  # still paired, still right, but one pair decides nothing
    assert not one.significant and one.verdict() == "too few timed pairs (1) to tell long from short"
    assert t.notes()[0].startswith("timed together, interleaved, until the phase's 0.5-minute budget (of 3 rounds "
                                   "planned): per variant 2 batches of up to 4 of 8 rows and 1 row one at a time")
    assert (len(unlimited.batched["short"]), len(unlimited.alone["short"]), unlimited.rounds) == (6, 6, 3)
    assert unlimited.budget_s is None and "rounds of 8 rows" in unlimited.notes()[0]
