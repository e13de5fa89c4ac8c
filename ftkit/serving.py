"""Serve a base model or a tuned run over an OpenAI-compatible API, through ``transformers serve``.

``ftkit serve RUN_OR_MODEL`` prepares a folder that plain transformers loads and hands it to
``transformers serve`` (the server that ships with transformers: ``/v1/chat/completions``,
``/v1/models``, ``/health``, streaming, ``usage`` in every answer). A tuned run is merged into
its base weights once (:func:`ftkit.export.merged.export_run`, checked to answer like the adapter) and
cached under ``$FTKIT_CACHE/served/<run id>``. The run's chat template and system prompt travel
with it: when a request has no system message, the served chat template inserts the one the run
was trained with (:func:`with_default_system`). The user turn is the client's to write, as the
run's instruction says (``ftkit serve`` prints it; :attr:`Server.template` has it).

Generation settings are the server's: the model's ``generation_config.json``, then the request's
``max_tokens``, ``stop``, ``temperature`` (0 means greedy) and ``top_p``. Greedy answers through
the server equal :func:`ftkit.generation.generate.generate`'s on the same messages (tested), so a served
run is measured with the same :class:`~ftkit.generation.endpoint.Endpoint` as a hosted baseline:

>>> with start_server("smollm2-135m-instruct") as server:             # doctest: +SKIP
...     outs = server.endpoint().generate([[{"role": "user", "content": "Hi"}]])
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

from ftkit.export.merged import export_run
from ftkit.generation.endpoint import Endpoint
from ftkit.models.conversion import cache_dir, converted_gguf
from ftkit.models import threads as _threads
from ftkit.models.device import choose_device
from ftkit.models.loading import EMBEDDED_NAME, resolve_source
from ftkit.models.tuned import run_template
from ftkit.prompts import PromptTemplate

__all__ = ["ServedModel", "Server", "describe_usage", "prepare", "serve", "served_root", "start_server",
           "with_default_system"]

MARKER = "ftkit-served.json"  # written last into a prepared run folder: what it was made from
PARENT_ENV = "FTKIT_SERVE_PARENT"  # a server started by start_server exits when that process is gone


@dataclass
class ServedModel:
    """What a server loads: ``path`` (a folder whose name is the model name a client sends; None
    for a Hub id, served by its id) and, for a tuned run, the template the run was trained with
    (how to ask it)."""

    name: str
    path: Path | None = None
    template: PromptTemplate | None = None  # for a run
    source: str = ""  # what it was made from, in words


def served_root() -> Path:
    """Where served folders are kept: ``$FTKIT_CACHE/served``."""
    return cache_dir() / "served"


def with_default_system(chat_template: str, system: str) -> str:
    """``chat_template`` with ``system`` as the system message of any conversation that has none
    (one with its own system message is rendered as before). Applied again, the new default
    replaces the old one.

    >>> from jinja2 import Template
    >>> t = with_default_system("{% for m in messages %}{{ m.role }}: {{ m.content }}|{% endfor %}", "Be brief.")
    >>> Template(t).render(messages=[{"role": "user", "content": "Hi"}])
    'system: Be brief.|user: Hi|'
    """
    if chat_template.startswith(_DEFAULT_SYSTEM_START) and _DEFAULT_SYSTEM_END in chat_template:
        chat_template = chat_template.split(_DEFAULT_SYSTEM_END, 1)[1]
    # A Jinja string literal is read like a Python one: JSON's escapes (\n, \", \\) mean the same.
    literal = json.dumps(system, ensure_ascii=False)
    return (_DEFAULT_SYSTEM_START + "{%- if not messages or messages[0]['role'] != 'system' %}"
            "{%- set messages = [{'role': 'system', 'content': " + literal + "}] + messages %}"
            "{%- endif %}" + _DEFAULT_SYSTEM_END + chat_template)


_DEFAULT_SYSTEM_START = "{#- ftkit: the system prompt of the served run, when a request has none #}"
_DEFAULT_SYSTEM_END = "{#- ftkit: end #}"


# --- what is served ----------------------------------------------------------------------------

def _as_run(ref, runs_root):
    """The run ``ref`` names (a Run, a run folder, an id or a unique prefix), else None for a model."""
    from ftkit.runs import Run, load_run

    if isinstance(ref, Run):
        return ref
    path = Path(str(ref)).expanduser()
    if path.is_dir() and (path / "status.json").is_file():
        return Run(path.resolve())
    if str(ref).lower() == EMBEDDED_NAME or path.exists():
        return None
    try:
        return load_run(str(ref), runs_root)
    except KeyError as err:
        if "more than one run" in err.args[0]:
            raise ValueError(f"{err.args[0]}; give more of the id") from None
        return None


def prepare(run_or_model=EMBEDDED_NAME, runs_root=None, say=print) -> ServedModel:
    """A folder ``transformers serve`` loads, named as clients will ask for it.

    A run (its id, a unique prefix, its folder or the :class:`~ftkit.runs.Run`) is merged once
    into ``$FTKIT_CACHE/served/<run id>`` (again only when its adapter changed; deleted once the
    run folder is) with its system prompt as the chat template's default. A model (the embedded
    one, a folder, a .gguf) is linked there under its own name. A Hub id is served as it is.

    >>> prepare("20250101-120000-sft").name        # doctest: +SKIP
    '20250101-120000-sft'
    """
    run = _as_run(run_or_model, runs_root)
    if run is not None:
        return _prepare_run(run, say)
    kind, location = resolve_source(run_or_model)  # ModelLoadError says what to give instead
    if kind == "hub":
        return ServedModel(name=location, source=f"{location} (from the Hugging Face Hub)")
    folder = converted_gguf(location, verbose=True) if kind in ("embedded", "gguf") else Path(location).resolve()
    name = EMBEDDED_NAME if kind == "embedded" else Path(location).stem if kind == "gguf" else folder.name
    path = _link(folder, name)
    return ServedModel(name=path.name, path=path, source=f"{run_or_model} ({folder})")


def _link(folder: Path, name: str) -> Path:
    """``served_root()/name`` pointing at ``folder``, so the server knows it by ``name``; the
    folder itself where links cannot be made."""
    link = served_root() / name
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == folder:
            return link
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():  # a folder of that name (a run served before?): serve the model by its own name
            return folder
        link.symlink_to(folder, target_is_directory=True)
        return link
    except OSError:
        return folder


def _adapter_stamp(run) -> dict:
    files = sorted(p for p in run.adapter_dir.glob("*") if p.is_file())
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def _prune_stale() -> None:
    """Delete merged copies of runs whose folder is gone (a merged copy of the embedded model is
    half a gigabyte), and merges a killed process left half done."""
    for folder in served_root().glob("*"):
        if folder.is_symlink() or not folder.is_dir():
            continue
        if folder.name.startswith("."):
            if time.time() - folder.stat().st_mtime > 3600:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            source = json.loads((folder / MARKER).read_text())["stamp"]["run"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours
        if not Path(source).is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _prepare_run(run, say) -> ServedModel:
    _prune_stale()
    template = run_template(run)
    target = served_root() / run.id
    stamp = {"run": str(run.path), "adapter": _adapter_stamp(run)}
    source = f"run {run.id} ({run.config.get('kind', 'tuned')} of {run.config.get('base_model')}), merged"
    served = ServedModel(name=run.id, path=target, template=template, source=source)
    if _merged_for(target, stamp):
        return served
    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"run {run.id} has no saved adapter (status: {run.status.get('status')}); serve a "
                         "completed or stopped run")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two `ftkit serve` of one run at once: the second waits for the first one's merge and reads it.
    with FileLock(str(target.parent / f".{run.id}.lock")):
        if not _merged_for(target, stamp):
            say(f"Merging run {run.id} into {target} (once; checked to answer like its adapter)")
            _merge_into(run, target, template, stamp)
    return served


def _merged_for(target: Path, stamp: dict) -> bool:
    marker = target / MARKER
    try:
        return json.loads(marker.read_text()).get("stamp") == stamp
    except (OSError, ValueError, AttributeError):
        return False


def _merge_into(run, target: Path, template, stamp: dict) -> None:
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=f".{run.id}-", dir=target.parent))
    try:
        export_run(run, tmp, merged=True)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        if template.system is not None and getattr(tokenizer, "chat_template", None):
            # A client that sends only the user turn gets the prompt the run was trained with.
            tokenizer.chat_template = with_default_system(tokenizer.chat_template, template.system)
            tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"stamp": stamp, "template": asdict(template)}, indent=1))
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the server ---------------------------------------------------------------------------------

def _check_installed() -> None:
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        is_serve_available = None
    if is_serve_available is None or not is_serve_available():
        raise ImportError("serving needs fastapi, uvicorn, pydantic and openai: pip install 'ftkit[serve]'")


def _exit_with_parent(parent: int) -> None:
    """Stop this server when the process that started it is gone (a closed notebook kernel)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="ftkit-serve-parent").start()


