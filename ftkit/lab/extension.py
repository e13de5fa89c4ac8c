"""The Jupyter Server extension behind ftkit's JupyterLab panel: a small REST API over the runs
folder. It reads what :mod:`ftkit.runs` wrote and writes one thing there, a stop request.

=====================================  ===================================================
``GET  /ftkit/api/runs``                every run, newest first, with its last losses
``GET  /ftkit/api/runs/<id>``           config, status and evaluation of one run
``GET  /ftkit/api/runs/<id>/events``    the events after byte ``?offset=`` of events.jsonl
``GET  /ftkit/api/runs/<id>/report``    the run's HTML report (text/html)
``POST /ftkit/api/runs/<id>/stop``      ask the training process to stop after its step
=====================================  ===================================================

Every route sits under the server's base URL and needs the server's authentication (token or
login cookie; a POST from a browser also its XSRF token, as for Jupyter's own API), and asks the
server's Authorizer: reading is the ``read`` action on the ``ftkit`` resource, Stop is ``write``,
so a deployment can let some users watch runs but not stop them. A run id that is malformed,
unknown, or whose folder or files lead out of the runs folder (``..``, a symbolic link) or are not
regular files (a FIFO) gets a JSON 404, never a file.

Anyone who can write into the runs folder (a shared folder, a run copied from a colleague) can
put anything there, and swap it while the server reads. So the files are read only through
:class:`ftkit.runs.Run`, which opens each once without following a link or waiting on a FIFO and
reads what it checked (:func:`ftkit.runs.open_run_file`); and every read runs in a worker thread,
so a slow file system holds a thread, never the event loop that JupyterLab's own API runs on.

Which runs folder: ``c.FtkitServer.runs_dir`` in a Jupyter config file, or
``jupyter lab --FtkitServer.runs_dir=/data/runs``; unset, ``$FTKIT_RUNS``, else ``runs``. A
relative path is taken from the server's root_dir (the folder JupyterLab shows), so the
default is ``<root_dir>/runs``. The extension is enabled by
``jupyter-config/jupyter_server_config.d/ftkit.json``, installed with the package, or by hand:
``jupyter server extension enable ftkit.lab.extension``.

>>> resolve_runs_dir("", "/srv/notebooks", environ={})
PosixPath('/srv/notebooks/runs')
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Unicode
from traitlets.config import Configurable

from ftkit.runs import EXPORT_CHECK, STOP_REQUEST, UNREADABLE, Run, RunFileError, list_runs

__all__ = ["RUN_ID", "FtkitServer", "find_run", "resolve_runs_dir", "run_summary"]

# What new_run names a folder: a timestamp, then sanitize_name's output (lowercase letters,
# digits and dashes, at most 60, no leading dash), then "-<i>" for a second run in that second.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[a-z0-9][a-z0-9-]{0,70}")
# The files a handler reads or writes in a run folder; any of them not a regular file (a symbolic
# link: events.jsonl -> /etc/passwd; a FIFO) and the run is not served. Run reads each of them
# safely all the same: this check keeps such a run out of the list, Run's keeps a swap out.
RUN_FILES = ("config.json", "status.json", "eval.json", "events.jsonl", STOP_REQUEST, EXPORT_CHECK)
AUTH_RESOURCE = "ftkit"  # what the server's Authorizer is asked about: GET is "read", POST "write"
SPARK_POINTS = 50  # losses per run in the listing: a sparkline, not the curve
EVENTS_MAX_BYTES = 1 << 20  # per events call; `more` says to ask again at once


class FtkitServer(Configurable):
    """The extension's settings, read from the server's config (``c.FtkitServer.runs_dir``)."""

    runs_dir = Unicode("", config=True, help=(
        "Folder of ftkit's run records. Empty: $FTKIT_RUNS, else 'runs'. A relative path is taken "
        "from the server's root_dir."))


def resolve_runs_dir(setting: str, root_dir: str, environ=os.environ) -> Path:
    """The runs folder the server shows: ``setting``, else ``$FTKIT_RUNS``, else ``runs``, made
    absolute against the server's ``root_dir`` (the same rule as :func:`ftkit.runs.runs_dir`,
    from the folder JupyterLab shows rather than the server's working directory).

    >>> resolve_runs_dir("", "/srv/nb", environ={"FTKIT_RUNS": "/data/runs"})
    PosixPath('/data/runs')
    """
    path = Path(setting or environ.get("FTKIT_RUNS") or "runs").expanduser()
    return path if path.is_absolute() else Path(root_dir).expanduser() / path


def _kind(path: Path) -> str:
    """"file", "folder", "absent" or "other" (a link, a FIFO, ...), without following a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "other"
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def find_run(base: Path, run_id: str) -> Run | None:
    """The run ``run_id`` names under ``base``, or None: a malformed id, no such folder, or one
    that is not a plain folder of plain files (the folder or one of the files served a symbolic
    link, a FIFO, ...).

    >>> find_run(Path("/tmp"), "../etc") is None
    True
    """
    if not RUN_ID.fullmatch(run_id):
        return None  # also every "..", "/", "\\", "%2e" and NUL: none can reach the file system
    folder = base.resolve() / run_id
    # The folder itself must be a real folder right in the runs folder, with a real config.json.
    if _kind(folder) != "folder" or _kind(folder / "config.json") != "file":
        return None
    if any(_kind(folder / name) not in ("file", "absent") for name in RUN_FILES):
        return None
    return Run(folder)


