# ftkit-sandbox runner (tests find its processes by this line in their command line)
"""The program of a sandboxed run: :mod:`ftkit.evaluation.sandbox` reads this file as text and runs it with
``python -I -c`` in the child process (importing it runs nothing).

Three processes, so that the verdict is decided where the scored code cannot write, call or read:

- the outer process sets up namespaces and mounts (as root, when we are), stays outside the new
  PID namespace, is not dumpable, and only waits; it never runs a line of the job;
- the tests process (PID 1 of the new namespace, when there is one) mounts a fresh ``/proc``,
  drops root, makes itself not dumpable (no ptrace, no ``/proc/<pid>/mem``, no ``/proc/<pid>/fd``
  for the code), forks the code process, then runs the row's setup and tests and writes the
  verdict to the result fd, which only it holds;
- the code process starts with nothing open but stdin, stdout, stderr and its two channel ends,
  runs the code, and answers the tests process's requests: call this function, read that
  attribute, compare these two of your objects.

Values cross the channel as data (JSON: numbers, strings, bytes, lists, tuples, dicts, sets), so
``assert f(2) == 4`` compares an int the tests process built itself with the literal 4, with the
builtin types' own equality; an object of the code's own making stays in the code process, and
the tests see a proxy that is equal only to another of the code's objects (never to a literal).
The code's frames, trace functions and ``gc`` reach only its own process.

It is one file, over 400 lines because it is handed to ``python -I -c`` as one program text: it
can import nothing of ftkit, so the channel, the proxies and the three processes live together.
"""
import os, sys, marshal, _signal, resource
try:
    import ctypes
except ImportError:   # a Python built without libffi: no namespaces, root is still dropped
    ctypes = None
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
def _call(rc, what):
    if rc != 0:
        raise OSError(ctypes.get_errno(), "%s: %s" % (what, os.strerror(ctypes.get_errno())))
def _write(path, text):
    fd = os.open(path, os.O_WRONLY)
    os.write(fd, text.encode())
    os.close(fd)
