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
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["FILE_FORMATS", "MAX_FILE_BYTES", "DataError", "as_rows", "path_problem", "read_rows"]

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl",
                ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


# What each format is, as an error message says it ("x.jsonl is binary, not JSON Lines text").
_FORMAT_TEXT = {"csv": "CSV text", "tsv": "tab-separated text", "json": "JSON text",
                "jsonl": "JSON Lines text (one JSON object per line)"}

# Every row is held in memory (then in an arrow table, then as canonical rows): a 1 GB JSON Lines
# file is some 3-5 GB of Python objects. A fine-tuning set a notebook kit trains on is rarely over
# 100 MB (the real-data slices beside the project are under 5 MB); a file over 1 GiB is almost
# always a dump to sample from, and reading it would take the machine's memory before any check.
MAX_FILE_BYTES = 1 << 30
_SNIFF_BYTES = 8192  # how much of a file is looked at to tell text from binary
_CHUNK_BYTES = 1 << 20  # JSON Lines are read this much at a time: a line is held whole, the file never is


class DataError(ValueError):
    """The data cannot be used as given; the message says what to fix."""


def _size_text(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _stat_file(path: Path) -> os.stat_result:
    """``os.stat`` of a data file, or a :class:`DataError` that says what the path is instead.

    Only the path is looked at, never opened: opening a FIFO blocks until something writes to it,
    and opening a device can have effects of its own (a tape rewinds, a watchdog arms)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        target = f" (a link to {os.readlink(path)}, which does not exist)" if path.is_symlink() else ""
        raise DataError(f"no file at {path}{target}") from None
    except (OSError, ValueError) as err:  # a loop of links, a name too long, a NUL in the path, no permission
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DataError(f"cannot read {path}: {reason}; point data.source at a readable file") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a folder, not a file: point data.source at a file in it "
                        f"({', '.join(sorted(FILE_FORMATS))})")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        real = os.path.realpath(path)
        where = f" (a link to {real})" if real != os.path.abspath(path) else ""
        raise DataError(f"{path} is {kind}{where}, not a regular file: point data.source at a file "
                        f"({', '.join(sorted(FILE_FORMATS))}); to read from a stream, save it to a file first")
    return st


def path_problem(path) -> str | None:
    """What is wrong with ``path`` as a data file, judged from the path alone (it is never opened):
    ``None`` for a regular file, else the message :func:`read_rows` would raise, naming what the
    path is (a folder, a FIFO, a device) or that it does not exist. For a config check that must
    not read the data.

    >>> path_problem("/dev/null").split(":")[0]
    '/dev/null is a character device, not a regular file'
    """
    try:
        _stat_file(Path(path).expanduser())
    except DataError as err:
        return str(err)
    return None


# Formats that are not text, by the bytes they start with, and what to do with each.
_MAGIC = ((b"\x1f\x8b", "a gzip archive", "decompress it (gunzip) and point data.source at the result"),
          (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one)",
           "unzip it, or save the sheet as CSV, and point data.source at that"),
          (b"PAR1", "a Parquet file", "name it .parquet"),
          (b"(\xb5/\xfd", "a zstd archive", "decompress it (zstd -d) and point data.source at the result"),
          (b"\xfd7zXZ\x00", "an xz archive", "decompress it (xz -d) and point data.source at the result"),
          (b"BZh", "a bzip2 archive", "decompress it (bunzip2) and point data.source at the result"),
          (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV or JSON Lines"))


def _sniff(path: Path, head: bytes, fmt: str) -> None:
    """Refuse a text format's file whose first bytes are not text: an archive, a database, UTF-16,
    or binary data. Text that is merely not UTF-8 (Latin-1, cp1252) is left to :func:`_decode`,
    which names its line."""
    want = _FORMAT_TEXT[fmt]
    for magic, what, fix in _MAGIC:
        if head.startswith(magic) and not (magic == b"BZh" and head[3:4] not in b"123456789"):
            raise DataError(f"{path.name} is {what}, not {want}: {fix}")
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 16 and 5 * max(even, odd) > 2 * len(head)
                                                  and 50 * min(even, odd) < len(head)):
        # Excel's "Unicode text" and PowerShell's redirections write UTF-16: a NUL beside every ASCII
        # letter (on one side only: a run of NULs is binary data, not UTF-16).
        raise DataError(f"{path.name} is UTF-16 text, not UTF-8: save it as UTF-8 ({want})")
    if len(head) >= 64 and head.count(0) * 2 > len(head):  # a file zeroed by a crash or preallocated
        raise DataError(f"{path.name} is binary data, not {want}: {head.count(0)} of its first {len(head)} bytes "
                        f"are NUL bytes. Point data.source at the {fmt.upper()} file itself, saved as UTF-8")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3 and err.reason == "unexpected end of data":
            return  # the sniff cut a character in two
        control = sum(b < 32 and b not in b"\t\n\r\x0c" for b in head)
        if control * 20 > len(head) or 0 in head:
            # Text in a legacy encoding has no control bytes; binary data has them every few bytes.
            lineno = len(_lines(head[:err.start].decode("utf-8", errors="replace")))
            raise DataError(f"{path.name} is binary data, not {want}: line {lineno} is not UTF-8 text (byte "
                            f"{head[err.start]:#04x}) and {control} of its first {len(head)} bytes are control "
                            f"characters. Point data.source at the {fmt.upper()} file itself, saved as UTF-8") from None


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
    import pandas as pd

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
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python refuses to read an integer of over 4300 digits (CVE-2020-10735)
        raise json.JSONDecodeError(f"a number of more than {sys.get_int_max_str_digits()} digits; write it as "
                                   "a string", text, 0) from None


def _open(path: Path):
    """The regular file at ``path``, opened for reading without ever blocking: O_NONBLOCK makes an
    open of a FIFO return at once, and the opened file is checked again (it may have been swapped
    for something else since :func:`_stat_file` looked)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}; point data.source at a readable file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _stat_file(path)  # says what it is now
        raise DataError(f"{path} is not a regular file: point data.source at a file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _read_file(path: Path) -> list[dict]:
    st = _stat_file(path)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {path.name} from its extension; use one of "
            f"{', '.join(sorted(FILE_FORMATS))}, or read it with pandas and pass the DataFrame"
        )
    if st.st_size == 0:
        raise DataError(f"{path} is empty")
    if st.st_size > MAX_FILE_BYTES:
        sample = {"parquet": f"pd.read_parquet('{path.name}').sample(100_000).to_parquet('sample.parquet')",
                  "json": f"pd.read_json('{path.name}').sample(100_000).to_json('sample.jsonl', orient='records', "
                          "lines=True)"}.get(fmt, f"head -n 100001 {path.name} > sample{path.suffix}")
        raise DataError(f"{path.name} is {_size_text(st.st_size)}, more than the {_size_text(MAX_FILE_BYTES)} ftkit "
                        f"reads into memory: train on a sample of its rows ({sample}) and point data.source at it")
    with _open(path) as f:
        if fmt == "parquet":
            import pandas as pd

            try:
                frame = pd.read_parquet(f)
            except Exception as err:  # pyarrow raises several types for a damaged file
                raise DataError(f"{path.name} is not a readable Parquet file: {err}") from None
            return frame.to_dict("records")
        _sniff(path, f.read(_SNIFF_BYTES), fmt)
        f.seek(0)
        if fmt == "jsonl":  # line by line: a long line costs its own size, not the file's again and again
            return _json_lines(path, _decoded_lines(path, _binary_lines(f)))
        raw = f.read()
    text = _decode(path, raw)
    del raw
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
    return _json_lines(path, enumerate(_lines(text), start=1))