def served_runs(base: Path) -> list[Run]:
    """The runs under ``base`` that :func:`find_run` serves, newest first.

    >>> [run.id for run in served_runs(Path("runs"))]   # doctest: +SKIP
    ['20261126-073914-qa-sft', ...]
    """
    return [run for run in list_runs(base) if find_run(base, run.id) is not None]


# Per run folder: what the events say for the listing, with the events file's size and mtime
# when read. A finished run is parsed once; a running one again only when its file grew.
_EVENTS_CACHE: dict[str, tuple[tuple[int, int], dict]] = {}


def _from_events(run: Run) -> dict:
    try:  # lstat: the key of what was read, not of anything a link points at
        info = os.lstat(run.path / "events.jsonl")
        key = (info.st_size, info.st_mtime_ns)
    except FileNotFoundError:
        key = (0, 0)
    cached = _EVENTS_CACHE.get(str(run.path))
    if cached and cached[0] == key:
        return cached[1]
    events = run.events()  # a resumed run's steps logged once each (Run.events)
    losses = [[e["step"], e["loss"]] for e in events
              if e.get("event") == "log" and isinstance(e.get("loss"), (int, float)) and "step" in e]
    starts = [e for e in events if e.get("event") == "start"]
    summary = {
        "loss": losses[-SPARK_POINTS:],
        "last_step": max((e.get("step") or 0 for e in events if e.get("event") == "log"), default=0),
        "started": next((e["time"] for e in events if "time" in e), None),
        "max_steps": starts[-1].get("max_steps") if starts else None,
    }
    if len(_EVENTS_CACHE) > 1000:  # a server up for months over many runs: start the cache again
        _EVENTS_CACHE.clear()
    _EVENTS_CACHE[str(run.path)] = (key, summary)
    return summary