def _drop_root(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
def _enter(box, libc):
    """The outer process: namespaces and every mount but /proc (that needs the namespace's PID 1)."""
    def private_mounts():   # private first, or the mounts below would propagate to the host
        _call(libc.mount(None, b"/", None, 16384 | 262144, None), "making / private")
        binds = [os.open(b, os.O_PATH | os.O_DIRECTORY) for b in box["binds"]]   # before they are hidden
        for m in box["mounts"]:
            if m[2] is None:   # a bind of the private /tmp onto a folder a hidden one may have removed
                os.makedirs(m[1], exist_ok=True)
            _call(libc.mount(*m), "mounting %r" % m[1])
        for path, fd in zip(box["binds"], binds):
            os.makedirs(path, exist_ok=True)
            _call(libc.mount(b"/proc/self/fd/%d" % fd, path.encode(), None, 4096 | 16384, None), "binding " + path)
            _call(libc.mount(None, path.encode(), None, 32 | 4096 | 1, None), "read-only " + path)
            os.close(fd)
        os.makedirs(box["work"], mode=0o700, exist_ok=True)
        if box["uid"] is not None:
            os.chown(box["work"], box["uid"], box["uid"])
    if box["ns"] == "root":
        _call(libc.unshare(box["flags"]), "unshare")
        if box["mounts"]:
            private_mounts()
    elif box["ns"] == "user":
        if box["uid"] is not None:
            _drop_root(box["uid"])
            _call(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "PR_SET_DUMPABLE")   # or /proc/self is root's
        uid, gid = os.getuid(), os.getgid()
        _call(libc.unshare(box["flags"] | 0x10000000), "unshare")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        _write("/proc/self/gid_map", "%d %d 1" % (gid, gid))
        if box["mounts"]:
            private_mounts()
    if libc:   # neither the code nor its tests may trace or read the process that waits for them
        _call(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE")
def _become_tests(box, libc):
    """The tests process: a /proc that shows only this run, then no root, no capabilities."""
    if box["ns"] != "none" and box["mounts"]:
        _call(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mounting /proc")
    if box["ns"] != "user" and box["uid"] is not None:
        _drop_root(box["uid"])
    if box["ns"] == "user":
        _call(libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()), "dropping capabilities")
    os.chdir(box["work"])
    for which, value in box["limits"]:
        resource.setrlimit(which, (value, value))
    if libc:
        _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")   # no setuid binary gives root back
        _call(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE")   # the code (same uid) cannot reach in
def _guard(kill_too):
    import socket, _socket
    def refuse(*args, **kwargs):
        raise PermissionError(1, "blocked by the ftkit sandbox's Python-level guard")
    class Socket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family != socket.AF_UNIX:
                refuse()
            super().__init__(family, type, proto, fileno)
    socket.socket = _socket.socket = Socket
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "create_connection"):
        setattr(socket, name, refuse)
        setattr(_socket, name, refuse)
    if kill_too:   # same uid, same PID namespace: only this stands between it and the notebook
        own, kill, killpg, getpgid = os.getpgid(0), os.kill, os.killpg, os.getpgid
        os.kill = lambda pid, sig: kill(pid, sig) if pid in (0, -own) or (pid > 0 and getpgid(pid) == own) else refuse()
        os.killpg = lambda pgid, sig: killpg(pgid, sig) if pgid in (0, own) else refuse()


# ------------------------------------------------------------------- the channel -------------------

class _Gone(Exception):
    """The other process closed the channel (it exited, or the code closed its end)."""
class _Broken(Exception):
    """The other process sent something that is not the protocol."""
class _CodeExit(Exception):
    """The code called sys.exit() during a test."""
_LIMIT = 64 << 20   # one message; more is a broken channel, not a value a test compares
_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift", "matmul")
_UNARY = ("neg", "pos", "abs", "invert", "index", "int", "float", "len", "bool", "hash", "repr", "str", "iter", "next")
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
# What the tests process answers when the code asks about one of its objects (a callback the test
# passed, an iterator): calls and the protocols a function argument needs, never getattr on
# modules or frames. Attributes only of instances of classes the setup or tests defined.
_TESTS_SERVE = frozenset(("call", "iter", "next", "len", "bool", "repr", "str", "hash", "getitem", "contains",
                          "getattr") + _COMPARE)
class _Peer:
    """One end of the channel: length-prefixed JSON both ways, requests may nest (a call that calls
    back). ``trusted`` is the tests process: it decodes with care and serves little."""
    def __init__(self, rfd, wfd, trusted):
        import json, operator, builtins, importlib, datetime, decimal, fractions   # loaded by _main already
        self.stdlib = datetime, decimal, fractions
        self.rfd, self.wfd, self.trusted, self.pid = rfd, wfd, trusted, os.getpid()
        self.json, self.operator, self.builtins, self.importlib = json, operator, builtins, importlib
        self.mine, self.ids, self.theirs, self.buf = {}, {}, {}, bytearray()
    def send(self, msg):
        data = self.json.dumps(msg, separators=(",", ":")).encode()
        data = len(data).to_bytes(8, "big") + data
        while data:
            data = data[os.write(self.wfd, data):]
    def _read(self, n):
        buf = self.buf   # one read usually holds a whole message, header and all
        while len(buf) < n:
            chunk = os.read(self.rfd, max(n - len(buf), 1 << 16))
            if not chunk:
                raise _Gone()
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out
    def recv(self):
        n = int.from_bytes(self._read(8), "big")
        if n > _LIMIT:
            raise _Broken("a message of %d bytes" % n)
        try:
            msg = self.json.loads(self._read(n))
        except (ValueError, RecursionError, MemoryError) as e:
            raise _Broken("%s" % type(e).__name__)
        if type(msg) is not list or not msg or msg[0] not in ("q", "a", "e", "x", "hello"):
            raise _Broken("an unknown message")
        return msg
    # -- values
    def export(self, obj):
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = len(self.mine)
            self.mine[self.ids[key]] = obj
        return ["h", self.ids[key]]
    def enc(self, obj, depth=0, path=()):
        t = type(obj)
        if obj is None or t is bool or t is str or t is float:
            return obj
        if t is int:
            return obj if -(1 << 53) < obj < (1 << 53) else ["i", format(obj, "x")]
        if t is _Remote:
            if object.__getattribute__(obj, "_peer") is self:
                return ["r", object.__getattribute__(obj, "_hid")]
            return None
        if t is type(sys):
            if sys.modules.get(obj.__name__) is obj and not obj.__name__.startswith("__"):
                return ["m", obj.__name__]
            return self.export(obj)
        value = _value(obj, self.stdlib)
        if value is not None:
            return value
        if not self.trusted:   # the code's own subclasses and numpy scalars, as the values they stand for
            if t.__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "shape", None) == ():
                return self.enc(obj.item(), depth, path)
            for base in (bool, int, float, str, bytes, tuple, list, dict, set, frozenset):
                if isinstance(obj, base) and t is not base:
                    try:
                        return self.enc(base(obj), depth, path)
                    except Exception:
                        return self.export(obj)
        if t in (list, tuple, set, frozenset, dict) and (id(obj) in path or depth > 200):
            if self.trusted:
                raise ValueError("a value nested deeper than 200 levels, or that contains itself, cannot be passed")
            return self.export(obj)
        inner = path + (id(obj),)
        if t is list or t is tuple or t is set or t is frozenset:
            return [{list: "l", tuple: "t", set: "s", frozenset: "f"}[t], [self.enc(x, depth + 1, inner) for x in obj]]
        if t is dict:
            return ["d", [[self.enc(k, depth + 1, inner), self.enc(v, depth + 1, inner)] for k, v in obj.items()]]
        if t is bytes or t is bytearray:
            return ["b" if t is bytes else "y", obj.hex()]
        if t is complex:
            return ["c", obj.real, obj.imag]
        return self.export(obj)
    def dec(self, v):
        if type(v) is not list:
            if v is None or type(v) in (bool, int, float, str):
                return v
            raise _Broken("a value of JSON type %s" % type(v).__name__)
        if not v or type(v[0]) is not str:
            raise _Broken("an untagged value")
        tag, body = v[0], v[1:]
        try:
            if tag in ("l", "t", "s", "f"):
                items = [self.dec(x) for x in body[0]]
                return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](items)
            if tag == "d":
                return {self.dec(k): self.dec(x) for k, x in body[0]}
            if tag == "i":
                return int(body[0], 16)
            if tag in ("b", "y"):
                return (bytes if tag == "b" else bytearray).fromhex(body[0])
            if tag == "c":
                return complex(float(body[0]), float(body[1]))
            if tag == "h":
                hid = int(body[0])
                if hid not in self.theirs:
                    remote = object.__new__(_Remote)
                    object.__setattr__(remote, "_peer", self)
                    object.__setattr__(remote, "_hid", hid)
                    self.theirs[hid] = remote
                return self.theirs[hid]
            if tag == "r":
                return self.mine[int(body[0])]
            if tag == "m":
                return self.importlib.import_module(str(body[0]))
            if tag in _VALUE_TAGS:
                return _from_value(tag, body, self.stdlib)
        except (_Broken, ImportError):
            raise
        except Exception as e:
            raise _Broken("a malformed %r value (%s)" % (tag, type(e).__name__))
        raise _Broken("an unknown tag %r" % (tag,))
    # -- requests
    def ask(self, op, target, *args, **kwargs):
        self.send(["q", op, self.enc([target, *args]), self.enc(kwargs)])
        return self.wait(args if op == "call" else ())
    def wait(self, args=()):
        while True:
            msg = self.recv()
            if msg[0] == "q":
                self.serve(msg)
                continue
            if msg[0] == "a" and len(msg) == 3:
                changed = self.dec(msg[2])
                for i, state in (changed.items() if type(changed) is dict else ()):
                    if type(i) is int and 0 <= i < len(args):
                        _refill(args[i], state)
                return self.dec(msg[1])
            if msg[0] == "e" and len(msg) == 3:
                raise _exception(self, str(msg[1]), self.dec(msg[2]))
            if msg[0] == "x" and len(msg) == 2:
                raise _CodeExit(str(msg[1]))
            raise _Broken("an unexpected message")
    def serve(self, msg):
        if len(msg) != 4:
            raise _Broken("a malformed request")
        op, parts, kwargs = msg[1], self.dec(msg[2]), self.dec(msg[3])
        try:
            if type(parts) is not list or not parts or type(kwargs) is not dict:
                raise TypeError("a malformed request")
            target, args = parts[0], parts[1:]
            if self.trusted and not (op in _TESTS_SERVE and _served(target, op, args)):
                raise PermissionError("the tests' objects answer calls and iteration, not %r" % (op,))
            result = _apply(self, op, target, args, kwargs)
            changed = {i: a for i, a in enumerate(args) if type(a) in (list, dict, set, bytearray)}
            reply = ["a", self.enc(result), self.enc(changed) if op == "call" and changed else None]
        except SystemExit as e:
            if self.trusted:
                raise
            reply = ["x", "%r" % (e.code,)]
        except (_Gone, _Broken, _CodeExit):
            raise
        except BaseException as e:
            try:
                reply = ["e", type(e).__name__, self.enc(list(e.args)) if _plain(e.args) else ["l", [str(e)]]]
            except BaseException:
                reply = ["e", "Exception", ["l", ["an exception that cannot be printed"]]]
        if os.getpid() != self.pid:   # a fork of the code ran on into this loop: it must not answer
            os._exit(0)
        _flush()
        self.send(reply)
