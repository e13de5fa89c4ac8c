"""The on-disk record of every training run: the one owner of a run folder's files.

This module reads and writes the run folder and does nothing else: loading a run's model is
:func:`ftkit.models.tuned.load_run_model`, exporting it :func:`ftkit.export.merged.export_run`,
checking an export :func:`ftkit.export.check.check_export`, the template it trained with
:func:`ftkit.models.tuned.run_template`; each takes a :class:`Run`. It imports nothing of ftkit
and no heavy library (the Jupyter server extension and ``ftkit runs`` import it). It is over 400
lines because the format of the folder and the safe reading of it (a folder written by anyone)
are one thing: split, a second module would read run files around the checks.

Each run is a folder under ``$FTKIT_RUNS`` (default ``./runs``)::

    runs/20261125-134501-support-sft/
        config.json     hyperparameters, seed, library versions, data fingerprint, base model
        status.json     running (with the process and a heartbeat) | completed | stopped | failed,
                        with the error message if any; a dead running one reads as interrupted.
                        A finished run adds step, max_steps and ended_by (see ENDED_BY);
                        outcome(run.status) says it in words
        events.jsonl    every event of the run, one JSON object a line, appended as it happens
        data.json       where its rows came from and which were held out (written at creation by
                        ``ftkit run``, or Run.record_data): ftkit.data.provenance builds it and
                        reproduces the split from it; Run.data reads it
        eval.json       the evaluation of the trained model, when one was recorded
        stop-request.json   a stop asked from another process (JupyterLab, a terminal), see
                        Run.request_stop; the training process honours it after its current step
        export-check.json   exports re-scored in a fresh process next to the run's own model,
                        see Run.record_export_check and ftkit.export.check.check_export
        adapter/        the trained adapter (safetensors) and the tokenizer
        checkpoints/    trainer checkpoints, for resuming

JSON files are written to a temporary name and renamed, so a crash never leaves half a file;
events are appended and flushed line by line, so nothing logged before a crash is lost. Under
``accelerate launch`` (several processes) the processes share one run folder: the main process
creates it and writes the record, every process writes its share of the checkpoints.

Reading is safe on a run folder written by someone else (a shared runs folder, a folder copied
from a colleague): every file is opened once, without following a symbolic link and without
waiting on a FIFO, checked to be a regular file, capped in size and read from that one open file
(:func:`open_run_file`). Anything else raises :class:`RunFileError`, which names the file and
why, never its content. A record that is not valid JSON raises ``ValueError`` naming the file,
except status.json: :attr:`Run.status` then reads ``unknown`` with the reason under
``"unreadable"``, so one damaged run never hides the others.

>>> sanitize_name("../../etc/My Run!")
'etc-my-run'
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DATA", "ENDED_BY", "Run", "RunFileError", "fingerprint", "is_main_process", "list_runs", "load_run",
           "new_run", "open_run_file", "outcome", "read_run_file", "rows_sha256", "runs_dir", "sanitize_name",
           "write_json"]

STATUSES = ("running", "completed", "stopped", "failed")
# Why a run ended before its planned last step: status.json's and the end event's "ended_by"
# (None: it ran its course, or the trainer's own rule ended it, as early stopping does).
# A time budget ends a run "completed" (what it learned in the time it had is the result, and
# a pipeline goes on to DPO after it); a stop asked, or a KeyboardInterrupt, ends it "stopped".
TIME_BUDGET, STOP_REQUESTED, KEYBOARD_INTERRUPT = "time budget", "stop requested", "interrupted"
ENDED_BY = (TIME_BUDGET, STOP_REQUESTED, KEYBOARD_INTERRUPT)
STOP_REQUEST = "stop-request.json"  # the file Run.request_stop writes in the run folder
EXPORT_CHECK = "export-check.json"  # the file Run.record_export_check writes in the run folder
DATA = "data.json"  # the file Run.record_data writes in the run folder (see ftkit.data.provenance)
# A run whose status says running but whose process is gone reads as this (never written).
INTERRUPTED = "interrupted"
# On another machine a process cannot be asked whether it lives: a run that has not written a
# heartbeat for this long (a step, a log or a checkpoint) counts as interrupted there.
STALE_AFTER_S = 30 * 60
# A status.json that cannot be read (not JSON, not a regular file) reads as "unknown" with the
# reason under this key: the run is listed, marked, and the others are not hidden by it.
UNREADABLE = "unreadable"
# The most ftkit reads of one file. A record (config, status, eval, ...) is a few kilobytes; the
# events of a long run are ~150 bytes a logged step, so 256 MiB holds over a million steps.
RECORD_MAX_BYTES = 16 << 20
EVENTS_MAX_BYTES = 256 << 20


# The main-process check and the broadcast stay ftkit's (the RANK and WORLD_SIZE that every
# launcher sets, and torch.distributed's broadcast), not accelerate's PartialState: created before
# the trainer (as `ftkit train` does), PartialState reads a CPU launch under torchrun as not
# distributed (DistributedType.NO, process index 0 in every process), so each process would take
# itself for the main one and create its own run folder; tests/training/test_launch.py's two-process test
# catches that. The environment needs no import either: the readers of runs (a notebook, `ftkit
# runs`, the Jupyter server extension) load no torch for it.

def is_main_process() -> bool:
    """False on every process but the first under ``accelerate launch`` or ``torchrun``.

    >>> is_main_process()   # a notebook, a script, a test
    True
    """
    return int(os.environ.get("RANK", "0")) == 0


def _share_from_main(value: str) -> str:
    """``value`` as the main process has it, on every process of a distributed launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return value
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("several processes but no process group: create accelerate's PartialState() "
                           "(or let the trainer do it) before creating a run")
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("FTKIT_RUNS", "runs")).expanduser()


