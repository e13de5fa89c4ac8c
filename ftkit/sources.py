"""Read a file, a DataFrame, a list of dicts or a ``datasets`` object into plain rows.

Every failure is a :class:`DataError` whose message names the file and, where there is one, the
line, and says what to fix. Nothing is ever written back to the source.

>>> read_rows([{"text": "hi", "label": "greeting"}])
([{'text': 'hi', 'label': 'greeting'}], 'list')
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pandas as pd

__all__ = ["FILE_FORMATS", "DataError", "as_rows", "read_rows"]

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl",
                ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class DataError(ValueError):
    """The data cannot be used as given; the message says what to fix."""


def _read_file(path: Path) -> list[dict]:
    if not path.exists():
        raise DataError(f"no file at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a file ({', '.join(sorted(FILE_FORMATS))})")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {path.name} from its extension; use one of "
            f"{', '.join(sorted(FILE_FORMATS))}, or read it with pandas and pass the DataFrame"
        )
    if path.stat().st_size == 0 or (fmt != "parquet" and not path.read_bytes().strip()):
        raise DataError(f"{path} is empty")
    if fmt in ("csv", "tsv"):
        try:
            # Everything as text, and empty cells stay "" (not NaN) so they are reported as empty.
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                                keep_default_na=False, encoding="utf-8")
        except pd.errors.ParserError as err:
            raise DataError(
                f"{path.name} is not valid {fmt.upper()}: {err}. A field that contains the "
                f"separator or a line break must be wrapped in double quotes, and a quote inside "
                f"it doubled (\"\")"
            ) from None
        except UnicodeDecodeError as err:
            raise DataError(f"{path.name} is not UTF-8 text ({err}); save it as UTF-8") from None
        if frame.empty:
            raise DataError(f"{path.name} has no rows (only a header: {', '.join(frame.columns)})")
        return frame.to_dict("records")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path.name} is not a readable Parquet file: {err}") from None
        return frame.to_dict("records")
    text = path.read_text(encoding="utf-8", errors="strict")
    if fmt == "json" and text.lstrip()[:1] in "[{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip()[:1] == "[":
                raise DataError(f"{path.name} is not valid JSON: {err.msg} at line {err.lineno}, "
                                f"column {err.colno}") from None
            data = None  # perhaps JSON Lines saved as .json; read it line by line below
        if data is not None:
            if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{path.name} holds one JSON object; expected a list of records "
                                    "(one object per example) or JSON Lines")
                data = lists[0]
            return _check_records(data, path.name)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path.name} line {lineno} is not valid JSON ({err.msg}, column "
                            f"{err.colno}): {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path.name} line {lineno} is a JSON {type(row).__name__}, not an "
                            "object with named fields")
        rows.append(row)
    return rows


def _check_records(data, where: str) -> list[dict]:
    if not isinstance(data, list):
        raise DataError(f"{where}: expected a list of records, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{where}: record {i} is a {type(row).__name__}, not a dict of fields")
    return data


def as_rows(data) -> list[dict]:
    """Rows as plain dicts, from a ``datasets.Dataset`` or any iterable of dicts."""
    return data.to_list() if hasattr(data, "to_list") else list(data)


def read_rows(source, split_name: str = "train") -> tuple[list[dict], str]:
    """Read any supported source into a list of plain dicts, and a short name for it.

    ``split_name`` picks the split of a ``datasets.DatasetDict``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return _read_file(path), path.name
    if isinstance(source, pd.DataFrame):
        return source.to_dict("records"), "DataFrame"
    if isinstance(source, datasets.DatasetDict):
        if split_name not in source:
            raise DataError(f"the DatasetDict has no split {split_name!r}; its splits are: "
                            f"{', '.join(source)}. Pass split_name=...")
        return source[split_name].to_list(), f"DatasetDict[{split_name!r}]"
    if isinstance(source, datasets.Dataset):
        return source.to_list(), "Dataset"
    if isinstance(source, list):
        return _check_records(source, "list"), "list"
    raise DataError(
        f"cannot read a {type(source).__name__}; give a file path (CSV, TSV, JSON, JSONL, Parquet), "
        "a pandas DataFrame, a list of dicts, or a datasets.Dataset/DatasetDict"
    )