def run_summary(run: Run) -> dict:
    """One run as ``GET /ftkit/api/runs`` lists it: ``id``, ``name`` (the settings' name),
    ``kind``, ``status`` (as :attr:`Run.status` reads it: a dead running run is ``interrupted``),
    ``step``, ``max_steps`` (None while unknown), ``metric`` (``name``, ``variant``, ``value`` of
    :attr:`Run.evaluation`, or None), ``started`` (unix seconds), ``device``, ``loss`` (the last
    50 logged losses as ``[step, loss]``) and ``stop_requested``; ``error`` too when the run's
    status cannot be read (``status`` is then ``unknown``; the error says why).

    >>> run_summary(run)["loss"][-1]   # doctest: +SKIP
    [40, 0.412]
    """
    config, status, evaluation = run.config, run.status, run.evaluation
    from_events = _from_events(run)
    settings = config.get("settings") or {}
    planned = settings.get("max_steps") if isinstance(settings.get("max_steps"), int) else -1
    max_steps = status.get("max_steps") or from_events["max_steps"] or (planned if planned > 0 else None)
    started = from_events["started"]
    if started is None:  # nothing logged yet: the folder's config was written when the run began
        started = os.lstat(run.path / "config.json").st_mtime
    metric = None
    if evaluation and evaluation.get("metric") is not None:
        metric = {"name": evaluation["metric"], "variant": evaluation.get("variant"), "value": evaluation.get("value")}
    summary = {
        "id": run.id, "name": settings.get("name") or run.id[16:], "kind": config.get("kind", ""),
        "status": status.get("status", "unknown"),
        "step": max(status.get("step") or 0, from_events["last_step"]), "max_steps": max_steps,
        "metric": metric, "started": float(started), "device": config.get("device", ""),
        "loss": from_events["loss"], "stop_requested": run.stop_requested,
    }
    if UNREADABLE in status:
        summary["error"] = status[UNREADABLE]
    return summary


def _list_payload(base: Path) -> dict:
    runs = []
    for run in served_runs(base):
        try:
            runs.append(run_summary(run))
        except Exception as err:  # noqa: BLE001 - one unreadable run must not hide the others
            runs.append({"id": run.id, "name": run.id[16:], "kind": "", "status": "unknown", "step": 0,
                         "max_steps": None, "metric": None, "started": 0.0, "device": "", "loss": [],
                         "error": f"{type(err).__name__}: {err}"})
    return {"runs_dir": str(base.resolve()), "runs": runs}


# --- the report page -----------------------------------------------------------------------------

