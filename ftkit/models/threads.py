"""How many CPU threads torch uses, chosen from the cores other processes leave free.

A learner's laptop always runs something else. torch starts one intra-op thread per core, and
its OpenMP threads meet at a barrier after every small operation: when another process holds one
of the cores, the thread that lost it is descheduled for a whole time slice while its sibling
spins, waiting. Beside a busy process, one thread per core can make a training step several times
slower than fewer threads would; ``benchmarks/contention.py`` measures it on the machine it runs on.

So ftkit measures how many cores *other* processes keep busy (all the machine's busy CPU time
minus this process's own, per second) and uses the cores left free, never more than torch's own
default:

>>> choose_threads(others_busy=1.0, cores=2).threads
1

:func:`apply` makes the choice and sets it in torch; :func:`training_callback` checks again every
~25 s of training. ``FTKIT_THREADS=N`` (or a setting, ``ModelConfig.threads``) fixes the count.

This module is light: torch loads only when a choice is applied or torch's default is read, and
psutil (installed with accelerate) only when load is measured; without psutil the 1-minute load
average stands in. It is over 400 lines because measuring the load, choosing a count, applying it
and re-checking it from a training callback share one lock and one cached choice.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

__all__ = [
    "ENV", "Load", "LoadMeter", "ThreadChoice", "apply", "available_cores", "choose_threads", "current",
    "measure", "torch_default", "training_callback",
]

ENV = "FTKIT_THREADS"
# A fresh sample sleeps this long: long enough to see a busy process (at 100 Hz accounting, 25
# ticks for each busy core), short enough not to be noticed when a model loads.
SAMPLE_S = 0.25
# load_model and describe_device reuse a choice made this recently: the test suite loads many
# models and would otherwise pay a sample each time.
REUSE_S = 60.0
# The training callback checks the load this often, over the span since its last check.
CHECK_EVERY_S = 25.0
# The second of 2 cores pays only while other processes leave nearly all of it. Measured with
# benchmarks/contention.py --duty (LoRA SFT steps of the embedded model, 2 threads against 1, beside
# a process busy a share of each 20 ms): 2 threads were 1.49x the speed of 1 alone, 1.18x beside
# 0.08 busy, 0.97x at 0.20, 1.00x at 0.29, 1.07x at 0.40, 0.89x at 0.52, 0.84x at 0.74, 0.39x at 1.0.
# Past ~0.2 a second thread gains nothing, and a wrong extra thread costs far more (up to 2.5x here,
# 15x under several jobs) than a missing one (at most 1.5x): a core counts as free while others
# keep at most FREE_SHARE of it busy, so cores - others_busy rounds up from .75, not .5.
FREE_SHARE = 0.25

_lock = threading.RLock()  # torch_default() is called with it held
_torch_default: int | None = None
# What ftkit last passed to torch.set_num_threads, per thread: torch's count is OpenMP's per-thread
# setting (set in one thread, a thread that already computed keeps its own; a new thread takes the
# last count set anywhere), so a hand-set count is recognised against this thread's own.
_local = threading.local()
_current: ThreadChoice | None = None
_current_setting: tuple | None = None  # (setting, FTKIT_THREADS) the current choice was made for


# --------------------------------------------------------------------------------------------
# Measuring what other processes use


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it).

    >>> available_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # Windows
        return None


@dataclass(frozen=True)
class _Snapshot:
    wall: float
    busy: float | None  # busy CPU seconds of the cores we may run on, all processes; None without psutil
    own: float  # this process's CPU seconds, all threads
    loadavg: tuple[float, float, float] | None


def _busy_seconds(psutil, cpus: list[int] | None) -> float:
    per_cpu = psutil.cpu_times(percpu=True)
    if cpus is None or max(cpus) >= len(per_cpu):  # offline CPUs shift the list: count them all
        chosen = per_cpu
    else:
        chosen = [per_cpu[i] for i in cpus]
    # Busy is everything but idle and I/O wait. Steal counts: on a VM it is time the host gave our
    # core to someone else, which stalls an OpenMP barrier just as another process does. (guest
    # time is already inside user on Linux.)
    return sum(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
               + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0) for t in chosen)


def _own_seconds(psutil) -> float:
    if psutil is not None:
        t = psutil.Process().cpu_times()
        return t.user + t.system
    t = os.times()
    return t.user + t.system


def _snapshot() -> _Snapshot:
    psutil = _psutil()
    busy = _busy_seconds(psutil, _affinity()) if psutil is not None else None
    return _Snapshot(wall=time.perf_counter(), busy=busy, own=_own_seconds(psutil), loadavg=_loadavg())


@dataclass(frozen=True)
class Load:
    """What the CPUs did over a span: how many cores other processes kept busy, on average."""

    others_busy: float  # cores' worth of CPU time other processes used per second
    own_busy: float  # the same for this process (all its threads)
    cores: int
    seconds: float
    loadavg_start: tuple[float, float, float] | None = None
    loadavg_end: tuple[float, float, float] | None = None
    source: str = "psutil"  # or "loadavg": a rough stand-in without psutil

    def __str__(self) -> str:
        text = (f"other processes kept {self.others_busy:.1f} of {self.cores} cores busy "
                f"over {self.seconds:.1f} s (this process {self.own_busy:.1f})")
        if self.loadavg_start and self.loadavg_end:
            text += f"; load average {self.loadavg_start[0]:.2f} -> {self.loadavg_end[0]:.2f}"
        return text


class LoadMeter:
    """Measures a span without sleeping: start it when a phase begins, :meth:`read` it at its end.

    >>> meter = LoadMeter()
    >>> load = meter.read()            # what other processes did since the meter started
    >>> load.others_busy >= 0 and load.cores >= 1
    True
    """

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        """Start a new span now."""
        self._start = _snapshot()

    @property
    def elapsed(self) -> float:
        """Seconds since the span started (no measurement)."""
        return time.perf_counter() - self._start.wall

    def read(self, restart: bool = False) -> Load:
        """The :class:`Load` from the start (or the last restart) until now."""
        end = _snapshot()
        start = self._start
        if restart:
            self._start = end
        seconds = max(end.wall - start.wall, 1e-6)
        cores = available_cores()
        own = max(end.own - start.own, 0.0) / seconds
        if start.busy is not None and end.busy is not None:
            others = (end.busy - start.busy) / seconds - own
            source = "psutil"
        else:
            # Without psutil: the 1-minute load average counts runnable threads, ours too; it lags
            # by a minute and counts waiting threads as busy, so it is only a rough stand-in.
            load = (end.loadavg or (0.0,))[0]
            others = load - own
            source = "loadavg"
        # Accounting ticks make a short span jitter a little around its true value.
        others = min(max(others, 0.0), float(cores))
        return Load(others_busy=others, own_busy=own, cores=cores, seconds=seconds,
                    loadavg_start=start.loadavg, loadavg_end=end.loadavg, source=source)


def measure(seconds: float = SAMPLE_S) -> Load:
    """A fresh sample: sleep ``seconds`` and say how many cores other processes kept busy.

    >>> measure(0.05).cores == available_cores()
    True
    """
    meter = LoadMeter()
    time.sleep(seconds)
    return meter.read()


# --------------------------------------------------------------------------------------------
# The choice


def torch_default() -> int:
    """torch's intra-op thread count as it was before ftkit first changed it (read once, at first
    use: a count set by hand before that, or through ``OMP_NUM_THREADS``, is the ceiling).

    >>> torch_default() >= 1
    True
    """
    global _torch_default
    with _lock:
        if _torch_default is None:
            import torch

            _torch_default = torch.get_num_threads()
        return _torch_default


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads torch gets, and why."""

    threads: int
    cores: int
    others_busy: float | None  # None when the count was set, not measured
    torch_default: int
    reason: str  # "as set", "FTKIT_THREADS=1", or the rule with its numbers
    chosen_at: float = field(default_factory=time.monotonic, compare=False, repr=False)

    def __str__(self) -> str:
        threads = (f"{self.threads} thread{'s' if self.threads != 1 else ''} of {self.cores} "
                   f"core{'s' if self.cores != 1 else ''}")
        if self.others_busy is None:
            return f"{threads} ({self.reason})"
        return f"{threads} (other processes keep {self.others_busy:.1f} busy)"


