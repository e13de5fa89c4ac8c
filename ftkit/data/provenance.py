"""Where a run's data came from, and its split made again from that alone: the data record.

A run keeps this record as ``data.json`` in its folder (written and read by :mod:`ftkit.runs`:
``Run.record_data``, ``Run.data``); this module builds it and reproduces the split from it:

- the source: a built-in example's name, or a file's path as given and made absolute, with the
  sha256 of the file's bytes;
- the mapping as given (empty: detected) and as used, and the long-row rule of the read;
- the split: seed, test size, the stratification or group column it used, ``data.limit`` and
  ``train_limit``, the held-out rows' positions in the mapped data (and their ``id`` values where
  the rows carry unique ones), and a sha256 of the held-out rows' content and of the training rows;
- where the caller knows them (``ftkit run`` does): the task, its metrics and answer length, the
  template the run trained on and the prompt variants measured beside it (:func:`with_prompts`).

:func:`reproduce` reads the source again, maps, splits and limits it the same way, and checks
every hash. A source whose bytes changed is **refused** (:class:`SourceChanged`, naming the file
and both hashes): a changed file splits into other rows, and a score on other rows compared with
the recorded one would be a silent lie. ``allow_changed=True`` reproduces anyway, with warnings
that say which checks failed, for a reader who knows the change (a typo fixed in a training row).

>>> record = data_record([{"text": f"m{i}", "label": "ab"[i % 2]} for i in range(10)], test_size=0.2,
...                      stratify_by="label")
>>> record["source"]["path"] is None, record["split"]["test_rows"]
(True, 2)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.data.sources import DataError
from ftkit.runs import Run, rows_sha256

if TYPE_CHECKING:
    import datasets

__all__ = ["VERSION", "SourceChanged", "data_record", "file_sha256", "held_out", "pairs_record", "reproduce",
           "summary", "with_prompts"]

VERSION = 1  # of the record's layout; a reader refuses a newer one rather than misread it
_POSITION = "__ftkit_position__"  # a temporary column: which row of the mapped data each split row is


class SourceChanged(DataError):
    """The run's source file is not the one it was split from: its sha256 differs from the record's."""


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time.

    >>> file_sha256(os.devnull)
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _source(source) -> dict:
    """What the record says of ``source``: a built-in example, a file, or rows in memory."""
    from ftkit.data import examples

    if isinstance(source, str) and source in examples.names():
        path = examples.path(source)
        return {"given": source, "example": source, "path": str(path), "sha256": file_sha256(path)}
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return {"given": str(source), "example": None, "path": os.path.abspath(path), "sha256": file_sha256(path)}
    what = f"{type(source).__name__} in memory"
    return {"given": what, "example": None, "path": None, "sha256": None}


def _split(data: datasets.Dataset, split: dict):
    """``data`` split and limited as ``split`` says: (train, test, positions of the test rows in
    ``data``). The positions ride along in a temporary column: the split draws the same rows with
    it or without it (a random split draws from the row count and the seed, a stratified one from
    the stratum column, a group split from the group column)."""
    from ftkit.data.splits import split as split_rows

    parts = split_rows(data.add_column(_POSITION, list(range(len(data)))), test_size=split["test_size"],
                       seed=split["seed"], stratify_by=split["stratify_by"], group_by=split["group_by"])
    train, test = parts["train"], parts["test"]
    if split["limit"]:
        test = test.select(range(min(split["limit"], len(test))))
    positions = list(test[_POSITION])
    return train.remove_columns(_POSITION), test.remove_columns(_POSITION), positions, len(parts["test"])


def _training_rows(train, train_limit: int):
    return train.select(range(train_limit)) if train_limit and train_limit < len(train) else train


def _ids(data: datasets.Dataset, positions: list[int]) -> list | None:
    """The held-out rows' ``id`` values, where every row has one and no two share it."""
    if "id" not in data.column_names:
        return None
    ids = data["id"]
    if any(i is None for i in ids) or len({json.dumps(i, default=str) for i in ids}) != len(ids):
        return None
    return [ids[p] for p in positions]