_BREAK = re.compile(rb"\r\n|\r|\n")


def _binary_lines(f) -> Iterator[bytes]:
    """The lines of a binary file, read a chunk at a time and split where :func:`_lines` splits
    text (\\n, \\r\\n, \\r: in UTF-8 those bytes never occur inside a character)."""
    parts: list[bytes] = []  # the line so far
    after_cr = False  # the last chunk ended with \r: a \n opening the next one belongs to it
    while chunk := f.read(_CHUNK_BYTES):
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        after_cr = chunk[-1:] == b"\r"
        pieces = _BREAK.split(chunk)
        parts.append(pieces[0])
        for piece in pieces[1:]:
            line, parts = b"".join(parts), [piece]  # the parts go before the line is handed on
            yield line
    yield b"".join(parts)


def _decoded_lines(path: Path, lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, decoded as UTF-8 (a byte-order mark on the first)."""
    for lineno, raw in enumerate(lines, start=1):
        try:
            yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path.name} line {lineno} is not UTF-8 text (byte {raw[err.start]:#04x}: "
                            f"{err.reason}); save the file as UTF-8") from None


def _json_lines(path: Path, lines: Iterable[tuple[int, str]]) -> list[dict]:
    """The records of JSON Lines, from ``(line number, text)`` pairs."""
    name, rows = path.name, []
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{name} line {lineno} is not valid JSON ({err.msg}, column "
                            f"{err.colno}): {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise DataError(f"{name} line {lineno} is a JSON {type(row).__name__}, not an "
                            "object with named fields")
        if "\\u" in line and _has_lone_surrogate(row):
            raise DataError(f"{name} line {lineno} {_SURROGATE_FIX}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} is empty")
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
    # A DataFrame or a Dataset exists only once its library is imported: nothing is imported here.
    pd, datasets = sys.modules.get("pandas"), sys.modules.get("datasets")
    if pd is not None and isinstance(source, pd.DataFrame):
        return source.to_dict("records"), "DataFrame"
    if datasets is not None and isinstance(source, datasets.DatasetDict):
        if split_name not in source:
            raise DataError(f"the DatasetDict has no split {split_name!r}; its splits are: "
                            f"{', '.join(source)}. Pass split_name=...")
        return source[split_name].to_list(), f"DatasetDict[{split_name!r}]"
    if datasets is not None and isinstance(source, datasets.Dataset):
        return source.to_list(), "Dataset"
    if isinstance(source, list):
        return _check_records(source, "list"), "list"
    raise DataError(
        f"cannot read a {type(source).__name__}; give a file path (CSV, TSV, JSON, JSONL, Parquet), "
        "a pandas DataFrame, a list of dicts, or a datasets.Dataset/DatasetDict"
    )
