"""What the ftkit REST API answers, read from the run record: the served runs, one run's summary
and detail, a stop request, the report page with its Content-Security-Policy, the tour notebooks.

Plain functions over :class:`ftkit.runs.Run` (no web server here): :mod:`ftkit.lab.extension`
calls them from its handlers, off the event loop. A run folder is served only when it and the
files the API reads are plain folders and regular files (:func:`find_run`); a run whose record
cannot be read is listed with an ``error`` that says why, never hiding the others.

>>> find_run(Path("/tmp"), "../etc") is None
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from pathlib import Path

from ftkit.data import provenance
from ftkit.runs import DATA, EXPORT_CHECK, STOP_REQUEST, UNREADABLE, Run, RunFileError, list_runs

__all__ = ["RUN_FILES", "RUN_ID", "find_run", "render_run_report", "report_policy", "run_detail", "run_summary",
           "runs_payload", "served_runs", "stop_run", "tour_dir", "tour_payload"]


# What new_run names a folder: a timestamp, then sanitize_name's output (lowercase letters,
# digits and dashes, at most 60, no leading dash), then "-<i>" for a second run in that second.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[a-z0-9][a-z0-9-]{0,70}")
# The files a handler reads or writes in a run folder; any of them not a regular file (a symbolic
# link: events.jsonl -> /etc/passwd; a FIFO) and the run is not served. Run reads each of them
# safely all the same: this check keeps such a run out of the list, Run's keeps a swap out.
RUN_FILES = ("config.json", "status.json", "eval.json", "events.jsonl", STOP_REQUEST, EXPORT_CHECK, DATA)
SPARK_POINTS = 50  # losses per run in the listing: a sparkline, not the curve


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


def runs_payload(base: Path) -> dict:
    """What ``GET /ftkit/api/runs`` answers: the runs folder and :func:`run_summary` of each served run."""
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


def run_detail(run: Run) -> dict:
    """One run as ``GET /ftkit/api/runs/<id>`` answers: ``id``, ``config``, ``status``, ``evaluation``,
    and ``data``: what its data record says (:func:`ftkit.data.provenance.summary`: the source, its
    sha256, the split and the held-out row counts), None for a run that recorded none. A data.json
    that cannot be read (not JSON, too large) leaves ``data`` None with ``data_note`` saying why: the
    rest of the run is still shown."""
    detail = {"id": run.id, "config": run.config, "status": run.status, "evaluation": run.evaluation, "data": None}
    try:
        record = run.data
    except (RunFileError, ValueError) as err:
        detail["data_note"] = f"{err}; this run's held-out rows cannot be reproduced from it"
        return detail
    if record is not None:
        detail["data"] = provenance.summary(record)
    return detail


def stop_run(run: Run, by: str) -> str | None:
    """Ask ``run`` to stop (:meth:`Run.request_stop`) if it is running; else its status, unchanged."""
    status = run.status.get("status")
    if status != "running":
        return status
    run.request_stop(by=by)
    return None


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


