"""What a request costs, measured fairly: every variant timed in one interleaved phase.

Timing each variant in a block of its own (or the prompts in one phase and the tuned models minutes
later) compares two loads, not two models: on a small laptop where a browser or another kernel
wakes up, a block timed under load looks several times slower than the same model timed quiet. Here every
variant answers the same rows, batch by batch in turn (round-robin, the order rotated each round),
and the whole thing is repeated: a change of load hits all variants alike, and the median of the
repeats shrugs off a burst.

Each variant gets, per request: the median seconds when served ``batch_size`` at a time
(throughput) and one at a time (what a user waits), each with a 95% bootstrap interval; and any
two variants get the interval of their paired difference (the same batch, the same round). The
verdict states a latency difference only when that interval excludes 0. What other processes did
to the machine while timing is measured too (:class:`ftkit.models.threads.LoadMeter`) and said.

>>> timing = time_variants([zero, few, tuned], test_rows)        # doctest: +SKIP
>>> result = result.with_timing(timing)                           # doctest: +SKIP
>>> print(timing.difference("LoRA SFT", "8-shot"))                 # doctest: +SKIP
LoRA SFT - 8-shot: -0.031 s per request batched (95% CI -0.040 to -0.022)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from tqdm.auto import tqdm

from ftkit.data.canonical import as_rows, chat_turns
from ftkit.generation.generate import LocalModel, as_backend, generate

__all__ = ["LatencyDifference", "Timing", "rows_to_answer", "time_variants"]

# The timer. A module attribute so that a test can give the phase a clock of its own.
clock = time.perf_counter

# Rows a local model answers untimed before the phase (its first call pays for allocations and
# kernel selection). Each backend says its own (Backend.warmup_rows): a hosted one is paid per request.
WARMUP_ROWS = LocalModel.warmup_rows

# A phase whose timings spread this much (interquartile range over the median, any variant) was
# disturbed while it ran: on a quiet machine the spread of the demo's variants stays well under this.
WIDE_SPREAD = 0.5

# Other processes keeping at least this share of a core busy while timing are worth a word.
BUSY_NOTE = 0.25

KINDS = {"batched": "latency_s", "alone": "latency_1_s"}

# Rows each variant answers one at a time, per round: what a user waits for one request. A few,
# not the batch: each costs a whole answer's decoding (on a 164-task code set, 237 new tokens a
# row), and the one-at-a-time figure of two rows x three rounds already pairs six samples per variant.
INTERACTIVE_ROWS = 2

# Paired samples below which a latency difference is not stated, whatever its interval: a phase cut
# short by its budget may hold one pair, whose bootstrap interval is the pair itself.
MIN_SAMPLES = 3

# Seconds the whole phase may take, warm-up included: no new batch or row is started past it, once
# every variant has one batched and one one-at-a-time sample. Its work is what scoring did once more
# per round, so on long answers three full rounds cost more than the scoring (a code set's 44 rows,
# answers up to 199 tokens, four variants: 13 of 36 timed steps took 4 minutes on a 2-core CPU).
BUDGET_S = 120.0


@dataclass
class LatencyDifference:
    """The paired difference ``a - b`` in seconds per request, with its 95% interval."""

    a: str
    b: str
    kind: str  # "batched" or "alone"
    median: float
    low: float
    high: float
    samples: int

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 over at least :data:`MIN_SAMPLES` pairs: the timing can
        tell the two apart (the interval of one pair is that pair, whatever the noise)."""
        return self.samples >= MIN_SAMPLES and (self.low > 0 or self.high < 0)

    def verdict(self) -> str:
        """In words: faster or slower only when the interval excludes 0.

        >>> LatencyDifference("tuned", "8-shot", "batched", -0.05, -0.08, -0.02, 6).verdict()
        'tuned is faster than 8-shot'
        >>> LatencyDifference("tuned", "8-shot", "batched", -0.05, -0.05, -0.05, 1).verdict()
        'too few timed pairs (1) to tell tuned from 8-shot'
        """
        if self.samples < MIN_SAMPLES:
            return f"too few timed pairs ({self.samples}) to tell {self.a} from {self.b}"
        if not self.significant:
            return f"no difference the timing can see between {self.a} and {self.b}"
        return f"{self.a} is {'faster' if self.median < 0 else 'slower'} than {self.b}"

    def __str__(self) -> str:
        how = "batched" if self.kind == "batched" else "one at a time"
        return (f"{self.a} - {self.b}: {self.median:+.3f} s per request {how} "
                f"(95% CI {self.low:+.3f} to {self.high:+.3f})")