_VALUE_TAGS = ("dt", "date", "time", "td", "dec", "frac")
def _value(obj, stdlib):
    """Dates, times, durations, decimals and fractions cross as the values they are (a subclass,
    such as pandas' Timestamp, as its base), or None for anything else."""
    datetime, decimal, fractions = stdlib
    if isinstance(obj, datetime.datetime):
        return ["dt", obj.isoformat()]
    if isinstance(obj, datetime.date):
        return ["date", obj.isoformat()]
    if isinstance(obj, datetime.time):
        return ["time", obj.isoformat()]
    if isinstance(obj, datetime.timedelta):
        return ["td", obj.days, obj.seconds, obj.microseconds]
    if isinstance(obj, decimal.Decimal):
        return ["dec", str(obj)]
    if isinstance(obj, fractions.Fraction):
        return ["frac", format(obj.numerator, "x"), format(obj.denominator, "x")]
    return None
def _from_value(tag, body, stdlib):
    datetime, decimal, fractions = stdlib
    if tag == "td":
        return datetime.timedelta(days=int(body[0]), seconds=int(body[1]), microseconds=int(body[2]))
    if tag == "frac":
        return fractions.Fraction(int(body[0], 16), int(body[1], 16))
    text = str(body[0])[:100]
    return {"dt": datetime.datetime.fromisoformat, "date": datetime.date.fromisoformat,
            "time": datetime.time.fromisoformat, "dec": decimal.Decimal}[tag](text)