def describe_usage(served: ServedModel, base_url: str) -> list[str]:
    """What a client needs, as lines: the URL, the model name, how to ask it."""
    lines = [f"  base URL:  {base_url}", f"  model:     {served.name}"]
    template = served.template
    if template is not None:
        system = "the model's own default" if template.system is None else repr(template.system)
        lines += [f"  system prompt: {system} (inserted when a request has no system message)",
                  f"  user turn: {template.instruction!r} (the run's instruction; the client fills it in)"]
    lines += ["From Python:",
              f"  Endpoint(base_url={base_url!r}, model={served.name!r}, api_key_env=None)",
              f"  OpenAI(base_url={base_url!r}, api_key='none').chat.completions.create(model={served.name!r}, ...)",
              "In a pipeline config (templates:):",
              f"  - {{kind: zero_shot, endpoint: {{base_url: {base_url}, model: {served.name}, api_key_env: null}}}}"]
    return lines


def serve(run_or_model=EMBEDDED_NAME, host: str = "127.0.0.1", port: int = 8000, *, runs_root=None,
          device: str = "auto", dtype: str = "auto", threads: int = 0, say=print) -> None:
    """Serve until interrupted (what ``ftkit serve`` runs). ``device``/``dtype`` are chosen as
    :func:`ftkit.load_model` chooses them, so served answers equal the notebook's; on the CPU so
    are torch's threads (the cores other processes leave free, ``FTKIT_THREADS``, or ``threads``
    above 0), before the server starts the threads that answer."""
    _check_installed()
    served = prepare(run_or_model, runs_root, say)
    choice = choose_device(device, dtype)
    base_url = f"http://{host}:{port}/v1"
    on_cpu = ""
    if choice.device == "cpu":
        # transformers serve runs the model in a process it spawns, where torch starts one thread per
        # core: beside another busy process each token then waits on the core it lost (six requests
        # measured 116 s instead of 3.6 s so, beside a notebook generating). The child reads this.
        chosen = _threads.apply(threads)
        os.environ["OMP_NUM_THREADS"] = str(chosen.threads)
        on_cpu = f" with {chosen}"
    say(f"Serving {served.source} on {choice.device}{on_cpu} in {choice.dtype_name}, through transformers serve")
    for line in describe_usage(served, base_url):
        say(line)
    if os.environ.get(PARENT_ENV):
        _exit_with_parent(int(os.environ[PARENT_ENV]))
    if served.path is not None:
        # The server names a local model by its path: from the folder above it, the short name.
        os.chdir(served.path.parent)
    from transformers.cli.serve import Serve

    Serve(force_model=served.name, host=host, port=port, device=choice.device, dtype=choice.dtype_name,
          log_level="warning")