@dataclass
class Timing:
    """Seconds per request of each variant, from one interleaved phase (see :func:`time_variants`).

    ``batched[v]`` holds one sample per (round, batch): the batch's seconds over its rows;
    ``alone[v]`` one per (round, row) answered alone. Sample ``i`` of every variant was taken in
    the same round, on the same rows, next to the others': they pair.
    """

    batched: dict[str, list[float]]
    alone: dict[str, list[float]] = field(default_factory=dict)
    rows: int = 0
    batch_size: int = 0
    rounds: int = 0
    load: object = None  # a ftkit.models.threads.Load: what other processes did meanwhile (None: not measured)
    n_boot: int = 1000
    seed: int = 0
    budget_s: float | None = None  # set when the phase stopped at its time budget, before its planned rounds
    planned_rounds: int = 0

    @property
    def variants(self) -> list[str]:
        return list(self.batched)

    def _samples(self, variant: str, kind: str) -> np.ndarray:
        table = self.batched if kind == "batched" else self.alone
        if variant not in table:
            raise KeyError(f"no {kind} timing of {variant!r}; timed: {', '.join(table) or 'none'}")
        return np.asarray(table[variant], dtype=float)

    def median(self, variant: str, kind: str = "batched") -> tuple[float, float, float]:
        """``(median, low, high)`` seconds per request, with a 95% bootstrap interval."""
        return _median_ci(self._samples(variant, kind), self.n_boot, self.seed)

    def difference(self, a: str, b: str, kind: str = "batched") -> LatencyDifference:
        """The median of the paired differences ``a - b`` and its 95% bootstrap interval."""
        diff = self._samples(a, kind) - self._samples(b, kind)
        median, low, high = _median_ci(diff, self.n_boot, self.seed)
        return LatencyDifference(a=a, b=b, kind=kind, median=median, low=low, high=high, samples=len(diff))

    def spread(self, variant: str, kind: str = "batched") -> float:
        """Interquartile range over the median of a variant's samples (0: steady)."""
        s = self._samples(variant, kind)
        middle = float(np.median(s))
        return float(np.subtract(*np.percentile(s, [75, 25]))) / middle if middle > 0 else 0.0

    def summary(self):
        """One row per variant: ``latency_s`` (batched) and ``latency_1_s`` (one at a time), each the
        median with ``_low``/``_high`` 95% bounds (a pandas DataFrame)."""
        import pandas as pd

        lines = []
        for v in self.variants:
            line = {"variant": v}
            for kind, column in KINDS.items():
                if v in (self.batched if kind == "batched" else self.alone):
                    line[column], line[f"{column}_low"], line[f"{column}_high"] = self.median(v, kind)
            lines.append(line)
        return pd.DataFrame(lines).set_index("variant")

    def notes(self) -> list[str]:
        """How the timing was done and what disturbed it, in words."""
        alone = len(next(iter(self.alone.values()), [])) // max(self.rounds, 1)
        how = (f"timed together, interleaved: {self.rounds} rounds of {self.rows} rows in batches of "
               f"{self.batch_size}" + (f", and one at a time on {alone} row{'s' * (alone != 1)}" if alone else "")
               + "; medians with 95% intervals")
        if self.budget_s is not None:
            n_batched = len(next(iter(self.batched.values()), []))
            n_alone = len(next(iter(self.alone.values()), []))
            how = (f"timed together, interleaved, until the phase's {self.budget_s / 60:g}-minute budget (of "
                   f"{self.planned_rounds} rounds planned): per variant {n_batched} batch{'es' * (n_batched != 1)} "
                   f"of up to {self.batch_size} of {self.rows} rows" + (
                       f" and {n_alone} row{'s' * (n_alone != 1)} one at a time" if n_alone else "")
                   + "; medians with 95% intervals (fewer samples: wider)")
        out = [how]
        load = self.load
        if load is not None and load.others_busy >= BUSY_NOTE:
            out.append(f"timed beside other work: {load}. All variants were timed in the same rounds, so they "
                       "compare fairly, but each figure is slower than on a quiet machine")
        wide = {v: self.spread(v) for v in self.variants if self.spread(v) > WIDE_SPREAD}
        if wide:
            worst = max(wide, key=wide.get)
            out.append(f"the load changed while timing: {worst}'s batches spread {wide[worst]:.0%} of their median "
                       f"(a quiet machine stays under {WIDE_SPREAD:.0%}); a difference needs its interval to count")
        return out