def _flush():
    """Print's buffers out before a reply or the verdict: what ran before them is in the output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
def _plain(value, depth=0):
    t = type(value)
    if value is None or t in (bool, int, float, str, bytes):
        return True
    return t in (tuple, list) and depth < 5 and all(_plain(v, depth + 1) for v in value)
def _served(target, op, args):
    if op != "getattr":
        return True
    name = args[0] if args else ""
    return type(name) is str and not name.startswith("_") and type(target).__module__ == "__tests__"
def _apply(peer, op, target, args, kwargs):
    o = peer.operator
    if op == "call":
        return target(*args, **kwargs)
    if op in ("getattr", "setattr", "delattr"):
        return {"getattr": getattr, "setattr": setattr, "delattr": delattr}[op](target, *args)
    if op in _COMPARE or op in ("getitem", "setitem", "delitem", "contains"):
        return getattr(o, op)(target, *args)
    if op in _BINARY:
        return getattr(o, op + ("_" if op in ("and", "or") else ""))(target, *args)
    if op[:1] == "r" and op[1:] in _BINARY:
        return getattr(o, op[1:] + ("_" if op[1:] in ("and", "or") else ""))(args[0], target)
    if op in _UNARY:
        fn = {"neg": o.neg, "pos": o.pos, "abs": abs, "invert": o.invert, "index": o.index, "int": int,
              "float": float, "len": len, "bool": bool, "hash": hash, "repr": repr, "str": str, "iter": iter,
              "next": next}[op]
        return fn(target)
    if op == "isinstance":
        return isinstance(args[0], target)
    if op == "enter":
        return target.__enter__()
    if op == "exit":
        return target.__exit__(*args)
    raise TypeError("unknown operation %r" % (op,))
def _refill(original, state):
    """A list, dict or set the code changed in place, changed in place here too."""
    if type(original) is list and type(state) is list or type(original) is bytearray and type(state) is bytearray:
        original[:] = state
    elif type(original) in (dict, set) and type(state) is type(original):
        original.clear()
        original.update(state)
def _exception(peer, name, args):
    """The code's exception as one the tests can catch: a builtin one by its name, else its own."""
    cls = getattr(peer.builtins, name, None) if name.isidentifier() else None
    args = args if type(args) is list else [args]
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        if name == "MemoryError":
            return MemoryError()
        cls = type(name if name.isidentifier() else "CodeError", (Exception,), {"__module__": "code"})
    try:
        return cls(*args)
    except Exception:
        return type(name if name.isidentifier() else "CodeError", (Exception,), {"__module__": "code"})(*map(str, args))