def data_record(source, mapping: dict | None = None, *, data: datasets.Dataset | None = None,
                used_mapping: dict | None = None, test_size: float | int = 0.2, seed: int = 0,
                stratify_by: str | None = None, group_by: str | None = None, limit: int = 0,
                train_limit: int = 0, long_rows: str = "skip", max_chars: int | None = None,
                test: datasets.Dataset | None = None) -> dict:
    """The data record of a split: where the rows came from and which of them were held out.

    ``source`` and ``mapping`` as given to ``check_data``; ``data``: the mapped rows (read from
    ``source`` when None, as :func:`reproduce` reads them); ``used_mapping``: the mapping the read
    used (the detected one when ``mapping`` is empty). ``stratify_by`` and ``group_by`` are the
    columns the split **used** (``prepare_data`` decides them from the config and the columns),
    ``limit`` the held-out rows evaluated, ``train_limit`` the rows trained on; ``max_chars`` and
    ``long_rows`` the rule that skipped over-long rows while reading. ``test``: the held-out rows
    the caller evaluates; the record refuses to describe a split it would not reproduce.

    >>> record = data_record("support_routing", test_size=0.2, stratify_by="label", limit=8)   # doctest: +SKIP
    >>> record["split"]["held_out_positions"][:3]                                              # doctest: +SKIP
    [371, 52, 260]
    """
    from ftkit.data.canonical import check_data

    described = _source(source)
    if data is None:
        report = check_data(described["path"] or source, mapping or None, max_chars=max_chars, long_rows=long_rows)
        if not report.ok:
            raise DataError("; ".join(report.errors))
        data, used_mapping = report.dataset, report.mapping
    split = {"test_size": test_size, "seed": seed, "stratify_by": stratify_by, "group_by": group_by,
             "limit": limit, "train_limit": train_limit}
    train, held, positions, full_test = _split(data, split)
    held_sha256 = rows_sha256(held)
    if test is not None and rows_sha256(test) != held_sha256:
        raise ValueError("the held-out rows given are not the ones this split draws from the data: pass the "
                         "split's own seed, test_size, stratify_by, group_by and limit")
    trained = _training_rows(train, train_limit)
    trained_sha256 = rows_sha256(trained)  # its first 16 digits are the run's fingerprint (ftkit.runs)
    return {
        "version": VERSION, "source": described,
        "read": {"mapping": dict(mapping or {}), "used_mapping": dict(used_mapping or mapping or {}),
                 "long_rows": long_rows, "max_chars": max_chars, "rows": len(data)},
        "split": {**split, "train_rows": len(train), "test_rows": full_test, "evaluated_rows": len(held),
                  "held_out_positions": positions, "held_out_ids": _ids(data, positions),
                  "held_out_sha256": held_sha256, "training_rows": len(trained),
                  "training_sha256": trained_sha256, "training_fingerprint": trained_sha256[:16]},
    }


def pairs_record(source, mapping: dict | None = None, *, pairs, seed: int = 0, limit: int = 0) -> dict:
    """What a DPO run's record says of its preference pairs: their source (as :func:`data_record`
    says it), the mapping, how many were drawn (``limit``, shuffled with ``seed``) and their sha256.

    >>> pairs_record([{"prompt": "a", "chosen": "b", "rejected": "c"}], pairs=[{"prompt": "a"}])["rows"]
    1
    """
    rows = pairs.to_list() if hasattr(pairs, "to_list") else list(pairs)
    return {"source": _source(source), "mapping": dict(mapping or {}), "seed": seed, "limit": limit,
            "rows": len(rows), "sha256": rows_sha256(rows)}