_HEAD = re.compile(r"<head[^>]*>(\s*<meta charset=[^>]*>)?", re.IGNORECASE)
_SCRIPT = re.compile(r"<script\b[^>]*>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)


def report_policy(page: str) -> str:
    """The Content-Security-Policy of a report page: its own inline scripts (plotly.js and the
    charts, allowed by hash) and nothing else; no requests, no plugins, no forms; styles inline.

    The hashes are taken from the page as :func:`ftkit.report.render_report` wrote it, and that
    escapes every value that comes from a run (plotly writes its data as JSON with ``<`` and
    ``/`` escaped), so the page holds no script but those. What the policy adds: no event handler
    attributes, no script or request to anywhere else, whatever a value might contain.

    >>> report_policy("<p>no charts</p>").split("; ")[:2]
    ["default-src 'none'", "script-src 'none'"]
    """
    hashes = [base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() for body in _SCRIPT.findall(page)]
    scripts = " ".join(f"'sha256-{h}'" for h in dict.fromkeys(hashes)) or "'none'"
    # plotly.js draws with inline styles and offers "download as PNG" (a data: or blob: image).
    return "; ".join(["default-src 'none'", f"script-src {scripts}", "style-src 'unsafe-inline'",
                      "img-src data: blob:", "font-src data:", "base-uri 'none'", "form-action 'none'"])


def render_run_report(run: Run) -> tuple[str, str]:
    """The run's report page, with its policy also in a ``<meta>`` (a page shown through an
    iframe's srcdoc gets no response header), and the policy for the header."""
    from ftkit.report import recorded_summary, render_report

    summary, metric = recorded_summary([run])
    page = render_report(title=f"ftkit report: {run.id}", summary=summary, runs=[run], metric=metric or "exact_match",
                         config=run.config, notes=[f"run folder: {run.path}"])
    policy = report_policy(page)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
    # Right after <head> and its charset: a policy in a <meta> covers only what follows it.
    page = _HEAD.sub(lambda m: m.group(0) + meta, page, count=1)
    return page, policy


# --- the handlers --------------------------------------------------------------------------------

class _RunsHandler(APIHandler):
    """What every ftkit handler shares: the runs folder, the run from the URL, reads off the
    event loop, JSON out. Every method carries ``@web.authenticated`` and ``@authorized``."""

    auth_resource = AUTH_RESOURCE

    @property
    def runs_base(self) -> Path:
        return self.settings["ftkit_runs_dir"]

    async def off_loop(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in a worker thread. A file system that hangs (a network mount)
        then holds a thread, not the event loop that every kernel and JupyterLab's own API share.
        A run file found not to be a regular file on the way (swapped in since the run was found)
        answers 404, as if the run had been refused from the start."""
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
        except RunFileError:
            raise web.HTTPError(404, "no such run under the runs folder (one of its files is not a regular "
                                     "file); GET ftkit/api/runs lists them") from None

    async def get_run(self, run_id: str) -> Run:
        run = await self.off_loop(find_run, self.runs_base, run_id)
        if run is None:
            # The id as given is not echoed: it may be anything an attacker typed.
            raise web.HTTPError(404, "no such run under the runs folder; GET ftkit/api/runs lists them")
        return run

    def reply(self, payload: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")  # a poll must see the run as it is now
        self.finish(json.dumps(_nan_to_none(payload), default=str))


def _nan_to_none(obj):
    """JSON has no NaN or Infinity (a diverged loss), and a browser's JSON.parse refuses the
    ``NaN`` Python writes: send null.

    >>> _nan_to_none({"loss": [[1, float("nan")], [2, 0.5]]})
    {'loss': [[1, None], [2, 0.5]]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def run_detail(run: Run) -> dict:
    """One run as ``GET /ftkit/api/runs/<id>`` answers: ``id``, ``config``, ``status``, ``evaluation``."""
    return {"id": run.id, "config": run.config, "status": run.status, "evaluation": run.evaluation}


def stop_run(run: Run, by: str) -> str | None:
    """Ask ``run`` to stop (:meth:`Run.request_stop`) if it is running; else its status, unchanged."""
    status = run.status.get("status")
    if status != "running":
        return status
    run.request_stop(by=by)
    return None


class RunsHandler(_RunsHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.off_loop(_list_payload, self.runs_base))


class RunHandler(_RunsHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str):
        run = await self.get_run(run_id)
        try:
            self.reply(await self.off_loop(run_detail, run))
        except ValueError as err:  # a record file edited by hand, or cut short by a full disk
            raise web.HTTPError(500, f"run {run.id}'s record cannot be read: {err}") from None


class EventsHandler(_RunsHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str):
        raw = self.get_argument("offset", "0")
        run = await self.get_run(run_id)
        if not re.fullmatch(r"[0-9]{1,18}", raw):
            raise web.HTTPError(400, "offset must be a byte offset: 0, or the offset the last call returned")
        try:
            events, offset, more = await self.off_loop(run.events_since, int(raw), EVENTS_MAX_BYTES)
        except ValueError as err:
            raise web.HTTPError(400, str(err)) from None
        self.reply({"events": events, "offset": offset, "more": more})


class ReportHandler(_RunsHandler):
    _policy = "default-src 'none'"

    @property
    def content_security_policy(self) -> str:
        # Replaces the API's "default-src 'none'" for this one page. Opened directly (not in
        # JupyterLab's sandboxed frame), the sandbox gives its scripts an opaque origin all the
        # same: no cookies, no XSRF token, no way to call this API as the user.
        return f"{self._policy}; frame-ancestors 'self'; sandbox allow-scripts allow-downloads"

    @web.authenticated
    @authorized
    async def get(self, run_id: str):
        run = await self.get_run(run_id)
        page, self._policy = await self.off_loop(render_run_report, run)
        self.set_header("Content-Security-Policy", self.content_security_policy)
        self.set_header("Cache-Control", "no-store")
        self.finish(page, set_content_type="text/html; charset=UTF-8")


class StopHandler(_RunsHandler):
    @web.authenticated
    @authorized  # "write": a deployment's Authorizer can let a user watch runs but not stop them
    async def post(self, run_id: str):
        run = await self.get_run(run_id)
        user = self.current_user
        who = getattr(user, "display_name", None) or getattr(user, "username", None) or "someone"
        status = await self.off_loop(stop_run, run, by=f"{who} (JupyterLab)")
        if status is not None:
            raise web.HTTPError(409, f"run {run.id} is {status}: only a running run can be stopped")
        self.reply({"id": run.id, "stop_requested": True}, status=202)


def tour_dir() -> Path | None:
    """Where the guided notebooks are: beside the package in a source checkout (an editable
    install), or installed with it (``<prefix>/share/ftkit/notebooks``, from a wheel); None when
    neither."""
    import sys

    # A source checkout's own notebooks first: an editable install's copy is only as new as the install.
    for folder in (Path(__file__).resolve().parents[2] / "notebooks", Path(sys.prefix) / "share" / "ftkit" / "notebooks"):
        if any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    return None


def tour_payload() -> dict:
    """The tour notebooks with their contents, in tour order, for the launcher to copy through the
    contents API: ``{"notebooks": [{"name": "00_quickstart.ipynb", "content": {...}}, ...]}``."""
    folder = tour_dir()
    notebooks = sorted(folder.glob("[0-9][0-9]_*.ipynb")) if folder else []
    return {"notebooks": [{"name": nb.name, "content": json.loads(nb.read_text(encoding="utf-8"))}
                          for nb in notebooks]}


class TourHandler(_RunsHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.off_loop(tour_payload))


class NotFoundHandler(_RunsHandler):
    """Anything else under ftkit/api: a JSON 404 (Jupyter's own is an HTML page)."""

    def _not_found(self):
        raise web.HTTPError(404, "no such ftkit API route; the routes are runs, runs/<id>, "
                                 "runs/<id>/events, runs/<id>/report, runs/<id>/stop and tour")

    # One decorated method each: @authorized fixes its action ("read", "write") at its first call.
    @web.authenticated
    @authorized
    async def get(self, *args):
        self._not_found()

    @web.authenticated
    @authorized
    async def post(self, *args):
        self._not_found()


# --- the extension -------------------------------------------------------------------------------

def _jupyter_server_extension_points():
    return [{"module": "ftkit.lab.extension"}]


def _load_jupyter_server_extension(serverapp):
    """Register the handlers under ``<base_url>/ftkit/api``, with the runs folder in the settings."""
    settings = FtkitServer(parent=serverapp)
    base = resolve_runs_dir(settings.runs_dir, serverapp.root_dir)
    web_app = serverapp.web_app
    web_app.settings["ftkit_runs_dir"] = base
    # Kernels inherit the server's environment: runs recorded with ftkit's default folder (the
    # notebooks' RUNS_ROOT = None) land where this sidebar looks, wherever the notebook is.
    os.environ.setdefault("FTKIT_RUNS", str(base))
    api = url_path_join(web_app.settings["base_url"], "ftkit", "api")
    run = url_path_join(api, "runs", "([^/]+)")
    web_app.add_handlers(".*$", [
        (url_path_join(api, "runs") + "/?", RunsHandler),
        (run + "/?", RunHandler),
        (url_path_join(run, "events"), EventsHandler),
        (url_path_join(run, "report"), ReportHandler),
        (url_path_join(run, "stop"), StopHandler),
        (url_path_join(api, "tour") + "/?", TourHandler),
        (api + "(/.*)?", NotFoundHandler),
    ])
    serverapp.log.info(f"ftkit: serving the runs under {base} at {api}")
