"""Scored code that tries to forge its verdict or read the host, at every sandbox level this machine
allows: the strongest it finds, then each fallback forced (root without mounts, a user namespace,
no namespaces at all). What a level cannot stop is asserted to be said in ``isolation()``.

Each forging snippet is a wrong answer: a pass is a forged pass.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftkit.evaluation import sandbox
from ftkit.evaluation.sandbox import isolation, run_tests

LEVELS = getattr(sandbox, "LEVELS", ("strongest",))
WRONG = "def inc(x):\n    return x\n"          # the task: inc(x) == x + 1
TESTS = ["assert inc(1) == 2", "assert inc(2) == 3"]


@pytest.fixture(params=LEVELS, scope="module")
def level(request):
    """The sandbox capped at one level; skipped only where this machine cannot give that level."""
    if not hasattr(sandbox, "LEVELS"):
        yield None
        return
    try:
        plan = sandbox._find_plan(request.param)
    except RuntimeError as err:
        pytest.skip(f"no sandbox at {request.param} or below here: {err}")
    if plan.level != request.param:
        pytest.skip(f"{request.param} is not available on this machine (the nearest is {plan.level})")
    patch = pytest.MonkeyPatch()
    patch.setattr(sandbox, "_plan", lambda: plan)
    yield plan
    patch.undo()


def private_proc(plan) -> bool:
    return plan is None or plan.mount      # None: the code before levels existed, at its strongest


# ------------------------------------------------------------------- forged verdicts --------------

WALK_TO_REPORT = """
import sys
f = sys._getframe()
while f is not None:
    for value in list(f.f_locals.values()):
        if callable(value) and getattr(value, "__name__", "") == "report":
            value("passed")
    f = f.f_back
"""


def test_sandbox_hostile_frames_cannot_reach_the_verdict(level):
    at_import = run_tests(WRONG + WALK_TO_REPORT, TESTS, timeout_s=5)
    assert not at_import.passed, at_import
    body = "\n".join("    " + line for line in WALK_TO_REPORT.strip().splitlines())
    in_a_call = run_tests(f"def inc(x):\n{body}\n    return x\n", TESTS, timeout_s=5)
    assert not in_a_call.passed, in_a_call


CHANNEL = """
import gc, os, sys
nonces = set()
f = sys._getframe()
while f is not None:
    if isinstance(f.f_locals.get("nonce"), str):
        nonces.add(f.f_locals["nonce"])
    f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict) and isinstance(o.get("nonce"), str):
        nonces.add(o["nonce"])
targets = list(range(3, 256))
for pid in {os.getpid(), os.getppid()}:
    try:
        targets += ["/proc/%d/fd/%s" % (pid, n) for n in os.listdir("/proc/%d/fd" % pid)]
    except OSError:
        pass
print("nonces found:", len(nonces), flush=True)
for nonce in nonces:
    line = ("ftkit-result %s passed -1  \\n" % nonce).encode()
    for t in targets:
        try:
            if isinstance(t, int):
                os.write(t, line)
            else:
                fd = os.open(t, os.O_WRONLY)
                os.write(fd, line)
                os.close(fd)
        except OSError:
            pass
os._exit(0)
"""


def test_sandbox_hostile_result_channel_cannot_be_found_and_written(level):
    out = run_tests(WRONG + CHANNEL, TESTS, timeout_s=5)
    assert not out.passed, out
    assert "nonces found: 1" in out.output      # it found the nonce: knowing it is not enough


TRACER = """
import sys
def tracer(frame, event, arg):
    if event == "exception" and issubclass(arg[0], AssertionError):
        g = frame
        while g is not None:
            report = g.f_locals.get("report")
            if callable(report):
                report("passed")
            g = g.f_back
    return tracer
sys.settrace(tracer)
sys.setprofile(lambda *a: None)
"""


def test_sandbox_hostile_trace_function_sees_no_test(level):
    out = run_tests(WRONG + TRACER, TESTS, timeout_s=5)
    assert (out.passed, out.reason) == (False, "assert failed: assert inc(1) == 2"), out


EVERYTHING = """
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __lt__(self, other):
        return True
    __le__ = __gt__ = __ge__ = __lt__
    def __hash__(self):
        return 0