def _median_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    boots = np.median(values[picks], axis=1)
    return float(np.median(values)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def rows_to_answer(dataset, turns: str = "all") -> list[dict]:
    """The prompt/completion rows a dataset asks to answer: conversations turn by turn (see
    :func:`ftkit.data.canonical.chat_turns`); an error that says what is missing otherwise."""
    given = as_rows(dataset)
    rows = chat_turns(given, turns)
    if given and not rows:
        raise ValueError("the conversations have no assistant turn after a user turn to answer")
    if not rows:
        raise ValueError("the evaluation split is empty")
    if "prompt" not in rows[0] or "completion" not in rows[0]:
        raise ValueError(f"evaluate needs prompt/completion rows (load them with ftkit.load_data); "
                         f"these rows have: {', '.join(rows[0])}")
    return rows


def time_variants(variants, dataset, *, batch_size: int = 16, rounds: int = 3, rows: int | None = None,
                  interactive_rows: int = INTERACTIVE_ROWS, turns: str = "all", progress: bool = True,
                  n_boot: int = 1000, seed: int = 0, budget_s: float | None = BUDGET_S) -> Timing:
    """Time every variant on the same rows in one phase: after an untimed warm-up of each, ``rounds``
    rounds in which each batch of the first ``rows`` rows is answered
    by every variant in turn, then each of the first ``interactive_rows`` rows alone by every
    variant in turn. The order of the variants rotates each round. ``rows`` defaults to one batch:
    with the defaults a variant costs about nine batches' time (three batches, six rows alone; a
    row alone costs about what a batch does on a CPU), a small price beside a scored evaluation.
    ``budget_s`` (:data:`BUDGET_S`; None: no limit) bounds the phase: once every variant has a
    batched and a one-at-a-time sample, no batch or row starts that would pass it (judged by the
    last one of its kind), and the notes say where it stopped. Every sample stays paired.

    ``variants`` are :class:`~ftkit.evaluation.evaluate.Variant` objects (local models, tuned runs, hosted
    endpoints alike); ``dataset`` the rows :func:`~ftkit.evaluation.evaluate.evaluate` scored.

    >>> timing = time_variants([zero, tuned], test, rounds=3)   # doctest: +SKIP
    >>> timing.summary()["latency_s"]                          # doctest: +SKIP
    """
    from ftkit.models.threads import LoadMeter

    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ; got {names}. Pass name=... to Variant")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    every = rows_to_answer(dataset, turns)
    timed = every[:rows or batch_size]
    single = timed[:max(0, interactive_rows)]
    batches = [list(range(i, min(i + batch_size, len(timed)))) for i in range(0, len(timed), batch_size)]
    answer, asked = {}, {}
    start = clock()
    for v in variants:
        answer[v.name] = partial(generate, v.model, v.tokenizer, max_new_tokens=v.max_new_tokens, adapter=v.adapter,
                                 stop_strings=list(v.stop_strings) or None, progress=False,
                                 answer_end=v.answer_end)
        asked[v.name] = [v.template.messages(r) for r in timed]
    for v in variants:  # untimed warm-up
        warm = as_backend(v.model, v.tokenizer).warmup_rows
        answer[v.name](asked[v.name][:warm], batch_size=batch_size)
    batched = {n: [] for n in names}
    alone = {n: [] for n in names} if single else {}
    samples = {"batched": batched, "alone": alone}  # per request: a batch's seconds over its rows
    steps = rounds * (len(batches) + len(single)) * len(names)
    bar = tqdm(total=steps, desc="timing, interleaved", disable=not progress, leave=False)
    meter = LoadMeter()
    last: dict[str, float] = {}  # seconds the last batch / row alone took, all variants in turn
    ran, stopped = 0, False
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotated: no variant always goes first
        units = [("batched", idx) for idx in batches] + [("alone", [i]) for i in range(len(single))]
        for kind, idx in units:
            if budget_s is not None and "batched" in last and ("alone" in last or not single) \
                    and clock() - start + last.get(kind, 0.0) > budget_s:
                stopped = True
                break
            ran = r + 1
            t_unit = clock()
            for name in order:
                t0 = clock()
                answer[name]([asked[name][i] for i in idx], batch_size=len(idx))
                samples[kind][name].append((clock() - t0) / len(idx))
                bar.update()
            last[kind] = clock() - t_unit
        if stopped:
            break
    bar.close()
    return Timing(batched=batched, alone=alone, rows=len(timed), batch_size=batch_size, rounds=ran,
                  load=meter.read(), n_boot=n_boot, seed=seed,
                  budget_s=budget_s if stopped else None, planned_rounds=rounds)