def _template(t, endpoint=None) -> dict:
    """A prompt template as the record keeps it: its fields, its kind and shot count, and the
    hosted model it was asked of (never a key)."""
    fields = asdict(t) if is_dataclass(t) else dict(t)
    shots = len(fields.get("shots") or [])
    kind = "few_shot" if shots else "system" if fields.get("system") else "zero_shot"
    out = {**fields, "kind": kind, "k": shots}
    if endpoint is not None:
        out["endpoint"] = {"model": getattr(endpoint, "model", ""), "base_url": getattr(endpoint, "base_url", "")}
    return out


def with_prompts(record: dict, *, task: str | None = None, metrics=(), max_new_tokens: int | None = None,
                 labels=(), stop_strings=(), training_template=None, templates=(), endpoints=None,
                 max_new_tokens_from: str = "", answer_end: str | None = None) -> dict:
    """``record`` with what the run was measured by: the task's name, its metric names (the headline
    first), answer length (and where it came from, in words), label set, stop strings and where an
    answer ends (``answer_end``, :mod:`ftkit.generation.stops`), the template it trained on and the prompt
    variants measured beside it (``PromptTemplate`` objects or their dicts; ``endpoints``: template
    name -> the hosted model asked with it). A new dict; ``record`` is left as it is.

    >>> with_prompts({"version": 1}, task="qa", metrics=["token_f1"])["task"]["metrics"]
    ['token_f1']
    """
    endpoints = endpoints or {}
    names = [m if isinstance(m, str) else getattr(m, "__name__", type(m).__name__) for m in metrics]
    return {**record,
            "task": {"name": task, "metrics": names, "max_new_tokens": max_new_tokens,
                     "max_new_tokens_from": max_new_tokens_from, "labels": list(labels),
                     "stop_strings": list(stop_strings), "answer_end": answer_end},
            "training_template": _template(training_template) if training_template is not None else None,
            "templates": [_template(t, endpoints.get(getattr(t, "name", None))) for t in templates]}


def _record_of(run_or_record) -> tuple[dict, str]:
    if isinstance(run_or_record, Run):
        record = run_or_record.data
        if record is None:
            raise DataError(f"run {run_or_record.id} has no data record (data.json): it was trained before runs "
                            "recorded their data, or by train_sft without data_record=. Load its held-out rows "
                            "yourself (load_data and split, as it was split for training)")
        return record, f"run {run_or_record.id}"
    if not isinstance(run_or_record, dict):
        raise TypeError(f"expected a Run or its data record (a dict), not {type(run_or_record).__name__}")
    return run_or_record, "the run"


def _source_file(source: dict, whose: str) -> Path:
    """Where the source is now: the example in this installation, else the recorded absolute path,
    else the path as given, from the current folder."""
    from ftkit.data import examples

    if source.get("example"):
        if source["example"] not in examples.names():
            raise DataError(f"{whose} was split from the built-in example {source['example']!r}, which this "
                            f"ftkit does not have; examples are: {', '.join(examples.names())}")
        return examples.path(source["example"])
    if not source.get("path"):
        raise DataError(f"{whose} was trained on rows held in memory ({source.get('given')}), not on a file: its "
                        "split cannot be read again. Save the rows to a file and train from that")
    for candidate in (Path(source["path"]), Path(source.get("given") or source["path"]).expanduser()):
        if candidate.is_file():
            return candidate
    raise DataError(f"{whose} was split from {source['path']}, which is not there (given as "
                    f"{source.get('given')!r}); put the file back there, or run from the folder it was given in")