def _env_threads() -> int:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        raise ValueError(f"{ENV}={value!r} is not a whole number; set it to a thread count such as 1, "
                         f"or unset it (or 0) for the automatic choice") from None


def choose_threads(setting: int = 0, *, others_busy: float | None = None, cores: int | None = None) -> ThreadChoice:
    """How many threads torch should use: ``setting`` when above 0, else ``FTKIT_THREADS`` when
    set above 0, else one per core other processes leave free (a core they keep busy more than a
    quarter of the time is not free), at least 1 and at most torch's default. ``others_busy``
    (cores' worth) is measured when not given (a 0.25 s sample).

    >>> str(choose_threads(1, cores=2))
    '1 thread of 2 cores (as set)'
    >>> choose_threads(others_busy=0.0, cores=2).threads == min(2, torch_default())
    True
    """
    if setting < 0:
        raise ValueError(f"threads={setting} is not a thread count; use 0 for the automatic choice or a number >= 1")
    cores = cores or available_cores()
    default = torch_default()
    if setting > 0:
        return ThreadChoice(setting, cores, None, default, "as set")
    env = _env_threads()
    if env > 0:
        return ThreadChoice(env, cores, None, default, f"{ENV}={env}")
    if others_busy is None:
        others_busy = measure().others_busy
    # A core is free while others keep at most FREE_SHARE of it busy (see there for the numbers).
    free = math.floor(cores - others_busy + FREE_SHARE)
    threads = max(1, min(default, free))
    rule = (f"{cores} cores, other processes keep {others_busy:.1f} busy, so {max(free, 0)} free; "
            f"at least 1, at most torch's default {default}")
    return ThreadChoice(threads, cores, float(others_busy), default, rule)