def sanitize_name(name: str) -> str:
    """A run name safe as one folder name: lowercase letters, digits and dashes, no path parts."""
    clean = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return clean[:60] or "run"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ftkit", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --- reading a run folder's files ----------------------------------------------------------------

class RunFileError(OSError):
    """A file of a run folder that ftkit will not read: a symbolic link, not a regular file (a
    FIFO, a socket, a device, a folder), larger than ftkit reads, or in a run folder that is itself
    a symbolic link. The message names the file and why, never anything of its content."""


# O_NOFOLLOW: a symbolic link fails to open (ELOOP) instead of being followed out of the folder.
# O_NONBLOCK: a FIFO opens at once instead of waiting for a writer (that would hang the reader).
# The checks and the read use the one file descriptor, so nothing can be swapped in between.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = (os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NOCTTY", 0))
_FOLDER_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _refused(what: str, path: Path, err: OSError) -> RunFileError:
    """The :class:`RunFileError` for ``path``, which ``os.open`` refused with ``err``."""
    if err.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):  # O_DIRECTORY on a link: ENOTDIR
        why = "is a symbolic link"
    else:
        why = {errno.ENOTDIR: "is not a folder", errno.ENXIO: "is not a regular file (a socket or a device)"}.get(
            err.errno, f"cannot be opened ({err.strerror})")
    return RunFileError(f"{what} {why}; ftkit reads only regular files in a run folder that is itself a folder: "
                        "replace it with the file (or folder) itself")