def reproduce(record: dict | Run, *, allow_changed: bool = False) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The run's split again, from its record alone: ``(train, test)``, the whole training split
    (SFT trained on its first ``split["train_limit"]`` rows, 0: all) and the held-out rows it was
    measured on (after ``data.limit``). Reads the source again, maps, splits and limits it as
    recorded, then checks the file's sha256, the held-out positions and ids and the content hashes.

    A changed source file raises :class:`SourceChanged` naming the file and both hashes; any other
    difference a ``DataError`` saying what differs. ``allow_changed=True`` turns each into a warning
    and returns the split of the file as it is now. Works in a new process: nothing but the record
    (and the file) is read.

    >>> train, test = reproduce(load_run("support-sft"))       # doctest: +SKIP
    >>> len(test) == load_run("support-sft").data["split"]["evaluated_rows"]   # doctest: +SKIP
    True
    """
    from ftkit.data.canonical import check_data

    record, whose = _record_of(record)
    if record.get("version") != VERSION:
        raise DataError(f"{whose}'s data record has version {record.get('version')!r}; this ftkit reads version "
                        f"{VERSION}: upgrade ftkit to read it")
    parts = [record.get(k) for k in ("source", "read", "split")]
    missing = [k for k, part in zip(("source", "read", "split"), parts) if not isinstance(part, dict)]
    missing += [f"split.{k}" for k in ("test_size", "seed", "stratify_by", "group_by", "limit")
                 if isinstance(parts[2], dict) and k not in parts[2]]
    if missing:
        raise DataError(f"{whose}'s data record lacks {', '.join(missing)}: it was not written by ftkit")
    source, read, split = parts
    problems = []

    def differs(message: str, cls=DataError) -> None:
        if not allow_changed:
            raise cls(message + ". Pass allow_changed=True to split the data as it is now, knowing the rows differ")
        problems.append(message)
        warnings.warn(message, stacklevel=3)

    path = _source_file(source, whose)
    now = file_sha256(path)
    if source.get("sha256") and now != source["sha256"]:
        differs(f"{path} changed since {whose} was split from it: its sha256 was {source['sha256']}, it is now {now}",
                SourceChanged)
    report = check_data(path, read.get("mapping") or None, max_chars=read.get("max_chars"),
                        long_rows=read.get("long_rows", "skip"))
    if not report.ok:
        raise DataError(f"{path} cannot be read as {whose} read it: " + "; ".join(report.errors))
    data = report.dataset
    train, test, positions, _ = _split(data, split)
    if positions != split.get("held_out_positions") or (split.get("held_out_ids") is not None
                                                        and _ids(data, positions) != split["held_out_ids"]):
        differs(f"the split of {path} holds out other rows than {whose} recorded ({len(positions)} rows now, "
                f"{split.get('evaluated_rows')} recorded)")
    elif rows_sha256(test) != split.get("held_out_sha256"):
        differs(f"the held-out rows of {path} differ in content from those {whose} was measured on: their sha256 "
                f"was {split.get('held_out_sha256')}, it is now {rows_sha256(test)}")
    if rows_sha256(_training_rows(train, split.get("train_limit") or 0)) != split.get("training_sha256"):
        differs(f"the training rows of {path} differ from those {whose} trained on")
    return train, test


def held_out(run: Run | dict, *, allow_changed: bool = False) -> datasets.Dataset:
    """The held-out rows ``run`` was measured on, reproduced from its data record (:func:`reproduce`).

    >>> rows = held_out(load_run("support-sft"))   # doctest: +SKIP
    """
    return reproduce(run, allow_changed=allow_changed)[1]


def summary(record: dict) -> dict:
    """What the JupyterLab run detail shows of a record: the source, its hash, the split's sizes and
    settings, and the task; not the held-out positions (they can be many).

    >>> summary({"version": 1, "source": {"given": "a.csv"}, "split": {"test_rows": 5}})["source"]
    'a.csv'
    """
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    split = record.get("split") if isinstance(record.get("split"), dict) else {}
    task = record.get("task") if isinstance(record.get("task"), dict) else {}
    keep = ("test_size", "seed", "stratify_by", "group_by", "limit", "train_limit", "train_rows", "test_rows",
            "evaluated_rows", "held_out_sha256")
    return {"version": record.get("version"), "source": source.get("given"), "example": source.get("example"),
            "path": source.get("path"), "sha256": source.get("sha256"),
            "reproducible": bool(source.get("path")), **{k: split.get(k) for k in keep},
            "task": task.get("name")}
