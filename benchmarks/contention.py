"""Torch threads beside a busy process: torch's default against ftkit's choice, side by side in one run.

    .venv/bin/python benchmarks/contention.py [--steps 6] [--batch 4] [--rows 24] [--rounds 2] [--cap 30]
                                              [--child-env OMP_WAIT_POLICY=PASSIVE] [--duty 0.25,0.5,0.75]

A learner's laptop always runs something else. Each figure is measured alone and beside ONE busy
process (a ``while True: pass`` of this script's own, started and stopped here), each with torch's
default thread count and with ftkit's choice (``ftkit.models.threads.choose_threads``, measured with the
busy process running; while timing, ``FTKIT_THREADS`` holds the count so nothing in ftkit changes it):

- LoRA SFT: ``train_sft`` on the embedded model, --batch short rows of the built-in routing example
  a step, rendered with the classification task's zero-shot template; a step's time runs from one
  step's log event to the next, step 1 (warm-up) left out, the rest summarized by their median;
- batched generation: ``ftkit.generation.generate`` on --rows held-out prompts in batches of 8, greedy, 12 new
  tokens, after a 2-row warm-up: rows per second.

Each figure runs --rounds times, in ABBA order (default, ftkit, ftkit, default), pooled: two
figures with the same thread count differed by up to 10% when timed once each.

A step beside a busy process with torch's default threads can take a minute, so each figure stops
once it has run past --cap seconds (with at least one timed step, or one batch), and the SFT
warm-up step, left out of the figure, runs at ftkit's choice (at torch's default beside a busy
process it alone took 60-85 s). The load other
processes put on the machine while each figure was timed is printed beside it (the busy process
counts as one core there): a figure measured while someone else's job ran says so.

OMP_WAIT_POLICY=PASSIVE (must be in the environment before torch loads, so measured in a child
process of this script) makes OpenMP threads that wait at a barrier sleep instead of spinning;
the child times the same four figures (--child-env sets another variable, e.g. GOMP_SPINCOUNT=10000,
or '' skips the child) (a side with the same count as the one before is not
timed twice).

--duty adds a neighbour busy only part of the time (spinning that share of every 20 ms): ftkit's
measurement of it, and a SFT step with 1 thread against 2: the figures behind the rule's threshold
(``ftkit.models.threads.FREE_SHARE``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _measured import record

SPIN = """
import sys, time
duty, period = float(sys.argv[1]), 0.02
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < duty * period:
        pass
    if duty < 1:
        time.sleep((1 - duty) * period)
