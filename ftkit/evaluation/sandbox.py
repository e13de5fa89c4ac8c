"""Run model-generated Python against its test programs, in a sandboxed child process.

A snippet never runs in this process: each call starts ``python -I`` (isolated mode) in a session
of its own, hands it the setup, code and tests on stdin, and reads the verdict back through a pipe.
Inside, the code and its tests run in two processes (``_sandbox_runner.py``): the tests' process
is not dumpable and alone holds the verdict's pipe, and the code's values reach it as data, so
nothing the code does in its own process (frames, trace functions, ``gc``, an object equal to
everything, a builtin of its own) decides the verdict. What else fences it in depends on what the
machine allows; :func:`isolation` says what is in effect and what remains possible, in words a
notebook can print. (One module, over 400 lines because the levels of isolation, their probe and
the words that describe them must change together: a level split from its description drifts.)
As root with the right to unshare (a VM, a privileged container, Colab) a run
gets all of this:

- an unused uid (65520-65533, one per concurrent run) instead of root, with no capabilities and
  ``no_new_privs``: it cannot write to the project, read ``/root`` or signal the notebook;
- new network, IPC, mount and PID namespaces: no network interface is up, so every connection
  fails; a fresh ``/proc`` shows only the run's processes; ``/tmp``, ``/var/tmp``, ``/dev/shm``
  and ``/run/lock`` are one private tmpfs; ``/root``, ``/home``, ``/run`` (the host's sockets) and
  ``/sys`` are empty (the interpreter's own folders are bound back read-only); what it starts
  dies with it;
- limits: wall clock, CPU seconds, address space, processes (threads count), file size, output;
- six fixed environment variables (nothing inherited) and a fresh HOME and working folder.

As root without namespaces (a default Docker container) it still gets its own uid, the limits and
the clean environment; sockets are refused by a Python-level guard (a determined snippet can get
past it), and what its uid leaves running or in the shared /tmp is removed after the run. Without
root, a user namespace gives the same namespaces, but the snippet keeps your uid: it can read what
you can outside the hidden folders. Without root or namespaces it has the guard, the limits and
its session, sees the host's ``/proc``, and a child that calls ``setsid()`` can outlive the run.
``FTKIT_SANDBOX=<level>`` caps the level (:data:`LEVELS`), to see what a weaker machine gets.

>>> run_tests("def inc(x):\\n    return x + 1", ["assert inc(1) == 2", "assert inc(2) == 4"]).reason
'assert failed: assert inc(2) == 4'
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import math
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
import time
from dataclasses import dataclass

__all__ = ["Outcome", "extract_code", "isolation", "run_many", "run_tests"]

# 65520-65533 lie between systemd's dynamic users (61184-65519) and nobody (65534): Debian reserves
# them and nothing allocates them. A uid per run means RLIMIT_NPROC counts only that run's tasks (it
# counts per uid, and not at all for root), and concurrent runs cannot signal each other.
UID_SLOTS = range(65520, 65534)
NEWNS, NEWIPC, NEWPID, NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
# World-writable folders (one private tmpfs); folders hidden behind an empty one: homes, /run (the
# host's Unix sockets: D-Bus, databases) and /sys (the host's devices and network interfaces).
COVERED, HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"), ("/root", "/home", "/run", "/sys")


@dataclass(frozen=True)
class Outcome:
    """The verdict of one run: ``reason`` is "passed" or says why not, in words."""

    passed: bool
    reason: str
    failed_test: str | None
    duration_s: float
    output: str


_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_CODE_START = re.compile(r"^(def |async def |class |import |from [\w.]+ import |@\w)", re.MULTILINE)


def extract_code(text: str) -> str:
    """The Python code in a model's answer.

    The first ```python (or ```py, or bare ```) fenced block if there is one (an unclosed fence,
    as a length-cut answer leaves it, runs to the end). Otherwise the whole text when it is valid
    Python (module constants before the first ``def`` included), else the longest stretch of
    whole lines that is, after leading prose and before trailing prose; else the text from the
    first line that starts with ``def``, ``class``, ``import``, ``from x import`` or a decorator.

    >>> extract_code("Here you go:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1'
    >>> extract_code("Sure! This works.\\nRATE = 2\\ndef f():\\n    return RATE\\nIt doubles.")
    'RATE = 2\\ndef f():\\n    return RATE'
    """
    for m in _FENCE.finditer(text):
        if m.group(1).lower() in ("python", "py", "python3", ""):
            return m.group(2).strip("\n").rstrip()
    text = text.strip("\n").rstrip()
    if _compiles(text):
        return text
    lines = text.splitlines()[:MAX_SCANNED_LINES]
    for size in range(len(lines) - 1, 0, -1):  # the longest stretch first: no code line dropped
        for first in range(len(lines) - size + 1):
            part = "\n".join(lines[first:first + size])
            if part.strip() and not lines[first][:1].isspace() and _compiles(part) and _looks_like_code(part):
                return part.strip("\n").rstrip()
    start = _CODE_START.search(text)
    return (text[start.start():] if start else text).strip("\n").rstrip()


# An answer longer than this is not searched line by line for its code (n^2 compiles).
MAX_SCANNED_LINES = 80


def _compiles(source: str) -> bool:
    try:
        compile(source, "<answer>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def _looks_like_code(source: str) -> bool:
    """Valid Python that is code, not a sentence that happens to parse (``Done.`` does not)."""
    return _CODE_START.search(source) is not None or re.search(r"^\w+\s*=", source, re.MULTILINE) is not None


def run_tests(code: str, tests: list[str] | str, setup: str = "", *, timeout_s: float = 5.0,
              memory_mb: int = 512, max_processes: int = 8, max_output_bytes: int = 64_000,
              disk_mb: int = 64, site_packages: bool = True) -> Outcome:
    """Run ``setup``, then ``code``, then each test in order in one sandboxed process.

    Each item of ``tests`` is one program of any number of lines (an ``assert``, a ``for`` loop of
    them, a ``def check(candidate):`` and its call), run in the same namespace after the ones
    before; a string is one program, never split into lines (:func:`ftkit.evaluation.metrics.code_tests`
    turns a dataset row into this list). The first failing test ends the run: ``failed_test`` is
    that item of ``tests``, and the reason quotes the line that failed (inside a ``check()``
    helper, that helper's assert).

    Every thread counts against ``max_processes``, and each process may use ``memory_mb``: the
    worst case is their product, hence 8. ``disk_mb`` caps each file written and the private tmpfs.
    ``site_packages=False`` adds ``-S``: stdlib only, ~7 ms less per run. The code runs as module
    ``__solution__``, so an ``if __name__ == "__main__":`` demo block is skipped.

    >>> run_tests("def f(x):\\n    return 2 * x", ["assert f(2) == 4"]).passed
    True
    """
    if not code.strip():
        return Outcome(False, "no code found", None, 0.0, "")
    tests = [tests] if isinstance(tests, str) else list(tests)   # list("assert x") would run each letter
    plan = _plan()
    with _claim_uid(plan.drop) as uid:
        return _run(plan, uid, setup, code, tests, timeout_s, memory_mb, max_processes,
                    max_output_bytes, disk_mb, site_packages)


def run_many(items, *, workers: int = 2, disable: bool | None = False, **limits) -> list[Outcome]:
    """Run ``(code, tests)`` or ``(code, tests, setup)`` items, ``workers`` at a time, in order;
    ``tests`` as :func:`run_tests` takes them (a list of programs, or one program as a string).

    Each worker thread only waits on its child process, so 2 workers keep 2 cores busy.
    ``limits`` go to :func:`run_tests`.

    >>> [o.passed for o in run_many([("x = 1", ["assert x == 1"]), ("x = 2", ["assert x == 1"])])]
    [True, False]
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    items = [tuple(item) for item in items]
    results: list = [None] * len(items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_tests, *item[:3], **limits): i for i, item in enumerate(items)}
        for future in tqdm(as_completed(futures), total=len(items), desc="sandbox", unit="run", disable=disable):
            results[futures[future]] = future.result()
    return results


def isolation() -> dict[str, str]:
    """What fences a snippet in on this machine, for a notebook or a report to state: what holds,
    and, plainly, what remains possible at this level.

    >>> sorted(isolation())
    ['filesystem', 'level', 'network', 'proc', 'processes', 'python', 'remains', 'user', 'verdict']
    """
    p = _plan()
    own = not p.drop
    remains = []
    if not p.mount:
        remains.append("it can read the host's /proc (every process's command line, e.g. a Jupyter "
                       "server's --IdentityProvider.token) and /sys, and reach Unix sockets under /run")
    if own:
        remains.append("it runs as your uid: it can read and write what you can outside the hidden "
                       "folders, including Python packages a test imports")
        if not p.pidns:
            remains.append("it can signal and, where ptrace is allowed, read or write the memory of "
                           "your other processes (this notebook's kernel included)")
    if p.ns == "none":
        remains.append("its network guard is Python-level: raw system calls (ctypes) get past it")
    remains.append("a test that compares two objects the code made (not a literal) trusts the code's "
                   "own __eq__; a test that eval()s a string the code returned runs it with the tests")
    return {
        "level": p.level,
        "network": {"root": "new network namespace (no interface up)",
                    "user": "new network namespace, in a user namespace"}.get(p.ns, "Python-level guard only (bypassable)"),
        "user": (f"an unused uid ({UID_SLOTS.start}-{UID_SLOTS.stop - 1}, one per run), no capabilities"
                 if p.drop else f"your own uid {os.getuid()} (not root: nothing to drop to)"),
        "filesystem": (f"private tmpfs for {', '.join(COVERED)}; {', '.join(HIDDEN)} hidden" if p.mount else
                       f"shared {', '.join(COVERED)}: others can read what it writes there during the run"
                       + (" (removed after)" if p.drop else "")),
        "proc": ("its own /proc: only this run's processes" if p.mount else
                 "the host's /proc: every process on the machine, command lines included"),
        "processes": ("own PID namespace: everything it starts dies with it" if p.pidns else
                      "own session, killed as a group" + (", then by uid" if p.drop else
                                                          "; a child that calls setsid() can outlive it")),
        "verdict": ("tests run in a process of their own that the code cannot trace, signal into or read; "
                    "the code's answers reach them as data (numbers, strings, lists, dicts...), so an "
                    "object of the code's making never equals a literal"),
        "remains": "; ".join(remains),
        "python": p.python,
    }


# ------------------------------------------------------------------- finding what works here -----

@dataclass(frozen=True)
class _Plan:
    python: str
    drop: bool                    # run as a slot uid (we are root)
    ns: str                       # namespaces unshared as "root", in a "user" namespace, or "none"
    mount: bool                   # private tmpfs, hidden homes
    binds: tuple[str, ...] = ()   # the interpreter's folders that the mounts would hide

    @property
    def pidns(self) -> bool:
        return self.ns != "none"

    @property
    def level(self) -> str:
        return self.ns + ("+mounts" if self.mount else "")


# Strongest first. FTKIT_SANDBOX=<level> caps the sandbox at a weaker one, to see (and test) what
# a machine without root or namespaces gets.
LEVELS = ("root+mounts", "root", "user+mounts", "user", "none")


def _binds(python: str) -> tuple[str, ...]:
    """The interpreter's folders (each symlink hop, its prefix; sys.prefix for ours) that lie under
    a folder the private mounts cover, outermost first."""
    dirs, path = set(), os.path.abspath(python)
    for _ in range(40):
        dirs |= {os.path.dirname(path), os.path.dirname(os.path.dirname(path))}
        if not os.path.islink(path):
            break
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    if python == sys.executable:
        dirs |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs |= {os.path.realpath(d) for d in dirs}
    kept: list[str] = []
    for d in sorted(dirs, key=len):
        if os.path.isdir(d) and _inside(d, COVERED + HIDDEN) and not _inside(d, kept):
            kept.append(d)
    return tuple(kept)


def _inside(path: str, tops) -> bool:
    return any(path == t or path.startswith(t + "/") for t in tops)


_PLAN: list[_Plan] = []
_PLAN_LOCK = threading.Lock()


def _plan() -> _Plan:
    with _PLAN_LOCK:          # run_many's threads would otherwise all probe at once
        if not _PLAN:
            _PLAN.append(_find_plan(os.environ.get("FTKIT_SANDBOX") or None))
        return _PLAN[0]


def _find_plan(ceiling: str | None = None) -> _Plan:
    """The strongest isolation that works here, at ``ceiling`` or weaker (one of :data:`LEVELS`),
    found once by running a small job under each.

    The job imports a module neither Python nor the runner loads at start (colorsys): after root is dropped the stdlib must
    still be readable (a pyenv under /root is not, unless the mounts bind it back).
    """
    if sys.platform != "linux":
        raise RuntimeError(f"the code sandbox needs Linux (namespaces, /proc), not {sys.platform}: "
                           "run evaluations with code metrics in a Linux container or VM")
    pythons = [sys.executable, os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""),
               "/usr/local/bin/python3", "/usr/bin/python3"]
    pythons = [p for i, p in enumerate(pythons) if p and os.path.isfile(p) and p not in pythons[:i]]
    if ceiling not in (None, *LEVELS):
        raise ValueError(f"FTKIT_SANDBOX={ceiling!r} is not a sandbox level; use one of: {', '.join(LEVELS)}")
    root = os.geteuid() == 0
    ladder = ([("root", True), ("root", False)] if root else []) + [("user", True), ("user", False), ("none", False)]
    if ceiling:
        ladder = [(ns, mount) for ns, mount in ladder
                  if LEVELS.index(ns + ("+mounts" if mount else "")) >= LEVELS.index(ceiling)]
    tried = []
    for ns, mount in ladder:
        for python in pythons:
            plan = _Plan(python, root, ns, mount, _binds(python) if mount else ())
            with _claim_uid(plan.drop) as uid:
                out = _run(plan, uid, "", "import os, colorsys", ["assert os.getcwd() == os.environ['HOME']"],
                           20, 512, 8, 4000, 8, True)
            if out.passed:
                return plan
            tried.append(f"{ns} namespaces{' + mounts' if mount else ''}, {python}: {out.reason}")
    raise RuntimeError("no Python interpreter could run sandboxed as an unprivileged user. Tried:\n  "
                       + "\n  ".join(tried) + "\nInstall Python (or the venv) outside /root, e.g. under /opt, "
                       "or let other users enter its folders (chmod o+x on each).")


@contextlib.contextmanager
def _claim_uid(wanted: bool):
    """Hold a free slot uid for one run. An abstract socket name is a lock the kernel drops on exit,
    so two notebooks on one machine never share a uid."""
    if not wanted:
        yield None
        return
    while True:
        for uid in UID_SLOTS:
            if _uid_taken(uid):
                continue
            lock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                lock.bind(f"\0ftkit-sandbox-uid-{uid}")
            except OSError:
                lock.close()
                continue
            with lock:
                yield uid
            return
        time.sleep(0.05)   # all 14 busy with other runs: wait for one


@functools.cache
def _uid_taken(uid: int) -> bool:
    """A uid with an account is someone's: never borrow it."""
    with contextlib.suppress(KeyError):
        return bool(pwd.getpwuid(uid))
    return False


# ------------------------------------------------------------------- one run ----------------------

def _run(plan: _Plan, uid: int | None, setup: str, code: str, tests: list[str], timeout_s: float,
         memory_mb: int, max_processes: int, max_output_bytes: int, disk_mb: int, site_packages: bool) -> Outcome:
    work, nonce = tempfile.mkdtemp(prefix="ftkit-sandbox-"), secrets.token_hex(16)
    if uid is not None:
        os.chown(work, uid, uid)
    # RLIMIT_NPROC counts every task of the uid, zombies too: a slot uid has none, or zombies of a
    # killed run that PID 1 has not reaped yet; without root it is our own uid, busy with our work.
    owner = os.getuid() if uid is None else uid
    # +2: the tests process and the outer one (same uid without root) count against it too
    nproc = max_processes + 2 + sum(n for _, u, n, _ in _procs() if u == owner)
    cpu = math.ceil(timeout_s) + 1
    limits = [(resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, disk_mb << 20),
              (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)]
    # soft = hard, so the snippet cannot raise them back; never above a hard limit we already have
    limits = [(w, v if h == resource.RLIM_INFINITY else min(v, h)) for w, v in limits for h in [resource.getrlimit(w)[1]]]
    # /tmp first, then the hidden folders (/run holds /run/lock: it comes back as a bind of /tmp)
    mounts = [(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=1777".encode())]
    mounts += [(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755") for d in HIDDEN if os.path.isdir(d)]
    mounts += [(b"/tmp", d.encode(), None, MS_BIND, None) for d in COVERED[1:] if os.path.isdir(d)]
    box = {"ns": plan.ns, "flags": NEWNET | NEWPID | NEWIPC | (NEWNS if plan.mount else 0), "uid": uid, "work": work,
           "mounts": mounts if plan.mount else [], "binds": list(plan.binds), "limits": limits}
    job = marshal.dumps({"nonce": nonce, "box": box, "guard_net": plan.ns == "none",
                         "guard_kill": plan.ns == "none" and uid is None, "setup": setup, "code": code, "tests": tests})
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    read_end, write_end = os.pipe()
    start = time.monotonic()
    try:   # no preexec_fn: the runner sets itself up, so Popen can vfork even from a 10 GB kernel
        proc = subprocess.Popen([plan.python, "-I", *([] if site_packages else ["-S"]), "-c", _RUNNER, str(write_end)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, pass_fds=(write_end,), start_new_session=True)
    except OSError as e:
        _remove(work)
        os.close(read_end)
        return Outcome(False, f"sandbox failed to start: {e}", None, 0.0, "")
    finally:
        os.close(write_end)
    out: dict = {"chunks": [], "over": False}
    reader = threading.Thread(target=_pump, args=(proc, job, max_output_bytes, out), daemon=True)
    reader.start()
    finished = _wait(proc, timeout_s)
    _killpg(proc.pid)    # the forks it left; the leader is not reaped yet, so the id is still ours
    proc.wait()
    duration = time.monotonic() - start
    if uid is not None:
        _sweep(uid, processes=not plan.pidns, files=not plan.mount)
    reader.join(timeout=2)
    record = _result(read_end, nonce)
    _remove(work)
    why, test = _verdict(record, tests, proc.returncode, finished, out["over"], timeout_s, memory_mb, max_output_bytes)
    output = b"".join(out["chunks"]).decode("utf-8", "replace")
    return Outcome(why == "passed", why, test, round(duration, 4), output)


def _verdict(record, tests, returncode, finished, over, timeout_s, memory_mb, max_output_bytes):
    """(reason, failed test) from the runner's record, or from how the process ended without one."""
    if over:
        return f"output limit exceeded ({max_output_bytes} bytes)", None
    if record is not None and record[0] == "passed" and returncode != 0:
        record = None    # kill(0, SIGKILL) from inside: PID 1 ignores it, the runner outside dies
    if record is None:
        if not finished:
            return f"timed out after {timeout_s:g} s", None
        if returncode < 0:
            name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
            return f"killed by signal {-returncode} ({name})", None
        return f"exited before the tests finished (exit code {returncode})", None
    status, index, line, message = record
    test = tests[index - 2] if 2 <= index < len(tests) + 2 else None
    return {"passed": ("passed", None), "assert": (f"assert failed: {line or test}", test),
            "memory": (f"memory limit ({memory_mb} MB) exceeded", test),
            "exit": (f"exited before the tests finished: SystemExit({message})", test),
            "setup": (f"sandbox failed to start: {message}", None),
            "exited": (f"exited before the tests finished (exit code {message})", test),
            "killed": (f"killed by signal {message} ({_signal_name(message)})", test)}.get(status, (f"error: {message}", test))


def _signal_name(number: str) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(int(number)).name
    return "?"


def _pump(proc, job: bytes, cap: int, box: dict) -> None:
    """Hand the job over, then keep at most ``cap`` bytes of output; past that, kill the group."""
    with contextlib.suppress(OSError):      # it may be gone before reading its job
        proc.stdin.write(job)
        proc.stdin.close()
    size, fd = 0, proc.stdout.fileno()
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            if size < cap:
                box["chunks"].append(data[:cap - size])
            size += len(data)
            if size > cap and not box["over"]:
                box["over"] = True
                _killpg(proc.pid)


def _wait(proc, timeout: float) -> bool:
    """Whether it exited in time. A pidfd wakes us at the exit (Popen.wait(timeout) polls, up to
    50 ms late) and does not reap, so the killpg that follows cannot hit a reused group id."""
    import select

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # Linux before 5.3
        try:
            return proc.wait(timeout) is not None
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], max(timeout, 0))[0])
    finally:
        os.close(fd)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _result(fd: int, nonce: str):
    """The runner's record if one came: (status, stage index, failing line, message)."""
    os.set_blocking(fd, False)           # a leftover fork may hold the pipe open: take what is there
    data = b""
    with contextlib.suppress(OSError):
        while (chunk := os.read(fd, 65536)) and len(data) < 1 << 20:
            data += chunk
    os.close(fd)
    for line in data.split(b"\n"):
        parts = line.decode("ascii", "replace").split(" ")
        if len(parts) == 6 and parts[:2] == ["ftkit-result", nonce] and parts[3].lstrip("-").isdigit():
            with contextlib.suppress(ValueError):
                texts = [bytes.fromhex(p).decode("utf-8", "replace") for p in parts[4:]]
                return parts[2], int(parts[3]), texts[0], texts[1]
    return None


_STATUS = re.compile(rb"\nState:\s+(\S).*?\nUid:\s+(\d+).*?\nThreads:\s+(\d+)", re.DOTALL)


def _procs():
    """(pid, real uid, threads, zombie) of every process, from /proc."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/status", "rb") as f:
                if m := _STATUS.search(f.read()):
                    yield int(name), int(m[2]), int(m[3]), m[1] == b"Z"


def _sweep(uid: int, processes: bool, files: bool) -> None:
    """Remove what the run's uid (no one else's) left outside its group and folder: a fork that
    called setsid(), without a PID namespace; files in a shared /tmp, /var/tmp or /dev/shm."""
    for _ in range(100 if processes else 0):
        pids = [pid for pid, u, _, zombie in _procs() if u == uid and not zombie]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    for folder in COVERED if files else ():
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    _remove(entry.path)


def _remove(path: str) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):   # without root a snippet can chmod its own folders to 000
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        for folder, subfolders, _ in os.walk(path):
            for sub in subfolders:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(folder, sub), 0o700)
        shutil.rmtree(path, ignore_errors=True)


# The child's program (ftkit/evaluation/_sandbox_runner.py), passed to ``python -I -c`` as text: the
# unprivileged child may not be able to read the installed file.
_RUNNER = (Path(__file__).parent / "_sandbox_runner.py").read_text(encoding="utf-8")