class _Remote:
    """An object that lives in the other process. Equal only to another such object (the other
    process decides how), never to a value of this one: a literal in a test is never matched by an
    object that claims to equal everything."""
    __slots__ = ("_peer", "_hid", "__weakref__")
    def __getattr__(self, name):
        return object.__getattribute__(self, "_peer").ask("getattr", self, name)
    def __setattr__(self, name, value):
        object.__getattribute__(self, "_peer").ask("setattr", self, name, value)
    def __delattr__(self, name):
        object.__getattribute__(self, "_peer").ask("delattr", self, name)
    def __call__(self, *args, **kwargs):
        return object.__getattribute__(self, "_peer").ask("call", self, *args, **kwargs)
    def __repr__(self):
        try:
            return str(object.__getattribute__(self, "_peer").ask("repr", self))
        except (_Gone, _Broken, _CodeExit):
            raise
        except Exception:
            return "<an object of the code>"
    def __instancecheck__(self, obj):
        return bool(object.__getattribute__(self, "_peer").ask("isinstance", self, obj))
    def __enter__(self):
        return object.__getattribute__(self, "_peer").ask("enter", self)
    def __exit__(self, *exc):
        return object.__getattribute__(self, "_peer").ask("exit", self, *exc[:2], None)
def _forward(op, remote_only=False):
    def method(self, *args):
        if remote_only and type(args[0]) is not _Remote:
            return NotImplemented
        return object.__getattribute__(self, "_peer").ask(op, self, *args)
    method.__name__ = "__%s__" % op
    return method
for _op in _UNARY + ("getitem", "setitem", "delitem", "contains"):
    setattr(_Remote, "__%s__" % _op, _forward(_op))
for _op in _BINARY:
    setattr(_Remote, "__%s__" % _op, _forward(_op))
    setattr(_Remote, "__r%s__" % _op, _forward("r" + _op))
for _op in _COMPARE:
    setattr(_Remote, "__%s__" % _op, _forward(_op, remote_only=True))


# ------------------------------------------------------------------- the two sides ---------------

def _line(tb, sources):
    line = ""
    while tb is not None:
        lines = sources.get(tb.tb_frame.f_code.co_filename, "").splitlines()
        if 0 < tb.tb_lineno <= len(lines):
            line = lines[tb.tb_lineno - 1].strip()
        tb = tb.tb_next
    return line
def _describe(e, sources):
    try:
        line = e.text.strip() if isinstance(e, SyntaxError) and e.text else _line(e.__traceback__, sources)
        text = "%s" % (e,)
        return line, type(e).__name__ + (": " + text if text else "")
    except BaseException:
        return "", "an exception that cannot be printed"
def _code_side(job, rfd, wfd, libc):
    """Run the code, then answer the tests' requests until they are done (never returns)."""
    exit_ = os._exit
    if libc and job["box"]["uid"] is not None:
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)   # its own /proc/self is its own again (setuid made it root's)
    if job["guard_net"]:
        _guard(job["guard_kill"])
    peer = _Peer(rfd, wfd, trusted=False)
    module = sys.modules["__solution__"] = type(sys)("__solution__")   # not __main__: demo blocks stay out
    ns = module.__dict__   # a real module, so that pickle (multiprocessing) finds its functions
    try:
        exec(compile(job["code"], "<code>", "exec"), ns)
        hello = ["hello", "ready", "", {k: peer.enc(v) for k, v in ns.items() if not k.startswith("__")}]
    except MemoryError:
        hello = ["hello", "memory", "", ""]
    except SystemExit as e:
        hello = ["hello", "exit", "", "%r" % (e.code,)]
    except BaseException as e:
        hello = ["hello", "error", *_describe(e, {"<code>": job["code"]})]
    if os.getpid() != peer.pid:
        exit_(0)
    _flush()
    try:
        peer.send(hello)
        while hello[1] == "ready":
            msg = peer.recv()
            if msg[0] != "q":
                break
            peer.serve(msg)
    except BaseException:
        pass
    exit_(0)
