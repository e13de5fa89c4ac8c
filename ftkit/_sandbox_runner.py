"""The program of a sandboxed run: :mod:`ftkit.sandbox` reads this file as text and runs it with
``python -I -c`` in the child process (importing it runs nothing).

It starts as root (when we are), sets itself up and drops root before it runs a line of the
snippet. It learns the result fd from argv and the nonce from stdin; the snippet gets neither in
its globals, but one that digs them out of this frame can forge a pass.
"""
import os, sys, marshal, _signal, resource
try:
    import ctypes
except ImportError:   # a Python built without libffi: no namespaces, root is still dropped
    ctypes = None
def _enter(box, libc):
    def call(rc, what):
        if rc != 0:
            raise OSError(ctypes.get_errno(), "%s: %s" % (what, os.strerror(ctypes.get_errno())))
    def write(path, text):
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, text.encode())
        os.close(fd)
    def drop_root(uid):
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if libc:
            call(libc.prctl(4, 1, 0, 0, 0), "PR_SET_DUMPABLE")   # setuid() made /proc/self root's
    def private_mounts():   # private first, or the mounts below would propagate to the host
        call(libc.mount(None, b"/", None, 16384 | 262144, None), "making / private")
        binds = [os.open(b, os.O_PATH | os.O_DIRECTORY) for b in box["binds"]]
        for m in box["mounts"]:
            call(libc.mount(*m), "mounting %r" % m[1])
        for path, fd in zip(box["binds"], binds):
            os.makedirs(path, exist_ok=True)
            call(libc.mount(b"/proc/self/fd/%d" % fd, path.encode(), None, 4096 | 16384, None), "binding " + path)
            call(libc.mount(None, path.encode(), None, 32 | 4096 | 1, None), "read-only " + path)
            os.close(fd)
        os.makedirs(box["work"], mode=0o700, exist_ok=True)
        if box["uid"] is not None:
            os.chown(box["work"], box["uid"], box["uid"])
    if box["ns"] == "root":
        call(libc.unshare(box["flags"]), "unshare")
        if box["mounts"]:
            private_mounts()
    if box["uid"] is not None:
        drop_root(box["uid"])
    if box["ns"] == "user":
        uid, gid = os.getuid(), os.getgid()
        call(libc.unshare(box["flags"] | 0x10000000), "unshare")
        write("/proc/self/setgroups", "deny")
        write("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        write("/proc/self/gid_map", "%d %d 1" % (gid, gid))
        if box["mounts"]:
            private_mounts()
        call(libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()), "dropping capabilities")
    os.chdir(box["work"])
    for which, value in box["limits"]:
        resource.setrlimit(which, (value, value))
    if libc:
        call(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")   # no setuid binary gives root back
def _line(tb, sources):
    line = ""
    while tb is not None:
        lines = sources.get(tb.tb_frame.f_code.co_filename, "").splitlines()
        if 0 < tb.tb_lineno <= len(lines):
            line = lines[tb.tb_lineno - 1].strip()
        tb = tb.tb_next
    return line
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
def _main(fd):
    job = marshal.loads(sys.stdin.buffer.read())
    del sys.argv[1:]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # bound now: the snippet may replace builtins.exec or os.write, not what the runner holds
    write, exit_, getpid, nonce, name_of, exec_, compile_ = os.write, os._exit, os.getpid, job["nonce"], type, exec, compile
    me, streams = getpid(), (sys.stdout, sys.stderr)
    def report(status, index=-1, line="", message=""):
        if getpid() != me:   # a fork of the snippet ran on into this loop: only the runner reports
            exit_(0)
        for stream in streams:
            try:
                stream.flush()
            except BaseException:
                pass
        try:
            write(fd, ("ftkit-result %s %s %d %s %s\n" % (nonce, status, index, line[:500].encode("utf-8", "replace").hex(),
                                                         message[:500].encode("utf-8", "replace").hex())).encode())
        finally:
            exit_(0)
    try:
        _enter(job["box"], ctypes and ctypes.CDLL(None, use_errno=True))
    except Exception as e:
        report("setup", message="%s: %s" % (type(e).__name__, e))
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)   # too big a file fails with EFBIG instead of a kill
    if job["box"]["ns"] != "none":
        # This process stays outside the new PID namespace; its child is PID 1 there, and when that
        # child ends the kernel kills everything the snippet started.
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
        me = getpid()
    if job["guard_net"]:
        _guard(job["guard_kill"])
    module = sys.modules["__solution__"] = type(sys)("__solution__")   # not __main__: demo blocks stay out
    ns = module.__dict__   # a real module, so that pickle (multiprocessing) finds its functions
    stages = (("<setup>", job["setup"], False), ("<code>", job["code"], False),
              *(("<test %d>" % i, t, True) for i, t in enumerate(job["tests"])))   # a tuple: cannot be emptied
    sources = {name: source for name, source, _ in stages}
    for i, (name, source, is_test) in enumerate(stages):
        try:
            exec_(compile_(source, name, "exec"), ns)
        except MemoryError:
            report("memory", i)
        except SystemExit as e:
            report("exit", i, "", "%r" % (e.code,))
        except BaseException as e:
            try:
                line = e.text.strip() if isinstance(e, SyntaxError) and e.text else _line(e.__traceback__, sources)
                text = "%s" % (e,)
                message = name_of(e).__name__ + (": " + text if text else "")
            except BaseException:
                line, message = "", "an exception that cannot be printed"
            report("assert" if is_test and isinstance(e, AssertionError) else "error", i, line, message)
    report("passed")
if __name__ == "__main__":
    _main(int(sys.argv[1]))
