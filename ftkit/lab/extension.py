"""The Jupyter Server extension behind ftkit's JupyterLab panel: a small REST API over the runs
folder. It reads what :mod:`ftkit.runs` wrote and writes one thing there, a stop request.

=====================================  ===================================================
``GET  /ftkit/api/runs``                every run, newest first, with its last losses
``GET  /ftkit/api/runs/<id>``           config, status, evaluation and data record of one run
``GET  /ftkit/api/runs/<id>/events``    the events after byte ``?offset=`` of events.jsonl
``GET  /ftkit/api/runs/<id>/report``    the run's HTML report (text/html)
``POST /ftkit/api/runs/<id>/stop``      ask the training process to stop after its step
``GET  /ftkit/api/tour``                the tour notebooks, for the launcher to copy
=====================================  ===================================================

This module holds the handlers and the registration; what they answer (a run's summary, the
report page and its policy, the tour) is computed by :mod:`ftkit.lab.summaries`.

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
import functools
import json
import math
import os
import re
from pathlib import Path

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Unicode
from traitlets.config import Configurable

from ftkit.lab.summaries import (
    RUN_ID,
    find_run,
    render_run_report,
    run_detail,
    run_summary,
    runs_payload,
    stop_run,
    tour_dir,
    tour_payload,
)
from ftkit.runs import Run, RunFileError

# RUN_ID, find_run, run_summary and tour_dir live in ftkit.lab.summaries; named here as before.
__all__ = ["RUN_ID", "FtkitServer", "find_run", "resolve_runs_dir", "run_summary", "tour_dir"]

AUTH_RESOURCE = "ftkit"  # what the server's Authorizer is asked about: GET is "read", POST "write"
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




class RunsHandler(_RunsHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.off_loop(runs_payload, self.runs_base))


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