def _tests_side(job, report, libc):
    """Fork the code's process, then run the setup and the tests here; report the verdict."""
    import builtins
    to_code, from_tests = os.pipe()
    to_tests, from_code = os.pipe()
    code_pid = os.fork()
    if code_pid == 0:
        keep = sorted({0, 1, 2, to_code, from_code})
        for low, high in zip(keep, keep[1:] + [max(keep[-1] + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])]):
            os.closerange(low + 1, high)   # the result fd, the other channel ends: all gone
        _code_side(job, to_code, from_code, libc)
    os.close(to_code)
    os.close(from_code)
    me = os.getpid()
    peer = _Peer(to_tests, from_tests, trusted=True)
    def died(index):
        status = os.waitpid(code_pid, 0)[1]
        if os.WIFSIGNALED(status):
            report("killed", index, "", "%d" % os.WTERMSIG(status))
        report("exited", index, "", "%d" % os.waitstatus_to_exitcode(status))
    module = sys.modules["__tests__"] = type(sys)("__tests__")
    ns = module.__dict__
    ns["__builtins__"] = builtins
    try:
        hello = peer.recv()
        if hello[0] != "hello" or len(hello) != 4 or hello[1] not in ("ready", "memory", "exit", "error"):
            raise _Broken("no hello")
        if hello[1] != "ready":
            report(hello[1], 1, str(hello[2]), str(hello[3]))
        if type(hello[3]) is not dict:
            raise _Broken("no names")
        for name, value in hello[3].items():
            # never over a builtin: a test's abs(), all() or len() stays Python's, not the code's
            if type(name) is str and name.isidentifier() and not name.startswith("__") and not hasattr(builtins, name):
                ns[name] = peer.dec(value)
    except _Gone:
        died(1)
    except (_Broken, ImportError) as e:
        report("error", 1, "", "the code's process broke the channel: %s" % (e,))
    stages = (("<setup>", job["setup"], False), *(("<test %d>" % i, t, True) for i, t in enumerate(job["tests"])))
    sources = {name: source for name, source, _ in stages}
    for i, (name, source, is_test) in enumerate(stages):
        index = 0 if i == 0 else i + 1      # 0 setup, 1 code, 2... the tests
        try:
            exec(compile(source, name, "exec"), ns)
        except _Gone:
            died(index)
        except _Broken as e:
            report("error", index, "", "the code's process broke the channel: %s" % (e,))
        except _CodeExit as e:
            report("exit", index, "", str(e))
        except MemoryError:
            report("memory", index)
        except SystemExit as e:
            report("exit", index, "", "%r" % (e.code,))
        except BaseException as e:
            line, message = _describe(e, sources)
            report("assert" if is_test and isinstance(e, AssertionError) else "error", index, line, message)
        if os.getpid() != me:   # a test that forked: only the tests process goes on
            os._exit(0)
    report("passed")
def _main(fd):
    import json, operator, importlib, datetime, decimal, fractions  # noqa: F401  (now: once root is dropped the stdlib may be out of reach)
    job = marshal.loads(sys.stdin.buffer.read())
    del sys.argv[1:]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.set_inheritable(fd, False)   # nothing the tests start (os.system) gets the result fd
    write, exit_, getpid, nonce = os.write, os._exit, os.getpid, job["nonce"]
    def report(status, index=-1, line="", message=""):
        _flush()
        try:
            write(fd, ("ftkit-result %s %s %d %s %s\n" % (nonce, status, index, line[:500].encode("utf-8", "replace").hex(),
                                                         message[:500].encode("utf-8", "replace").hex())).encode())
        finally:
            exit_(0)
    libc = ctypes and ctypes.CDLL(None, use_errno=True)
    try:
        _enter(job["box"], libc)
    except Exception as e:
        report("setup", message="%s: %s" % (type(e).__name__, e))
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)   # too big a file fails with EFBIG instead of a kill
    # The outer process stays outside the new PID namespace and only waits: its child is PID 1
    # there, and when that child ends the kernel kills everything the code started.
    child = os.fork()
    if child:
        os.close(fd)
        status = os.waitpid(child, 0)[1]
        if os.WIFSIGNALED(status):
            try:
                _signal.signal(os.WTERMSIG(status), _signal.SIG_DFL)
            except (OSError, ValueError):
                pass
            os.kill(getpid(), os.WTERMSIG(status))
        exit_(os.waitstatus_to_exitcode(status) & 255)
    try:
        _become_tests(job["box"], libc)
    except Exception as e:
        report("setup", message="%s: %s" % (type(e).__name__, e))
    _tests_side(job, report, libc)
if __name__ == "__main__":
    _main(int(sys.argv[1]))