"""


@contextlib.contextmanager
def neighbour(duty: float = 1.0):
    """A process of our own, busy ``duty`` of the time (1.0: ``while True: pass``), for the block."""
    if duty <= 0:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", SPIN, str(duty)])
    time.sleep(0.3)  # past its start-up, so a measurement sees it busy
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def fixed_threads(n: int):
    """torch at ``n`` threads, and FTKIT_THREADS=n so that nothing in ftkit changes it meanwhile."""
    import torch

    before = os.environ.get("FTKIT_THREADS")
    os.environ["FTKIT_THREADS"] = str(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FTKIT_THREADS", None)
        else:
            os.environ["FTKIT_THREADS"] = before


def threads_default() -> int:
    from ftkit.models import threads

    return threads.torch_default()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Workload:
    """The model, the SFT rows and the generation prompts, loaded once."""

    def __init__(self, args):
        from ftkit import load_model, split, tasks
        from ftkit.data import examples

        self.args = args
        self.model, self.tok = load_model(verbose=False)
        labels = examples.labels("support_routing")
        self.template = tasks.get("classification").template("zero-shot", labels=labels)
        data = examples.load("support_routing", verbose=False)
        parts = split(data, test_size=96, seed=0, stratify_by="label")
        self.train = parts["train"].shuffle(seed=0).select(range(args.batch * (1 + args.steps)))
        self.convs = [self.template.messages(r) for r in parts["test"].select(range(args.rows))]
        # Each new batch shape is paid for once (kernels and buffers are made for it): the first
        # figure of a run came out 1.15-1.19x slower than the same thread count timed next. All the
        # steps and batches, once, untimed, before any figure.
        self.sft_steps(threads_default(), threads_default(), cap=1e9)
        self.generation(cap=1e9)

    def sft_steps(self, n_threads: int, warmup_threads: int, cap: float) -> dict:
        """Seconds of each SFT step at ``n_threads`` after the first (warm-up), stopping past ``cap``
        seconds. The warm-up step, left out anyway, runs at ``warmup_threads`` (ftkit's choice):
        at torch's default beside a busy process it alone took 60-85 s."""
        import torch

        from ftkit.training.events import EventBus, StopFlag
        from ftkit.training.sft import SFTSettings, train_sft

        stamps, stop, bus = [], StopFlag(), EventBus()

        def stamp(_):
            stamps.append(time.perf_counter())
            if len(stamps) == 1:
                torch.set_num_threads(warmup_threads)
            elif len(stamps) == 2:
                torch.set_num_threads(n_threads)  # from the second step on: the figure's count
            if len(stamps) >= 3 and stamps[-1] - stamps[1] > cap:  # start, warm-up, one timed step
                stop.set()

        bus.on("start", stamp)
        bus.on("log", stamp)
        root = tempfile.mkdtemp(prefix="contention-")
        try:
            train_sft(self.model, self.tok, self.train, template=self.template, bus=bus, stop=stop,
                      runs_root=root,
                      config=SFTSettings(name="contention", max_steps=1 + self.args.steps,
                                         batch_size=self.args.batch, logging_steps=1, save_steps=10_000,
                                         trl={"disable_tqdm": True}))
        finally:
            torch.set_num_threads(n_threads)
            shutil.rmtree(root, ignore_errors=True)  # the saved adapter: ~80 MB a run
        times = [b - a for a, b in itertools.pairwise(stamps)]
        return {"steps": times[1:], "warmup_s": times[0]}

    def generation(self, cap: float) -> dict:
        """Rows per second of batched generation, stopping past ``cap`` seconds."""
        from ftkit.generation.generate import generate

        generate(self.model, self.tok, self.convs[:2], max_new_tokens=4, progress=False)  # warm-up
        done, t0 = 0, time.perf_counter()
        for start in range(0, len(self.convs), 8):
            batch = self.convs[start:start + 8]
            generate(self.model, self.tok, batch, max_new_tokens=12, batch_size=8, progress=False)
            done += len(batch)
            if time.perf_counter() - t0 > cap:
                break
        return {"rows": done, "gen_s": time.perf_counter() - t0}


def timed(work: Workload, n_threads: int, warmup_threads: int, cap: float) -> dict:
    """SFT and generation at ``n_threads``, with the load other processes added meanwhile."""
    from ftkit.models.threads import LoadMeter

    with fixed_threads(n_threads):
        meter = LoadMeter()
        sft = work.sft_steps(n_threads, warmup_threads, cap)
        gen = work.generation(cap)
        load = meter.read()
    return {"threads": n_threads, **sft, **gen, "busy_s": load.others_busy * load.seconds, "span_s": load.seconds}


def pooled(runs: list[dict]) -> dict:
    """The runs of one figure as one: the median of all their timed steps, rows over seconds."""
    steps = [t for r in runs for t in r["steps"]]
    return {"threads": runs[0]["threads"], "step_s": statistics.median(steps), "timed": len(steps),
            "rows_s": sum(r["rows"] for r in runs) / sum(r["gen_s"] for r in runs),
            "rows": sum(r["rows"] for r in runs),
            "others_busy": sum(r["busy_s"] for r in runs) / sum(r["span_s"] for r in runs)}


def conditions(work: Workload, sides: list[str], cap: float, rounds: int, reuse_same: bool = False) -> dict:
    """Each of quiet/busy x ``sides`` ("default", "ftkit"), the choice measured in each load.

    ``rounds`` runs of each side in ABBA order (default, ftkit, ftkit, default, ...): drift of the
    machine's speed weighs on both; ``reuse_same``: a side with the same thread count as the one
    before is not timed again."""
    from ftkit.models import threads

    results = {}
    for where in ("quiet", "busy"):
        with neighbour(1.0 if where == "busy" else 0.0):
            os.environ.pop("FTKIT_THREADS", None)
            choice = threads.choose_threads()  # ftkit's own measurement, the neighbour running
            results[f"{where}-choice"] = {"threads": choice.threads, "text": str(choice)}
            counts = {"default": threads.torch_default(), "ftkit": choice.threads}
            runs = {side: [] for side in sides}
            for r in range(rounds):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    same = [s for s in sides if s != side and counts[s] == counts[side] and runs[s]]
                    if reuse_same and same:
                        continue
                    runs[side].append(one := timed(work, counts[side], choice.threads, cap))
                    print(f"  {where:5} {side:7} {one['threads']} thread(s): SFT steps "
                          f"{', '.join(f'{t:.2f}' for t in one['steps'])} s (warm-up {one['warmup_s']:.1f} s), "
                          f"generation {one['rows'] / one['gen_s']:.2f} rows/s; other processes kept "
                          f"{one['busy_s'] / one['span_s']:.1f} busy", file=sys.stderr, flush=True)
            for side in sides:
                same = [s for s in sides if counts[s] == counts[side] and runs[s]]
                results[f"{where}-{side}"] = pooled(runs[side] or runs[same[0]])
    return results


def duty_probe(work: Workload, duties: list[float], cap: float) -> None:
    """A neighbour busy part of the time: what ftkit measures, and a SFT step at 1 and 2 threads."""
    from ftkit.models import threads

    for duty in duties:
        with neighbour(duty):
            seen = threads.measure(1.0).others_busy
            one = statistics.median(timed(work, 1, 1, cap)["steps"])
            two = statistics.median(timed(work, 2, 1, cap)["steps"])
        print(f"neighbour busy {duty:.0%} of the time: measured others_busy {seen:.2f}; SFT step 1 thread "
              f"{one:.2f} s, 2 threads {two:.2f} s: 2 threads {one / two:.2f}x the speed of 1")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed SFT steps per figure, after one warm-up step")
    ap.add_argument("--batch", type=int, default=4, help="rows per SFT step")
    ap.add_argument("--rows", type=int, default=24, help="prompts generated per figure, in batches of 8")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each figure, in ABBA order (the child: 1)")
    ap.add_argument("--cap", type=float, default=30.0, help="seconds after which a figure stops (SFT, generation)")
    ap.add_argument("--child-env", default="OMP_WAIT_POLICY=PASSIVE",
                    help="NAME=VALUE for a child process timed the same way ('' for none)")
    ap.add_argument("--duty", default="", help="comma list of shares of time a partial neighbour is busy")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    started = time.perf_counter()

    from ftkit.models import threads

    if args.child:  # --child-env set by the parent
        threads.torch_default()  # before anything in ftkit changes it
        work = Workload(args)
        print(json.dumps(conditions(work, ["default", "ftkit"], args.cap, rounds=1, reuse_same=True)))
        return

    default = threads.torch_default()  # before anything in ftkit changes it
    import torch

    print(f"machine: {threads.available_cores()} cores ({os.cpu_count()} online), {cpu_model()}; torch "
          f"{torch.__version__}, {default} threads by default; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, GOMP_SPINCOUNT {os.environ.get('GOMP_SPINCOUNT', 'unset')}; "
          f"load average now {os.getloadavg()[0]:.2f}")
    work = Workload(args)
    print(f"workload: LoRA SFT steps of {args.batch} rows (1 warm-up + up to {args.steps} timed), generation of "
          f"{args.rows} rows in batches of 8; each figure stops past {args.cap:.0f} s", flush=True)
    results = conditions(work, ["default", "ftkit"], args.cap, rounds=args.rounds)
    passive, label = None, args.child_env
    if label:
        name, value = label.split("=", 1)
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--batch",
                              str(args.batch), "--rows", str(args.rows), "--cap", str(args.cap)],
                             env={**os.environ, name: value}, stdout=subprocess.PIPE, text=True,
                             check=True)
        passive = json.loads(out.stdout.strip().splitlines()[-1])
    if args.duty:
        duty_probe(work, [float(d) for d in args.duty.split(",")], args.cap)

    for where in ("quiet", "busy"):
        print(f"{where}: ftkit chose {results[f'{where}-choice']['text']}")
    for where in ("quiet", "busy"):
        for side in ("default", "ftkit"):
            r = results[f"{where}-{side}"]
            print(f"{where}, {side} ({r['threads']} thread(s)): SFT {1 / r['step_s']:.3f} steps/s "
                  f"({r['step_s']:.2f} s a step, median of {r['timed']}), generation {r['rows_s']:.2f} rows/s; other processes kept "
                  f"{r['others_busy']:.1f} cores busy while timing")
    if passive:
        for where in ("quiet", "busy"):
            for side in ("default", "ftkit"):
                p, a = passive[f"{where}-{side}"], results[f"{where}-{side}"]
                print(f"{label}, {where}, {side} ({p['threads']} thread(s)): SFT {1 / p['step_s']:.3f} "
                      f"steps/s ({a['step_s'] / p['step_s']:.2f}x unset), generation {p['rows_s']:.2f} rows/s "
                      f"({p['rows_s'] / a['rows_s']:.2f}x unset); other processes kept {p['others_busy']:.1f} busy")
        for where in ("quiet", "busy"):
            p, a = passive[f"{where}-default"], results[f"{where}-ftkit"]
            print(f"{label} with torch's default threads vs unset with ftkit's threads, {where}: "
                  f"SFT {a['step_s'] / p['step_s']:.2f}x, generation {p['rows_s'] / a['rows_s']:.2f}x")
    quiet_others = max(r["others_busy"] for k, r in results.items() if k.startswith("quiet-") and "step_s" in r)
    if quiet_others > 0.3:
        print(f"note: other processes kept up to {quiet_others:.1f} cores busy during the 'quiet' figures: "
              "someone else's job ran; run again when the machine is quiet")
    print(f"total wall time {(time.perf_counter() - started) / 60:.1f} min")

    sft = {k: 1 / r["step_s"] for k, r in results.items() if "step_s" in r}
    gen = {k: r["rows_s"] for k, r in results.items() if "rows_s" in r}
    for name, rate in (("SFT steps/s", sft), ("generation rows/s", gen)):
        print(f"{name}, beside one busy process vs alone, ftkit's threads: "
              f"{rate['busy-ftkit'] / rate['quiet-ftkit']:.2f} (target >= 0.4)")
        print(f"{name}, ftkit's threads vs torch defaults, beside one busy process: "
              f"{rate['busy-ftkit'] / rate['busy-default']:.2f} (target >= 2)")
        print(f"{name}, ftkit's threads vs torch defaults, quiet: "
              f"{rate['quiet-ftkit'] / rate['quiet-default']:.2f} (target >= 0.95)")
    figures = {"others_busy_while_quiet": quiet_others}
    for short, rate in (("sft", sft), ("generation", gen)):
        figures[f"{short}_busy_vs_alone"] = rate["busy-ftkit"] / rate["quiet-ftkit"]
        figures[f"{short}_ftkit_vs_default_busy"] = rate["busy-ftkit"] / rate["busy-default"]
        figures[f"{short}_ftkit_vs_default_quiet"] = rate["quiet-ftkit"] / rate["quiet-default"]
    record("contention", figures)


if __name__ == "__main__":
    main()