def _open_folder(folder: Path) -> int:
    """A descriptor of the run folder itself, never of where a link named like it leads."""
    try:
        return os.open(folder, _FOLDER_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _refused(f"run folder {folder.name}", folder, err) from None


@contextmanager
def open_run_file(folder: str | os.PathLike, name: str):
    """``name`` in the run folder ``folder``, opened once for reading: ``(fd, size)``, closed after.

    The folder is opened without following a link (a run folder that is a symbolic link leads out
    of the runs folder), the file in it the same way and without blocking, then checked with
    ``fstat`` on that descriptor to be a regular file. Raises ``FileNotFoundError`` when either is
    absent and :class:`RunFileError` for anything else that is not a plain file in a plain folder.

    >>> with open_run_file(run.path, "events.jsonl") as (fd, size):   # doctest: +SKIP
    ...     head = os.pread(fd, 100, 0)
    """
    folder = Path(folder)
    folder_fd = _open_folder(folder)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _refused(f"{name} in run {folder.name}", folder / name, err) from None
    finally:
        os.close(folder_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((kind for test, kind in _KINDS if test(info.st_mode)), "not a regular file")
            raise RunFileError(f"{name} in run {folder.name} is {kind}; ftkit reads only regular files in a "
                               "run folder: replace it with the file itself")
        yield fd, info.st_size
    finally:
        os.close(fd)


def _read_at(fd: int, offset: int, count: int) -> bytes:
    """Up to ``count`` bytes from ``offset`` (fewer only at the end of the file)."""
    parts, got = [], 0
    while got < count:
        part = os.pread(fd, min(count - got, 1 << 24), offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_run_file(folder: str | os.PathLike, name: str, limit: int = RECORD_MAX_BYTES) -> bytes:
    """The bytes of ``name`` in the run folder ``folder``, opened as :func:`open_run_file` does;
    :class:`RunFileError` when it holds more than ``limit`` bytes (checked before reading, and
    again for a file that grows while it is read).

    >>> json.loads(read_run_file(run.path, "status.json"))["status"]   # doctest: +SKIP
    'completed'
    """
    with open_run_file(folder, name) as (fd, size):
        data = _read_at(fd, 0, limit + 1) if size <= limit else b""
        if size > limit or len(data) > limit:
            raise RunFileError(f"{name} in run {Path(folder).name} holds more than the {limit >> 20} MiB ftkit "
                               "reads of it; it is not a file ftkit wrote")
        return data


def _read_record(folder: Path, name: str) -> dict:
    """A JSON record of the run folder as a dict; ``ValueError`` naming the file when it is not
    a JSON object (cut short, edited by hand, or not ftkit's at all)."""
    data = read_run_file(folder, name)
    try:
        record = json.loads(data)
    except RecursionError:  # "[[[[...": deeper than Python's parser goes
        raise ValueError(f"{name} is not valid JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise ValueError(f"{name} is not valid JSON: {err}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{name} holds a JSON {type(record).__name__}, not an object")
    return record


@dataclass
class Run:
    """A run folder. Reading is always safe; writing is done by the trainer that owns it."""

    path: Path
    # The trained model, set by the trainer that ran it: the base weights (shared with the model
    # you trained from, not a copy) with the adapter on. The record never loads or reads it; to
    # merge the adapter into weights, use ftkit.export.merged.export_run(run, folder, merged=True)
    # or ftkit.models.tuned.load_run_model(run, merged=True): merging in place would change the
    # shared weights.
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        """What config.json says (see :func:`new_run`); ``FileNotFoundError`` without one."""
        return _read_record(self.path, "config.json")

    @property
    def status(self) -> dict:
        """What status.json says, except that a run marked running whose process has died (killed,
        out of memory, a closed kernel) reads as ``interrupted``, with the last step it logged.
        ``train_sft(..., resume=run)`` or ``ftkit run CONFIG --resume RUN`` continues it.

        Never raises for what is in the folder: without a status.json the status is ``unknown``;
        with one that cannot be read (not JSON, a symbolic link, a FIFO) also ``unknown``, and
        ``unreadable`` says why, as in ``{"status": "unknown", "unreadable": "status.json is not
        valid JSON: Expecting value: line 1 column 1 (char 0)"}``.
        """
        try:
            status = _read_record(self.path, "status.json")
        except FileNotFoundError:
            return {"status": "unknown"}
        except (RunFileError, ValueError) as err:
            return {"status": "unknown", UNREADABLE: str(err)}
        if status.get("status") == "running" and not _alive(status):
            try:
                logs = self.events("log")
            except (RunFileError, ValueError):  # the step is a detail: the status is what was asked
                logs = []
            step = logs[-1].get("step") if logs else status.get("step", 0)
            status = {**status, "status": INTERRUPTED, "step": step}
        return status

    def events(self, name: str | None = None) -> list[dict]:
        """The recorded events, oldest first; ``name`` keeps only one kind.

        A resumed run starts again from its checkpoint: the steps logged after that checkpoint
        by the stretch that was cut off are replaced by the ones the resumed stretch logs.
        Raises :class:`RunFileError` for an events.jsonl that is not a regular file, or over
        ``EVENTS_MAX_BYTES``.
        """
        try:
            data = read_run_file(self.path, "events.jsonl", EVENTS_MAX_BYTES)
        except FileNotFoundError:
            return []
        out = []
        for event in _parse_events(data.decode("utf-8", errors="replace")):
            if event.get("event") == "resume" and _is_number(event.get("step")):
                out = [e for e in out if e.get("event") in ("start", "end", "resume", "preflight")
                       or not _is_number(e.get("step", 0)) or e.get("step", 0) <= event["step"]]
            out.append(event)
        return [e for e in out if name is None or e.get("event") == name]

    # -- written by the trainer -------------------------------------------------------------------

    def set_status(self, status: str, **extra) -> None:
        """Write the status; a running run also records which process runs it, and when it was
        last heard from (see :meth:`heartbeat`)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if status == "running":
            # The process's start time with its pid: the pid of a process that ended may be given
            # to another one, which must not make the run read as running (see _alive).
            extra = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                     "heartbeat": time.time(), **extra}
        if is_main_process():
            write_json(self.path / "status.json", {"status": status, "time": time.time(), **extra})

    def heartbeat(self, step: int) -> None:
        """The running process is alive at ``step``; called at every logged step and checkpoint."""
        if is_main_process():
            status = _read_record(self.path, "status.json")
            write_json(self.path / "status.json", {**status, "heartbeat": time.time(), "step": step})

    def record(self, name: str, payload: dict) -> None:
        if not is_main_process():
            return
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps({"event": name, "time": time.time(), **payload}, default=str) + "\n")
            f.flush()

    def record_evaluation(self, result, variant: str | None = None, metric: str | None = None) -> None:
        """Keep the evaluation of this run's model in ``eval.json``: the summary of every variant
        ``result`` (an :class:`~ftkit.evaluation.evaluate.EvalResult`) holds, and this run's own figure.

        ``variant`` is the run's name in ``result`` (default: the run id); ``metric`` the headline
        (default: the first one evaluated).
        """
        variant = variant or self.id
        if variant not in result.variants:
            raise ValueError(f"the evaluation has no variant {variant!r} for run {self.id}; variants are: "
                             f"{', '.join(result.variants)}. Pass variant=...")
        metric = metric or result.metrics[0]
        write_json(self.path / "eval.json", {
            "variant": variant, "metric": metric, "value": float(result.summary.loc[variant, metric]),
            "test_rows": int(result.summary.loc[variant, "n"]),
            "summary": result.summary.reset_index().to_dict(orient="records"),
        })

    def events_since(self, offset: int = 0, max_bytes: int = 1 << 20) -> tuple[list[dict], int, bool]:
        """The events appended after byte ``offset`` of events.jsonl: ``(events, next_offset, more)``.

        For a follower that polls (the JupyterLab panel): it seeks to ``offset`` instead of reading
        the file again, and takes whole lines only, so a line the trainer is still writing is left
        for the next call. ``more`` says ``max_bytes`` cut the read short: ask again at once. Events
        come as written: after a ``resume`` event, steps above its step replace the ones logged
        before it (what :meth:`events` does for you).

        >>> events, offset, more = run.events_since(0)      # doctest: +SKIP
        >>> later, offset, more = run.events_since(offset)  # only what was written since  # doctest: +SKIP
        """
        if offset < 0:
            raise ValueError(f"offset must be 0 or more, not {offset}")
        try:
            with open_run_file(self.path, "events.jsonl") as (fd, size):
                if offset > size:
                    raise ValueError(f"offset {offset} is past the end of run {self.id}'s events ({size} bytes); "
                                     "start again from 0")
                data = _read_at(fd, offset, max_bytes)
                if len(data) == max_bytes and b"\n" not in data:
                    # One line longer than max_bytes: take it whole, or not at all. A "line" of
                    # more than a record's cap is no event: skipped, as a line cut short is.
                    rest = _read_at(fd, offset + len(data), RECORD_MAX_BYTES)
                    cut = rest.find(b"\n")
                    data += rest[:cut + 1] if cut >= 0 else b""
                    if cut < 0 and len(rest) == RECORD_MAX_BYTES:
                        return [], offset + len(data) + len(rest), True
        except FileNotFoundError:  # nothing logged yet
            if offset:
                raise ValueError(f"offset {offset} is past the end of run {self.id}'s events (none yet); "
                                 "start again from 0") from None
            return [], 0, False
        whole = data[:data.rfind(b"\n") + 1]
        out = _parse_events(whole.decode("utf-8", errors="replace"))
        end = offset + len(whole)
        return out, end, len(data) >= max_bytes and end < size

    # -- a stop asked from any process --------------------------------------------------------------

    def request_stop(self, by: str = "") -> None:
        """Ask whatever process trains this run to stop after its current step, saving the adapter
        (status ``stopped``), as ``stop.set()`` does inside that process. Any process may ask (a
        JupyterLab button, another kernel, a terminal): the request is a small file in the run
        folder, which the trainer looks for at every step end; ``by`` says who asked.

        >>> run.request_stop(by="alice from JupyterLab")   # doctest: +SKIP
        >>> run.stop_requested                              # doctest: +SKIP
        True
        """
        _write_in_folder(self.path, STOP_REQUEST, {"time": time.time(), "by": by or f"pid {os.getpid()}",
                                                   "host": socket.gethostname(), "pid": os.getpid()})

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked (:meth:`request_stop`) and not cleared since. One ``lstat``
        call, cheap enough for every training step; only a regular file counts (a symbolic link
        is no request, and is not followed to say whether something exists elsewhere)."""
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self.path, STOP_REQUEST)).st_mode)
        except OSError:
            return False

    @property
    def stop_request(self) -> dict | None:
        """What :meth:`request_stop` wrote (``time``, ``by``, ``host``, ``pid``), None without one
        (or with one that is not a JSON object in a regular file)."""
        try:
            return _read_record(self.path, STOP_REQUEST)
        except (FileNotFoundError, RunFileError, ValueError):
            return None

    def clear_stop_request(self) -> None:
        """Forget a stop request: a resumed stretch starts with this, so that the request which
        ended the stretch before it does not end the new one at its first step."""
        (self.path / STOP_REQUEST).unlink(missing_ok=True)

    @property
    def evaluation(self) -> dict | None:
        """What :meth:`record_evaluation` kept: ``variant``, ``metric``, ``value``, ``test_rows``
        and ``summary`` (one dict per variant); None when the run was never evaluated.
        ``ValueError`` when eval.json is not a JSON object, :class:`RunFileError` when it is not a
        regular file."""
        try:
            return _read_record(self.path, "eval.json")
        except FileNotFoundError:
            return None

    # -- where its data came from (ftkit.data.provenance builds and reads the record) ----------------

    def record_data(self, record: dict) -> None:
        """Keep the run's data record in ``data.json``: its source with the file's sha256, the mapping,
        the split with its held-out rows, the task and templates (see :mod:`ftkit.data.provenance`,
        which builds it and reproduces the split from it). ``ftkit run`` writes it when it creates the
        run, so an interrupted run has it too.

        >>> run.record_data(data_record("tickets.csv", test_size=0.2, seed=0))   # doctest: +SKIP
        """
        if not isinstance(record, dict):
            raise TypeError(f"a data record is a dict (ftkit.data.provenance.data_record), not {type(record).__name__}")
        if is_main_process():
            _write_in_folder(self.path, DATA, record)

    @property
    def data(self) -> dict | None:
        """What :meth:`record_data` kept; None for a run that recorded no data (one trained before runs
        did, or by ``train_sft`` without ``data_record=``). ``ValueError`` when data.json is not a JSON
        object, :class:`RunFileError` when it is not a regular file or over ``RECORD_MAX_BYTES``."""
        try:
            return _read_record(self.path, DATA)
        except FileNotFoundError:
            return None

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def resume_step(self) -> int:
        """The step a resume starts from: that of :meth:`last_checkpoint`, 0 without one."""
        checkpoint = self.last_checkpoint()
        return _checkpoint_step(checkpoint) if checkpoint else 0

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint. The trainer writes ``trainer_state.json`` last, so a
        checkpoint cut short by a killed process (no such file, or half of it) is passed over."""
        found = sorted((p for p in self.checkpoints_dir.glob("checkpoint-*")
                        if _CHECKPOINT.fullmatch(p.name) and p.is_dir()), key=_checkpoint_step)
        for folder in reversed(found):
            try:
                _read_record(folder, "trainer_state.json")
            except (OSError, ValueError):
                continue
            return folder
        return None

    # -- the check of an export, in a fresh process (ftkit.export.check.check_export) ---------------------

    def record_export_check(self, check) -> None:
        """Keep the result of an export check (an :class:`~ftkit.export.check.ExportCheck` or its dict)
        in ``export-check.json``: one record per kind of export (adapter, merged, gguf), the
        newest replacing the one before it; a GGUF file checked in llama.cpp is kept per weight type
        beside the transformers check."""
        record = check.to_dict() if hasattr(check, "to_dict") else dict(check)
        key = _export_check_key(record)
        kept = [c for c in self.export_checks if _export_check_key(c) != key]
        write_json(self.path / EXPORT_CHECK, {"checks": [*kept, record]})

    @property
    def export_checks(self) -> list[dict]:
        """What :meth:`record_export_check` kept, oldest first: per export ``kind``, ``folder``,
        ``dtype``, ``metric``, ``rows``, ``in_memory`` and ``exported`` (the two headline scores),
        ``scores``, ``answers_equal``, ``differ``, ``passed`` and ``message``. Empty when none
        (or the file is not JSON); :class:`RunFileError` when it is not a regular file."""
        try:
            checks = _read_record(self.path, EXPORT_CHECK).get("checks", [])
        except (FileNotFoundError, ValueError):
            return []
        return [c for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []

    def __repr__(self) -> str:
        # No I/O: a repr is printed by debuggers and logs, and a run folder may be slow or hostile.
        # The status is one call away: run.status.
        return f"Run({self.id!r})"


def _parse_events(text: str) -> list[dict]:
    """The events of events.jsonl lines; a line cut short by a crash is skipped (the ones before it
    are intact)."""
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, an integer too long, "[[[[..." too deep
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


# The trainer names them checkpoint-<step>: transformers' own rule (trainer_utils' _re_checkpoint,
# behind get_last_checkpoint). ftkit keeps its own few lines instead of calling get_last_checkpoint:
# that one returns the newest folder only, complete or not, where a resume needs the newest
# complete one (a killed process leaves a half-written newest); and importing transformers (and
# torch) for a folder listing would make the record heavy for `ftkit runs` and the server.
_CHECKPOINT = re.compile(r"checkpoint-([0-9]+)")


def _checkpoint_step(folder: Path) -> int:
    return int(_CHECKPOINT.fullmatch(folder.name).group(1))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``"<boot id>/<start time>"``: its start in clock ticks
    since boot (field 22 of /proc/<pid>/stat) and the boot's id, so a pid given to another
    process, after this boot or a reboot, has another value. None where there is no /proc (macOS)
    or no such process.

    >>> _process_start(os.getpid()) == _process_start(os.getpid())
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ")": count from the last.
    fields = stat_line[stat_line.rfind(b")") + 2:].split()
    return f"{boot}/{int(fields[19])}" if len(fields) > 19 and fields[19].isdigit() else None


def _alive(status: dict) -> bool:
    """Whether the process a running status names still runs (asked on this machine, judged by
    its heartbeat's age on another). A process with the recorded pid but another start time
    (``process_start``) is not the one that ran the run: the pid was given again."""
    pid, host = status.get("pid"), status.get("host")
    if pid is None:  # written before runs recorded their process: trust it
        return True
    if host != socket.gethostname():
        heartbeat = status.get("heartbeat", status.get("time", 0))
        return _is_number(heartbeat) and time.time() - heartbeat < STALE_AFTER_S
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 31:
        return False  # no process this machine could have: not a record ftkit wrote
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that number: its start time says whose
        pass
    recorded = status.get("process_start")
    if recorded is None:  # a record from before ftkit kept it, or written where there is no /proc
        return True
    now = _process_start(pid)
    return now is None or now == recorded


def outcome(status: dict) -> str:
    """How a run ended, in words, from its status (:attr:`Run.status`) or its ``end`` event: the
    status, why it ended early (``ended_by``) and at which step of the planned ones.

    >>> outcome({"status": "completed", "step": 40, "max_steps": 40})
    'completed at step 40'
    >>> outcome({"status": "completed", "step": 20, "max_steps": 40, "ended_by": "time budget"})
    'stopped by the time budget at step 20 of 40'
    >>> outcome({"status": "stopped", "step": 12, "max_steps": 40, "ended_by": "stop requested",
    ...          "stop_request": {"by": "alice"}})
    'stopped on request (by alice) at step 12 of 40'
    """
    state, step, planned = status.get("status", "unknown"), status.get("step"), status.get("max_steps")
    if step is None:
        return state
    # "of N" only where the run did not reach its planned end (early stopping too); a planned
    # count of 0 or -1 is none.
    of = f" of {planned}" if isinstance(planned, int) and planned > 0 and step != planned else ""
    ended_by = status.get("ended_by")
    if ended_by == TIME_BUDGET:
        what = "stopped by the time budget"
    elif ended_by == STOP_REQUESTED:
        by = (status.get("stop_request") or {}).get("by")
        what = "stopped on request" + (f" (by {by})" if by else "")
    elif ended_by == KEYBOARD_INTERRUPT:
        what = "stopped by a keyboard interrupt"
    elif state == INTERRUPTED:
        what = "interrupted (its process ended before the run did)"
    else:
        what = state
    return f"{what} at step {step}{of}"


def new_run(name: str, config: dict, root=None, data: dict | None = None) -> Run:
    """Create a run folder with its config (and ``data``, its data record: see
    :meth:`Run.record_data`), marked running (on the main process; the others of a distributed
    launch get the same folder)."""
    if not is_main_process():
        return Run(Path(_share_from_main("")))
    base = runs_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{sanitize_name(name)}"
    for i in range(100):
        path = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise RuntimeError(f"could not create a run folder under {base}")
    run = Run(path)
    write_json(path / "config.json", {**config, "versions": library_versions()})
    if data is not None:
        run.record_data(data)
    run.set_status("running")
    _share_from_main(str(path.resolve()))
    return run


def rows_sha256(rows) -> str:
    """A sha256 of rows' content, independent of key order.

    ``rows``: a ``datasets.Dataset`` (its ``to_list()``) or any iterable of dicts, as
    ``ftkit.data.sources.as_rows`` reads them; the record stays below the data stage, so it reads
    them the same way without importing it.

    >>> rows_sha256([{"a": 1, "b": 2}]) == rows_sha256(iter([{"b": 2, "a": 1}]))
    True
    """
    import hashlib

    rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(rows) -> str:
    """A short hash of the training rows (the first 16 hex digits of :func:`rows_sha256`), so a run
    says exactly which data it saw.

    >>> fingerprint([{"prompt": "hi", "completion": "hello"}]) == fingerprint(iter([{"prompt": "hi", "completion": "hello"}]))
    True
    """
    return rows_sha256(rows)[:16]


def _write_in_folder(folder: Path, name: str, obj) -> None:
    """:func:`write_json` for a file right in a run folder that may be shared: the folder is
    opened without following a link, and the temporary file created and renamed inside that open
    folder, so a run folder swapped for a link between a check and the write is not written through.
    """
    folder_fd = _open_folder(folder)
    tmp = f".{name}.{os.getpid()}.{time.monotonic_ns()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644,
                     dir_fd=folder_fd)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(obj, f, indent=2, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=folder_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(folder_fd)


def list_runs(root=None) -> list[Run]:
    """Every run under the runs folder, newest first."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    return [Run(p) for p in sorted(base.iterdir(), reverse=True) if (p / "config.json").is_file()]


def load_run(run_id: str, root=None) -> Run:
    """A run by its id (folder name) or a unique prefix of it."""
    runs = [r for r in list_runs(root) if r.id == run_id] or \
           [r for r in list_runs(root) if r.id.startswith(run_id)]
    if len(runs) != 1:
        known = ", ".join(r.id for r in list_runs(root)) or "none"
        what = "no run" if not runs else "more than one run"
        raise KeyError(f"{what} matches {run_id!r} under {runs_dir(root)}; runs: {known}")
    return runs[0]


def _export_check_key(record: dict) -> tuple:
    """What one export check is about: its kind, the engine that answered, the GGUF weight type."""
    return record.get("kind"), record.get("engine", "transformers"), record.get("gguf_type", "")