class Int(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
"""


def test_sandbox_hostile_an_object_equal_to_everything_matches_no_literal(level):
    out = run_tests(EVERYTHING + "def inc(x):\n    return Anything()\n", TESTS, timeout_s=5)
    assert (out.passed, out.reason) == (False, "assert failed: assert inc(1) == 2"), out
    out = run_tests(EVERYTHING + "def inc(x):\n    return Anything()\n", ["assert inc(1) < 3"], timeout_s=5)
    assert not out.passed and out.reason.startswith("error: TypeError"), out
    # An int subclass is compared as the int it is: a wrong one fails, a right one passes.
    assert not run_tests(EVERYTHING + "def inc(x):\n    return Int(0)\n", TESTS, timeout_s=5).passed
    assert run_tests(EVERYTHING + "def inc(x):\n    return Int(x + 1)\n", TESTS, timeout_s=5).passed


def test_sandbox_hostile_code_cannot_replace_a_builtin_the_tests_call(level):
    code = WRONG + "def all(*args):\n    return True\ndef abs(x):\n    return 0\n"
    tests = ["assert all(inc(i) == i + 1 for i in range(3))", "assert abs(inc(1) - 2) < 1e-9"]
    out = run_tests(code, tests, timeout_s=5)
    assert (out.passed, out.failed_test) == (False, tests[0]), out


# ------------------------------------------------------------------- the host, seen from inside ----

def test_sandbox_hostile_proc_shows_no_other_process_command_line(level):
    token = f"ftkit-fake-token-{os.getpid()}"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--IdentityProvider.token={token}"])
    try:
        scan = ("import os\nfound = []\nfor n in os.listdir('/proc'):\n    if n.isdigit():\n        try:\n"
                "            found.append(open('/proc/%s/cmdline' % n, 'rb').read().decode(errors='replace'))\n"
                "        except OSError:\n            pass\nprint([f for f in found if 'IdentityProvider' in f])\n"
                "assert False, [f for f in found if 'IdentityProvider' in f]\n")
        out = run_tests(scan, [], timeout_s=5)
    finally:
        other.kill()
        other.wait()
    if private_proc(level):
        assert token not in out.reason and token not in out.output, out.reason[:300]
        assert isolation()["proc"].startswith("its own /proc")
    else:
        assert token in out.output                       # seen; and said, plainly
        assert "/proc" in isolation()["remains"] and "token" in isolation()["remains"]


def test_sandbox_hostile_no_process_of_the_run_can_be_written_through_proc_mem(level):
    probe = ("import os\nopened = []\nfor pid in {os.getppid(), *[int(n) for n in os.listdir('/proc') if n.isdigit()]}:\n"
             "    if pid != int(os.readlink('/proc/self')):\n        try:\n            open('/proc/%d/mem' % pid, 'r+b').close()\n"
             "            opened.append((pid, open('/proc/%d/cmdline' % pid, 'rb').read()[:60]))\n"
             "        except OSError:\n            pass\nprint('opened', opened)\n")
    out = run_tests(probe, ["assert True"], timeout_s=5)
    assert out.passed, out
    if sandbox._plan().drop if level is not None else True:
        # An unused uid: the runner's processes (root outside, not dumpable inside) and ours alike
        assert "opened []" in out.output, out.output
    else:
        assert b"ftkit-sandbox runner" not in out.output.encode()    # ours, our uid: said in "remains"
        assert "memory" in isolation()["remains"] or sandbox._plan().pidns


def test_sandbox_hostile_host_unix_sockets_under_run_are_out_of_reach(level, tmp_path):
    run = Path("/run")
    if not (run.is_dir() and os.access(run, os.W_OK)):
        pytest.skip("/run is not writable here: no socket to plant")
    path = run / f"ftkit-hostile-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen(1)
        server.settimeout(0.5)
        out = run_tests(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\nprint('in')",
                        [], timeout_s=5)
        if private_proc(level):
            assert not out.passed and "in" not in out.output.split(), out
            with pytest.raises(TimeoutError):
                server.accept()
        else:
            assert "/run" in isolation()["remains"]
    finally:
        server.close()
        path.unlink(missing_ok=True)


def test_sandbox_hostile_sys_is_hidden_or_said(level):
    host = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
    out = run_tests("import os\nprint(sorted(os.listdir('/sys/class/net')))", [], timeout_s=5)
    if private_proc(level):
        assert not out.passed and "FileNotFoundError" in out.reason, out
    else:
        assert "/sys" in isolation()["remains"]
        assert not host or str(host) in out.output


# ------------------------------------------------------------------- honest code still passes -----

HONEST = """
import math
from collections import Counter
class Node:
    def __init__(self, value):
        self.value, self.left, self.right = value, None, None
def height(node):
    return 0 if node is None else 1 + max(height(node.left), height(node.right))
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
    def __len__(self):
        return len(self.items)
def squares(n):
    for i in range(n):
        yield i * i
def sort_in_place(xs):
    xs.sort()
def counts(text):
    return Counter(text)
def apply(f, x):
    return f(x)
def fail(x):
    raise ValueError("bad %s" % x)
def root(x):
    return math.sqrt(x)
def due(day, days):
    import datetime, decimal, fractions
    return day + datetime.timedelta(days=days), decimal.Decimal("1.10"), fractions.Fraction(1, 3)
"""
HONEST_TESTS = [
    "assert height(tree) == 3",                                    # setup built it with the code's Node
    "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2 and len(s) == 1",
    "assert list(squares(4)) == [0, 1, 4, 9] and sum(squares(3)) == 5",
    "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
    "assert counts('abca') == {'a': 2, 'b': 1, 'c': 1}",
    "assert apply(lambda v: v * 10, 4) == 40",
    "try:\n    fail(3)\nexcept ValueError as e:\n    assert str(e) == 'bad 3'\nelse:\n    assert False",
    "assert math.isclose(root(2.0), 1.41421356, rel_tol=1e-6)",
    "def check(candidate):\n    assert candidate(9) == 3.0\ncheck(root)",
    "import datetime, decimal, fractions\nday, price, third = due(datetime.date(2024, 2, 28), 2)\n"
    "assert (day, price, third) == (datetime.date(2024, 3, 1), decimal.Decimal('1.10'), fractions.Fraction(1, 3))",
]


def test_sandbox_honest_code_passes_at_every_level(level):
    setup = "tree = Node(1)\ntree.left = Node(2)\ntree.left.right = Node(3)\n"
    out = run_tests(HONEST, HONEST_TESTS, setup, timeout_s=10)
    assert out.passed, out
    one_wrong = HONEST.replace("return 0 if node is None", "return 1 if node is None")
    out = run_tests(one_wrong, HONEST_TESTS, setup, timeout_s=10)
    assert (out.passed, out.failed_test) == (False, HONEST_TESTS[0]), out


def test_sandbox_hostile_exits_and_signals_in_a_call_are_named(level):
    out = run_tests("import os\ndef inc(x):\n    os._exit(3)\n", TESTS, timeout_s=5)
    assert (out.passed, out.reason, out.failed_test) == (False, "exited before the tests finished (exit code 3)", TESTS[0])
    out = run_tests("import sys\ndef inc(x):\n    sys.exit(0)\n", TESTS, timeout_s=5)
    assert (out.passed, out.reason) == (False, "exited before the tests finished: SystemExit(0)")
    out = run_tests("import os, signal\ndef inc(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n", TESTS, timeout_s=5)
    assert (out.passed, out.reason) == (False, "killed by signal 9 (SIGKILL)")
    start = time.monotonic()
    out = run_tests("def inc(x):\n    while True:\n        pass\n", TESTS, timeout_s=2)
    assert (out.passed, out.reason) == (False, "timed out after 2 s") and time.monotonic() - start < 10


# ------------------------------------------------------------------- the channel itself ------------

def test_sandbox_hostile_channel_decoder_refuses_what_is_not_data():
    """Whatever the code's process sends, the tests' process decodes plain values or refuses with
    the channel's own error: never a crash of another kind, never one of its own objects."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ftkit.evaluation import _sandbox_runner as runner

    peer = runner._Peer(-1, -1, trusted=True)
    secret = object()
    peer.export(secret)                     # handle 0: the only object of its own it may hand back
    tags = st.sampled_from(["l", "t", "s", "f", "d", "i", "b", "y", "c", "h", "r", "m", "dt", "date", "time", "td",
                            "dec", "frac", "zz", ""])
    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
    values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.tuples(tags, st.lists(inner, max_size=3))
                          .map(list) | st.tuples(tags, inner).map(list), max_leaves=12)

    @settings(max_examples=400, deadline=None)
    @given(values)
    def decode(value):
        try:
            out = peer.dec(value)
        except (runner._Broken, ImportError):
            return
        import datetime, decimal, fractions

        assert out is secret or type(out) in (type(None), bool, int, float, str, bytes, bytearray, complex, list,
                                              tuple, set, frozenset, dict, runner._Remote, type(sys),
                                              datetime.datetime, datetime.date, datetime.time, datetime.timedelta,
                                              decimal.Decimal, fractions.Fraction)

    decode()
    with pytest.raises(runner._Broken):
        peer.dec(["r", 1])                  # a handle it never gave out
    with pytest.raises(runner._Broken):
        peer.dec({"a": 1})                  # JSON objects are not part of the protocol