@dataclass
class Server:
    """A ``ftkit serve`` process started by :func:`start_server`; stop it with :meth:`stop` (or
    use it in a ``with`` block)."""

    base_url: str
    model: str
    template: PromptTemplate | None = None  # the run's, for a run: how to ask it
    log: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def endpoint(self, **settings) -> Endpoint:
        """An :class:`~ftkit.generation.endpoint.Endpoint` for this server (no key)."""
        return Endpoint(**{"base_url": self.base_url, "model": self.model, "api_key_env": None, **settings})

    def stop(self) -> None:
        """Stop the server; its log is deleted unless it had stopped on its own (then it says why)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.log is not None:
                self.log.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: no proxy
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def start_server(run_or_model=EMBEDDED_NAME, *, port: int | None = None, host: str = "127.0.0.1", runs_root=None,
                 device: str = "auto", dtype: str = "auto", threads: int = 0, timeout_s: float = 600) -> Server:
    """Start ``ftkit serve`` in another process and wait until it answers; return the :class:`Server`.

    The process stops with :meth:`Server.stop`, at the end of a ``with`` block, or when this
    process ends. Its output goes to ``Server.log``. ``port=None`` picks a free one; ``threads``
    as in :func:`serve` (0: chosen by the server from the load when it starts).

    >>> server = start_server(run)                       # doctest: +SKIP
    >>> server.endpoint().generate([run_template(run).messages({"prompt": "Refund please"})])  # doctest: +SKIP
    >>> server.stop()                                    # doctest: +SKIP
    """
    from ftkit.runs import Run

    _check_installed()
    port = port or _free_port(host)
    ref = str(run_or_model.path) if isinstance(run_or_model, Run) else str(run_or_model)
    command = [sys.executable, "-m", "ftkit", "serve", ref, "--host", host, "--port", str(port),
               "--device", device, "--dtype", dtype, "--threads", str(threads)]
    if runs_root is not None:
        command += ["--root", str(runs_root)]
    fd, name = tempfile.mkstemp(prefix="ftkit-serve-", suffix=".log")
    os.close(fd)
    log = Path(name)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, PARENT_ENV: str(os.getpid())})
    base = f"http://{host}:{port}"
    server = Server(base_url=f"{base}/v1", model="", log=log, process=process)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"`ftkit serve {ref}` ended with code {process.returncode} before it answered; "
                               f"its output ({log}):\n{tail}")
        try:
            if _get(f"{base}/health").get("status") == "ok":
                break
        except (OSError, ValueError):  # not listening yet, or not answering in JSON yet
            pass
        if time.monotonic() > deadline:
            process.kill()  # its log stays, for the reason
            process.wait()
            raise TimeoutError(f"`ftkit serve {ref}` did not answer within {timeout_s:.0f} s; its output is in {log}")
        time.sleep(0.5)
    server.model = _get(f"{base}/v1/models")["data"][0]["id"]
    run = _as_run(run_or_model, runs_root)  # its template: ask the served run the way it was trained
    server.template = run_template(run) if run is not None else None
    atexit.register(server.stop)
    return server
