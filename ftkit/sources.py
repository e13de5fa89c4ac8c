"""Read a file, a DataFrame, a list of dicts or a ``datasets`` object into plain rows.

Every failure is a :class:`DataError` whose message names the file and, where there is one, the
line, and says what to fix. Nothing is ever written back to the source.

>>> read_rows([{"text": "hi", "label": "greeting"}])
([{'text': 'hi', 'label': 'greeting'}], 'list')
"""

from __future__ import annotations

import io
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


def _lines(text: str) -> list[str]:
    """Split on line breaks only (\\n, \\r\\n, \\r), as editors and CSV readers count lines:
    ``str.splitlines`` also splits on U+2028, U+0085 and others, which JSON allows inside strings."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _decode(path: Path, raw: bytes) -> str:
    """The file as text: UTF-8, with or without a byte-order mark."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = len(_lines(raw[:err.start].decode("utf-8", errors="replace")))
        raise DataError(f"{path.name} line {lineno} is not UTF-8 text (byte {raw[err.start]:#04x}: "
                        f"{err.reason}); save the file as UTF-8") from None


def _has_lone_surrogate(value) -> bool:
    """Whether a parsed JSON value holds a string with a lone surrogate (from an escape such as
    "\\ud800"), which no UTF-8 file or arrow column can store."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


_SURROGATE_FIX = ("holds a \\ud800-\\udfff escape that is half of a surrogate pair, not a character; "
                  "remove it or give the whole pair")


def _read_csv(path: Path, text: str, fmt: str) -> list[dict]:
    try:
        # Everything as text, and empty cells stay "" (not NaN) so they are reported as empty.
        frame = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str,
                            keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name} has no header row; the first line must name the columns") from None
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path.name} is not valid {fmt.upper()}: {err}. A field that contains the "
            f"separator or a line break must be wrapped in double quotes, and a quote inside "
            f"it doubled (\"\")"
        ) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas reads a first data row with more fields than the header as an unnamed index
        # column and shifts every field: refuse it rather than read the wrong columns.
        raise DataError(
            f"{path.name}: the first row under the header has more fields than the header "
            f"({len(frame.columns)}: {', '.join(frame.columns)}). A field that contains the separator "
            f"must be wrapped in double quotes; or name the missing column(s) in the header"
        )
    if frame.empty:
        raise DataError(f"{path.name} has no rows (only a header: {', '.join(frame.columns)})")
    return frame.to_dict("records")


def _loads(text: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


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
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path.name} is not a readable Parquet file: {err}") from None
        return frame.to_dict("records")
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path} is empty")
    if fmt in ("csv", "tsv"):
        return _read_csv(path, text, fmt)
    if fmt == "json" and text.lstrip()[:1] in ("[", "{"):
        try:
            data = _loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip()[:1] == "[":
                raise DataError(f"{path.name} is not valid JSON: {err.msg} at line {err.lineno}, "
                                f"column {err.colno}") from None
            data = None  # perhaps JSON Lines saved as .json; read it line by line below
        if data is not None:
            where = path.name
            if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
                lists = [(k, v) for k, v in data.items() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{path.name} holds one JSON object; expected a list of records "
                                    "(one object per example) or JSON Lines")
                key, data = lists[0]
                where = f"{path.name}, list {key!r}"
            rows = _check_records(data, where)
            if "\\u" in text:
                for i, row in enumerate(rows):
                    if _has_lone_surrogate(row):
                        raise DataError(f"{where}: record {i} {_SURROGATE_FIX}")
            return rows
    rows = []
    for lineno, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path.name} line {lineno} is not valid JSON ({err.msg}, column "
                            f"{err.colno}): {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path.name} line {lineno} is a JSON {type(row).__name__}, not an "
                            "object with named fields")
        if "\\u" in line and _has_lone_surrogate(row):
            raise DataError(f"{path.name} line {lineno} {_SURROGATE_FIX}")
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
    rows, name = _read_rows(source, split_name)
    columns = {c for r in rows for c in r}
    if rows and not columns:
        raise DataError(f"{name}: none of its {len(rows)} record(s) has any field; each record needs "
                        "named fields, e.g. {\"prompt\": ..., \"completion\": ...}")
    for c in columns:
        if isinstance(c, str) and "\x00" in c:
            raise DataError(f"{name}: the column name {c!r} holds a NUL character (\\x00); rename it")
    return rows, name


def _read_rows(source, split_name: str) -> tuple[list[dict], str]:
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