def _sync_ceiling() -> None:
    """A count set by hand (``torch.set_num_threads``) since ftkit last set one in this thread
    becomes the new ceiling, as a count set before ftkit's first use is: ftkit never raises it."""
    global _torch_default
    applied = getattr(_local, "applied", None)
    if applied is None:
        return
    import torch

    now = torch.get_num_threads()
    if now != applied:
        _torch_default = now


def _set_torch_threads(n: int) -> None:
    import torch

    torch_default()  # read before ftkit's first change
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _local.applied = n


def apply(setting: int = 0, *, others_busy: float | None = None, cores: int | None = None,
          reuse_s: float = 0.0) -> ThreadChoice:
    """Choose (see :func:`choose_threads`) and set torch's thread count; return the choice.

    torch's count belongs to the thread that sets it (and to threads that start computing
    afterwards): call this in the thread that computes, as :func:`training_callback` does.

    ``reuse_s`` > 0 keeps a choice made that recently for the same setting, without measuring
    again (what :func:`ftkit.load_model` does, so loading many models costs one sample a minute).

    >>> choice = apply(1)
    >>> import torch; torch.get_num_threads()
    1
    >>> _ = apply(torch_default())   # back to torch's own count
    """
    global _current, _current_setting
    key = (setting, os.environ.get(ENV, ""))
    with _lock:
        _sync_ceiling()
        choice = _current
        fresh = (choice is not None and reuse_s > 0 and _current_setting == key and others_busy is None
                 and cores is None and time.monotonic() - choice.chosen_at < reuse_s
                 and choice.threads <= _torch_default)
    if not fresh:
        choice = choose_threads(setting, others_busy=others_busy, cores=cores)  # may sleep: outside the lock
    with _lock:
        _set_torch_threads(choice.threads)
        _current, _current_setting = choice, key
    return choice


def current() -> ThreadChoice | None:
    """The last choice :func:`apply` set, or None before the first.

    >>> _ = apply(torch_default()); current().reason
    'as set'
    """
    return _current


# --------------------------------------------------------------------------------------------
# During training


def training_callback(setting: int | None = None, *, every_s: float = CHECK_EVERY_S, verbose: bool = True):
    """A transformers ``TrainerCallback`` that keeps the thread choice right while a run trains.

    At the start of training it applies the choice (reusing one made in the last minute); then, at
    the end of the first step after every ``every_s`` seconds, it reads what other processes did
    over that span (no sleeping: a :class:`LoadMeter`) and sets the new count when the choice
    changed: a neighbour that starts halfway through a run takes it down to the free cores, and
    when the neighbour ends the run gets them back. With ``setting`` or ``FTKIT_THREADS`` above 0
    the count is fixed and nothing is measured; ``setting=None`` (what every ftkit trainer uses)
    keeps the setting of the last :func:`apply`, so a run's ``model.threads`` holds through its
    training. ``callback.changes`` lists each choice it set.

    >>> callback = training_callback()
    >>> trainer = SFTTrainer(..., callbacks=[callback])      # doctest: +SKIP
    """
    from transformers import TrainerCallback

    class ThreadsCallback(TrainerCallback):
        def __init__(self):
            self.setting, self.every_s, self.verbose = setting, every_s, verbose
            self.meter: LoadMeter | None = None
            self.changes: list[ThreadChoice] = []

        def on_train_begin(self, args, state, control, **kwargs):
            if self.setting is None:  # the setting the caller last applied (a run's model.threads), else automatic
                self.setting = _current_setting[0] if _current_setting is not None else 0
            self.changes.append(apply(self.setting, reuse_s=REUSE_S))
            self.meter = LoadMeter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.meter is None:  # a trainer that skipped on_train_begin (resumed by hand)
                self.meter = LoadMeter()
                return
            if self.setting > 0 or _env_threads() > 0:
                return  # fixed: nothing to adapt
            if self.meter.elapsed < self.every_s:
                return
            load = self.meter.read(restart=True)
            choice = apply(self.setting, others_busy=load.others_busy, cores=load.cores)
            if self.changes and choice.threads == self.changes[-1].threads:
                return
            self.changes.append(choice)
            if self.verbose:
                print(f"ftkit: over the last {load.seconds:.0f} s other processes kept {load.others_busy:.1f} "
                      f"of {load.cores} cores busy; training goes on with {choice}", file=sys.stderr)

    return ThreadsCallback()
