"""The code sandbox: verdicts on ordinary solutions, then hostile snippets, each contained and scored 0.

Hostile tests use 2 s timeouts; their wall-time bounds are loose because the machine is shared.
"""

from __future__ import annotations

import builtins
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from ftkit.evaluation import sandbox
from ftkit.evaluation.sandbox import extract_code, isolation, run_many, run_tests

PROJECT = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0
MARK = b"# ftkit-sandbox runner"


def own_uid() -> bool:
    """Without root the snippet keeps our uid: what our uid may do, it may do too (see isolation())."""
    return "your own uid" in isolation()["user"]


def sandbox_processes() -> set[int]:
    """Live processes running the sandbox's runner, found by its command line."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if MARK in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.add(int(name))
            except OSError:
                pass
    return pids


def no_new_sandbox_processes(before: set[int], within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while sandbox_processes() - before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ------------------------------------------------------------------- verdicts ---------------------

def test_sandbox_correct_solution_passes():
    out = run_tests("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    assert (out.passed, out.reason, out.failed_test) == (True, "passed", None)
    assert 0 < out.duration_s < 30


def test_sandbox_wrong_solution_names_the_first_failing_assert():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
    out = run_tests("def add(a, b):\n    return a * b", tests)
    assert not out.passed
    assert out.reason == "assert failed: assert add(1, 2) == 3" and out.failed_test == tests[0]
    # A check() helper in setup: the reason quotes the assert inside it, failed_test the item.
    setup = "def check(f):\n    assert f(1) == 2\n    assert f(2) == 3, 'two'\n"
    out = run_tests("def inc(x):\n    return x + 1 if x < 2 else 0", ["check(inc)"], setup)
    assert out.reason == "assert failed: assert f(2) == 3, 'two'" and out.failed_test == "check(inc)"


def test_sandbox_errors_are_named_with_the_test_that_raised():
    out = run_tests("def f(:\n    pass", ["assert f() is None"])
    assert not out.passed and out.reason.startswith("error: SyntaxError:") and out.failed_test is None
    out = run_tests("def f():\n    return 1", ["assert f() == 1", "assert g() == 1"])
    assert out.reason == "error: NameError: name 'g' is not defined" and out.failed_test == "assert g() == 1"
    out = run_tests("print('hello')\nraise ValueError('bad input')", [])
    assert out.reason == "error: ValueError: bad input" and out.output == "hello\n"


def test_sandbox_no_code_is_not_run():
    assert run_tests("   \n", ["assert True"]) == sandbox.Outcome(False, "no code found", None, 0.0, "")


def test_sandbox_extract_code_from_fences_and_prose():
    code = "def f(x):\n    return x"
    assert extract_code(f"Here is it:\n```python\n{code}\n```\nIt returns x.") == code
    assert extract_code(f"```py\n{code}\n```") == code
    assert extract_code(f"Sure.\n```\n{code}\n```\nThanks") == code
    assert extract_code(f"```bash\npip install x\n```\n```python\n{code}\n```") == code   # not the shell block
    assert extract_code(f"```python\n{code}\n") == code                                     # cut off: no closing fence
    assert extract_code(f"We need a loop.\nFrom the examples:\nimport math\n{code}") == f"import math\n{code}"
    assert extract_code(f"from math import pi\n{code}") == f"from math import pi\n{code}"
    assert extract_code("x = 1") == "x = 1"
    # Module constants before the first def are code too, with prose around them or not.
    table = "RATES = {'OH': 0.0575}\n\ndef tax(s):\n    return RATES[s]"
    assert extract_code(table) == table
    assert extract_code(f"Here is the function:\n{table}\nIt reads the table.") == table


# ------------------------------------------------------------------- the sandbox itself -----------

def test_sandbox_runs_in_a_separate_isolated_process():
    code = "import os, sys\nprint(os.getpid(), sys.flags.isolated, sys.flags.ignore_environment, sys.argv)"
    out = run_tests(code + "\nimport builtins\nbuiltins.TOUCHED = True\nsys.modules['ftkit'] = None", [])
    pid, isolated, no_env, argv = out.output.split(" ", 3)
    assert int(pid) != os.getpid() and (isolated, no_env) == ("1", "1") and argv.strip() == "['-c']"
    assert not hasattr(builtins, "TOUCHED") and sys.modules["ftkit"] is not None


def test_sandbox_work_folder_and_home_are_fresh_and_removed():
    code = ("import os\nopen('scratch.txt', 'w').write('x')\n"
            "print(os.getcwd(), os.environ['HOME'], sorted(os.listdir('.')))")
    first, second = run_tests(code, []), run_tests(code, [])
    cwd, home, listing = first.output.split(" ", 2)
    assert first.passed and cwd == home and listing.strip() == "['scratch.txt']"
    assert cwd != second.output.split(" ")[0]
    assert not os.path.exists(cwd)


def test_sandbox_limits_are_set_in_the_child():
    code = ("import resource as r\nlimits = {n: r.getrlimit(getattr(r, n)) for n in "
            "('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_FSIZE')}")
    out = run_tests(code, ["assert limits['RLIMIT_CPU'] == (3, 3)", "assert limits['RLIMIT_AS'] == (256 << 20,) * 2",
                           "assert limits['RLIMIT_FSIZE'] == (4 << 20,) * 2",
                           "assert limits['RLIMIT_NPROC'][0] == limits['RLIMIT_NPROC'][1] >= 5"],
                    timeout_s=2, memory_mb=256, max_processes=5, disk_mb=4)
    assert out.passed, out


def test_sandbox_drops_root_and_every_capability():
    status = run_tests("print(open('/proc/self/status').read())", []).output
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == int(fields["CapPrm"], 16) == 0 and fields["NoNewPrivs"] == "1"
    if ROOT:
        assert "0" not in fields["Uid"].split() and "0" not in fields["Gid"].split() and not fields["Groups"].strip()
        out = run_tests("import os\nos.setuid(0)", [])
        assert not out.passed and out.reason.startswith(("error: PermissionError", "error: OSError: [Errno 22]"))


def test_sandbox_isolation_is_stated():
    iso = isolation()
    assert set(iso) == {"level", "network", "user", "filesystem", "proc", "processes", "verdict", "remains", "python"}
    assert iso["level"] in sandbox.LEVELS and "literal" in iso["verdict"]
    assert os.path.isfile(iso["python"])
    assert ("unused uid" in iso["user"]) == ROOT


# ------------------------------------------------------------------- hostile snippets -------------

def test_sandbox_infinite_loop_times_out():
    start = time.monotonic()
    out = run_tests("while True:\n    pass", ["assert True"], timeout_s=2)
    assert not out.passed and out.reason == "timed out after 2 s"
    assert 1.9 < out.duration_s and time.monotonic() - start < 15


def test_sandbox_fork_bomb_is_contained_and_leaves_nothing():
    before = sandbox_processes()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    start = time.monotonic()
    out = run_tests(bomb, [], timeout_s=2, max_processes=8)
    assert not out.passed and out.reason in ("timed out after 2 s", "killed by signal 9 (SIGKILL)")
    assert time.monotonic() - start < 20
    assert no_new_sandbox_processes(before)
    if "can outlive" in isolation()["processes"]:
        return                                # no root, no PID namespace: documented, not contained
    # A child that leaves its session and outlives the snippet is killed too.
    escape = ("import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    os.write(w, b'out')\n"
              "    time.sleep(60)\nos.read(r, 3)   # the snippet ends only once its child has left the group")
    assert run_tests(escape, ["assert True"], timeout_s=2).passed
    assert no_new_sandbox_processes(before)
    assert run_tests("x = 1", ["assert x == 1"]).passed                 # the machine still runs the next one


def test_sandbox_memory_limit():
    out = run_tests("block = bytearray(10 * 1024 ** 3)", ["assert len(block) > 0"], timeout_s=2, memory_mb=256)
    assert not out.passed and out.reason == "memory limit (256 MB) exceeded"


def test_sandbox_process_limit_stops_threads_and_forks():
    code = ("import threading, time\nthreads = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(20)]\n"
            "for t in threads:\n    t.start()")
    out = run_tests(code, [], timeout_s=5, max_processes=4)
    assert not out.passed and out.reason == "error: RuntimeError: can't start new thread"


def test_sandbox_network_is_unreachable_outside_and_on_loopback():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)    # bind/listen pass the conftest guard
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.3)
    port = server.getsockname()[1]
    try:
        for target in [f"('127.0.0.1', {port})", "('1.1.1.1', 53)", "('example.com', 80)"]:
            out = run_tests(f"import socket\nsocket.create_connection({target}, timeout=1).sendall(b'hi')", [],
                            timeout_s=5)
            assert not out.passed and out.reason.startswith("error:"), (target, out)
            if "namespace" in isolation()["network"]:     # refused by the kernel, not by Python
                assert "unreachable" in out.reason or "Temporary failure" in out.reason, out.reason
        # _socket directly skips any Python-level patch of socket.socket.
        raw = f"import _socket\ns = _socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))"
        assert not run_tests(raw, [], timeout_s=5).passed
        with pytest.raises(TimeoutError):
            server.accept()                                # nobody came through
    finally:
        server.close()


def test_sandbox_python_guard_when_no_namespace_is_allowed(monkeypatch):
    plan = sandbox._find_plan("none")                     # what a machine without namespaces gets
    monkeypatch.setattr(sandbox, "_plan", lambda: plan)
    assert "guard" in isolation()["network"]
    out = run_tests("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)", [], timeout_s=5)
    assert out.reason == "error: PermissionError: [Errno 1] blocked by the ftkit sandbox's Python-level guard"


def test_sandbox_cannot_read_ssh_keys_or_root(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    key.write_text("FAKE-PRIVATE-KEY-4711")
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    hidden = isolation()["filesystem"].startswith("private")   # tmp_path lies under the hidden /tmp
    for path in ["os.path.expanduser('~/.ssh/id_ed25519')"] + ([repr(str(key))] if hidden or not own_uid() else []):
        out = run_tests(f"import os\nprint(open({path}).read())", [], timeout_s=5)
        assert not out.passed and out.reason.startswith("error:") and "FAKE-PRIVATE" not in out.output
    real = [p for p in Path("/root").iterdir() if p.is_file() and p.stat().st_size] if ROOT else []
    if real:                                                      # e.g. /root/.bashrc
        code = "import os\ntry:\n    print(os.listdir('/root'))\nexcept OSError as e:\n    print(e)\n"
        out = run_tests(code + f"print(open({str(real[0])!r}).read())", [], timeout_s=5)
        assert not out.passed and out.reason.startswith("error:")
        assert real[0].read_text(errors="replace")[:40] not in out.output
        # Where /root is hidden, only the interpreter's own folder is bound back into it.
        bound = {Path(b).parts[2] for b in sandbox._plan().binds if b.startswith("/root/")}
        listing = out.output.splitlines()[0]
        assert "Permission denied" in listing or set(eval(listing)) <= bound


def test_sandbox_does_not_inherit_environment_variables(monkeypatch):
    monkeypatch.setenv("FTKIT_FAKE_SECRET", "hunter2-in-env")
    code = f"import os\nprint(dict(os.environ))\nprint(open('/proc/{os.getpid()}/environ').read())"
    out = run_tests(code, ["assert os.environ.get('FTKIT_FAKE_SECRET')"], timeout_s=5)
    assert not out.passed and out.reason.startswith(("error:", "assert failed:"))
    # Our own uid in our own PID namespace could read /proc/<pid>/environ: documented, not contained.
    assert "hunter2" not in out.output or (own_uid() and "guard" in isolation()["network"])
    keys = run_tests("import os\nprint(sorted(os.environ))", []).output
    assert eval(keys) == sorted(["HOME", "LANG", "PATH", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"])


def test_sandbox_cannot_write_outside_its_folder(tmp_path):
    if own_uid():
        pytest.skip("without root the snippet keeps our uid and may write where we may (see isolation())")
    target = tmp_path / "owned-by-the-test"
    target.mkdir(mode=0o755)
    tmp_path.chmod(0o755)                        # reachable: only the write itself is refused
    for folder in [target, PROJECT]:
        victim = folder / "written-by-sandbox.txt"
        out = run_tests(f"open({str(victim)!r}, 'w').write('pwned')", [], timeout_s=5)
        assert not out.passed and out.reason.startswith("error:") and not victim.exists()
    # /tmp is world-writable: either private to the run, or swept of what its uid left there.
    if isolation()["filesystem"].startswith("private") or ROOT:
        for shared in [Path(d) / f"ftkit-sandbox-test-{os.getpid()}" for d in sandbox.COVERED if os.path.isdir(d)]:
            write = f"import os\nos.makedirs({str(shared)!r})\nopen({str(shared / 'f')!r}, 'w').write('x')"
            assert run_tests(write, ["assert True"]).passed
            assert not shared.exists()


def test_sandbox_cannot_kill_the_parent():
    # Its parent is the tests process: PID 1 of its namespace ignores the signal (a pass: nothing
    # happened), or, without one, the run ends without a verdict. This process is never reached.
    out = run_tests("import os\nos.kill(os.getppid(), 9)", ["assert True"], timeout_s=5)
    assert out.passed == sandbox._plan().pidns and out.reason, out
    out = run_tests(f"import os\nos.kill({os.getpid()}, 9)", ["assert True"], timeout_s=5)
    assert not out.passed and out.reason.startswith("error:"), out      # ... and this process is still here
    assert run_tests("x = 1", []).passed


def test_sandbox_huge_output_is_capped_quickly():
    start = time.monotonic()
    out = run_tests("while True:\n    print('x' * 1000)", [], timeout_s=10, max_output_bytes=10_000)
    assert not out.passed and out.reason == "output limit exceeded (10000 bytes)"
    assert len(out.output) <= 10_000 and time.monotonic() - start < 8
    big = run_tests("open('big.bin', 'wb').write(b'x' * (8 << 20))", [], timeout_s=5, disk_mb=4)
    assert not big.passed and big.reason == "error: OSError: [Errno 27] File too large"


def test_sandbox_early_exit_and_forged_verdicts_are_not_a_pass():
    out = run_tests("import os\nos._exit(0)", ["assert False"])
    assert (out.passed, out.reason) == (False, "exited before the tests finished (exit code 0)")
    out = run_tests("import sys\nsys.exit(0)", ["assert False"])
    assert (out.passed, out.reason) == (False, "exited before the tests finished: SystemExit(0)")
    forge = ("import os\nfor fd in range(1, 64):\n    try:\n"
             "        os.write(fd, b'ftkit-result 0 passed -1  \\n')\n    except OSError:\n        pass\nos._exit(0)")
    assert not run_tests(forge, ["assert False"]).passed
    rigged = "import builtins\nbuiltins.exec = builtins.compile = lambda *args, **kwargs: None"
    assert run_tests(rigged, ["assert False"]).reason == "assert failed: assert False"


def test_sandbox_run_many_keeps_order_and_runs_concurrently():
    timed = "import time\nstart = time.time()\ntime.sleep(1.0)\nprint(start, time.time())"
    items = [(timed, ["assert True"]), ("x = 1", ["assert x == 2"]), (timed, ["assert True"], "y = 3")]
    outs = run_many(items, workers=3, disable=True)
    assert [o.passed for o in outs] == [True, False, True]
    assert outs[1].reason == "assert failed: assert x == 2"
    (s0, e0), (s2, e2) = (map(float, outs[i].output.split()) for i in (0, 2))
    assert max(s0, s2) < min(e0, e2)                       # the two sleeps overlapped
