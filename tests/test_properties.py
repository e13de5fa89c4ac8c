"""Property-based tests: generated CSV, JSONL and JSON files, well-formed and malformed, through
``load_data``; and generated rows and instructions through ``PromptTemplate``.

The contract under test: every file gives a canonical dataset or a :class:`DataError` whose message
says where the problem is (the line of a malformed JSONL line, the rows of empty cells), never any
other exception; a row longer than the character bound is skipped and named by its row number (or,
when most rows are, the data is refused), and never reaches a tokenizer; a path that is not a
regular file, or bytes that are not text, are a :class:`DataError` naming the file, at once; a
template puts row text in verbatim, braces and all.
"""

import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import datasets
import pytest
from blocking import within
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from tiny_models import CountingTokenizer

from ftkit import DataError, load_data
from ftkit.data.canonical import LAYOUTS, SHAPES, check_data
from ftkit.data.report import char_limit, rows_text
from ftkit.prompts import PromptTemplate
from ftkit.data.sources import FILE_FORMATS

# No example database: nothing is written into the checkout (.hypothesis/).
SETTINGS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies: text ----------------------------------------------------------------------------

SPECIAL = ['"', ",", "\n", "\r\n", "\t", "", " ", "\u3000", "{", "}", "{prompt}", "{0}", "{}",
           "{__class__}", "{prompt:>10}", "{{", "}}", "\\", "\\u0041", "NA", "null", "#", "\x00",
           "😀", "👩‍👩‍👧", "مرحبا بالعالم", "שלום", "\u200f", "\u2028", "\u0085", "\ufeff", "é", "e\u0301"]

# Any Unicode but lone surrogates (which no UTF-8 file can hold).
unicode_text = st.text(st.characters(codec="utf-8"), max_size=12)
cell = st.one_of(unicode_text, st.sampled_from(SPECIAL),
                 st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=4).map("".join))
# Text a required field may hold: sometimes blank (spaces, tabs, newlines only), which must be reported.
required_cell = st.one_of(cell, st.sampled_from(["", " ", "\t", "\n", " \u3000 "]))

KNOWN_COLUMNS = sorted({c for _, m in LAYOUTS for c in m.values()})
# Never a known column (keeps detection predictable); no NUL, which arrow cannot keep in a column name.
extra_name = unicode_text.filter(lambda s: "\x00" not in s).map(lambda s: f"x_{s}")
any_name = st.one_of(st.sampled_from(KNOWN_COLUMNS + ["label", "id", ""]), unicode_text)

# Layouts whose fields are all required text (Alpaca's optional `input` is left out).
TEXT_LAYOUTS = [(name, m) for name, m in LAYOUTS if "messages" not in m and "input" not in m]


def shape_fields(mapping: dict) -> tuple[str, ...]:
    return next(f for f in SHAPES.values() if set(f) == set(mapping))


# --- running load_data -----------------------------------------------------------------------------

def load_bytes(name: str, data: bytes):
    """``(dataset, None)`` or ``(None, DataError)``; any other exception fails the test."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicates, chosen == rejected: not what is tested here
            try:
                return load_data(path, verbose=False), None
            except DataError as err:
                assert isinstance(err, ValueError)
                return None, err


def assert_canonical(ds):
    """The dataset is in one of the three canonical shapes, its fields usable text."""
    assert isinstance(ds, datasets.Dataset) and len(ds) > 0
    cols = ds.column_names
    if cols[0] == "messages":
        for turns in ds["messages"]:
            assert turns and any(t["role"] == "assistant" for t in turns)
            for t in turns:
                assert t["role"] in {"system", "user", "assistant", "tool"}
                assert isinstance(t["content"], str) and t["content"].strip()
        return
    fields = ("prompt", "chosen", "rejected") if cols[:3] == ["prompt", "chosen", "rejected"] \
        else ("prompt", "completion")
    assert tuple(cols[:len(fields)]) == fields, cols
    for f in fields:
        for value in ds[f]:
            assert isinstance(value, str) and value.strip(), (f, value)


def outcome_ok(name: str, data: bytes):
    ds, err = load_bytes(name, data)
    if err is None:
        assert_canonical(ds)
    else:
        assert str(err).strip()
    return ds, err


# --- CSV -------------------------------------------------------------------------------------------

def to_csv(header, rows, newline="\n", bom=False, sep=",") -> bytes:
    """RFC 4180 CSV. (The csv module leaves a lone \\r unquoted when the line ending is \\n, and
    a bare \\r is a line break to every CSV reader.)"""
    def field(value: str) -> str:
        return f'"{value.replace(chr(34), chr(34) * 2)}"' if any(c in value for c in sep + '"\r\n') else value
    lines = [sep.join(field(v) for v in row) for row in [header, *rows]]
    # A lone empty field would be a blank line, which CSV readers skip: quote it as "".
    lines = ['""' if line == "" else line for line in lines]
    return (b"\xef\xbb\xbf" if bom else b"") + "".join(line + newline for line in lines).encode("utf-8")


@st.composite
def csv_tables(draw):
    """A header (a known layout plus extra columns, or arbitrary names) and rows as wide as it."""
    if draw(st.booleans()):
        _, mapping = draw(st.sampled_from(LAYOUTS))
        header = list(dict.fromkeys(mapping.values())) + draw(st.lists(any_name, max_size=2))
        header = draw(st.permutations(header))
    else:
        header = draw(st.lists(any_name, min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(required_cell, min_size=len(header), max_size=len(header)), max_size=6))
    return header, rows


@SETTINGS
@given(table=csv_tables(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), sep=st.sampled_from([",", "\t"]))
@example(table=(["text", "label"], [["a, \"quoted\"\nline", "x"]]), newline="\r\n", bom=True, sep=",")
def test_any_well_formed_csv_or_tsv_gives_a_dataset_or_a_data_error(table, newline, bom, sep):
    outcome_ok("data.csv" if sep == "," else "data.tsv", to_csv(*table, newline=newline, bom=bom, sep=sep))


@st.composite
def layout_rows(draw, values=required_cell):
    """Rows in a known text layout (with extra columns), and that layout's mapping."""
    _, mapping = draw(st.sampled_from(TEXT_LAYOUTS))
    extras = draw(st.lists(extra_name, max_size=2, unique=True))
    columns = list(mapping.values()) + [e for e in extras if e not in mapping.values()]
    rows = draw(st.lists(st.fixed_dictionaries({c: values for c in columns}), min_size=1, max_size=8))
    return mapping, columns, rows


def blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def expected_empty_errors(mapping, rows) -> list[str]:
    """The 'empty or missing' errors load_data must give, one per field, naming the rows."""
    out = []
    for key in shape_fields(mapping):
        col = mapping[key]
        bad = [i for i, r in enumerate(rows) if blank(r.get(col))]
        if bad:
            out.append(f"column '{col}' is empty or missing in {len(bad)} row(s): {rows_text(bad)} ")
    return out


@SETTINGS
@given(data=layout_rows(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), sep=st.sampled_from([",", "\t"]))
def test_csv_in_a_known_layout_reads_back_verbatim_or_names_the_empty_rows(data, newline, bom, sep):
    mapping, columns, rows = data
    table = to_csv(columns, [[r[c] for c in columns] for r in rows], newline, bom, sep)
    ds, err = outcome_ok("data.csv" if sep == "," else "data.tsv", table)
    expected = expected_empty_errors(mapping, rows)
    if expected:
        assert err is not None
        for message in expected:
            assert message in str(err)
    else:
        assert err is None, err
        for key in shape_fields(mapping):
            assert ds[key] == [r[mapping[key]] for r in rows]  # quotes, commas, line breaks and all


simple_cell = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\"\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                      min_size=1, max_size=8)


@st.composite
def malformed_csv(draw):
    """A CSV file broken in one way, and what the error message must contain."""
    header = ["text", "label"]
    rows = draw(st.lists(st.lists(simple_cell.filter(str.strip), min_size=2, max_size=2), min_size=1, max_size=5))
    kind = draw(st.sampled_from(["unterminated", "long_row", "first_row_long", "bad_bytes",
                                 "header_only", "empty", "bom_only", "blank"]))
    good = to_csv(header, rows)
    if kind == "unterminated":
        return good + b'"' + draw(simple_cell).encode() + b",x\n", "not valid CSV"
    if kind == "long_row":
        at = draw(st.integers(1, len(rows)))  # data row `at` (0 is the first, read as the header's width)
        rows = rows[:at] + [rows[at - 1] + ["extra"]] + rows[at:]
        return to_csv(header, rows), f"line {at + 2}"
    if kind == "first_row_long":
        rows = [rows[0] + ["extra"]] + rows[1:]
        return to_csv(header, rows), "more fields than the header"
    if kind == "bad_bytes":
        lines = good.split(b"\n")
        at = draw(st.integers(0, len(lines) - 2))  # the last element is the empty tail
        lines[at] += draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3(", b"\x80abc", b"\xed\xa0\x80"]))
        return b"\n".join(lines), f"line {at + 1} is not UTF-8"
    if kind == "header_only":
        return to_csv(header, []), "has no rows (only a header: text, label)"
    if kind == "empty":
        return b"", "is empty"
    if kind == "bom_only":
        return b"\xef\xbb\xbf" + draw(st.sampled_from([b"", b"\n", b" \r\n"])), "is empty"
    return draw(st.sampled_from([b"\n", b"  \n\t\n", b"\r\n\r\n"])), "is empty"


@SETTINGS
@given(case=malformed_csv())
@example(case=(b"text,label\n\x01\x02\x03,\x04\x05\x06\n\x07\x08x\xff,y\n", "line 3 is not UTF-8"))  # called binary too
def test_malformed_csv_is_a_data_error_that_says_where(case):
    data, expected = case
    ds, err = load_bytes("bad.csv", data)
    assert err is not None, ds
    assert expected in str(err)


# --- JSON values and JSONL -------------------------------------------------------------------------

INT64 = st.integers()  # arrow's range; see test_extra_columns_arrow_cannot_store_are_a_data_error
scalars = st.one_of(st.none(), st.booleans(), INT64, st.floats(allow_nan=True, allow_infinity=True),
                    cell)
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                           st.dictionaries(unicode_text, kids, max_size=3)),
                           max_leaves=6)
turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "human", "gpt", "narrator"]),
                              "content": required_cell})
# What a required field may hold in a JSON record: text (maybe blank), null, a number, a container.
field_value = st.one_of(required_cell, required_cell, st.none(), INT64, st.floats(), st.lists(cell, max_size=2),
                        st.dictionaries(unicode_text, cell, max_size=2), st.lists(turn, max_size=3))


@st.composite
def records(draw):
    """Records with known and arbitrary field names, values of every JSON type, fields missing."""
    names = draw(st.one_of(st.sampled_from([list(m.values()) for _, m in LAYOUTS]),
                           st.lists(any_name, min_size=1, max_size=3)))
    names = names + draw(st.lists(any_name, max_size=2))
    return draw(st.lists(
        st.dictionaries(st.sampled_from(names), st.one_of(field_value, json_values), min_size=0),
        min_size=0, max_size=6))


def to_jsonl(rows, draw_blank, ascii_only) -> bytes:
    lines = []
    for r in rows:
        lines.append(json.dumps(r, ensure_ascii=ascii_only))
        if draw_blank:
            lines.append("")
    return "\n".join(lines).encode("utf-8")


@SETTINGS
@given(rows=records(), blank_lines=st.booleans(), ascii_only=st.booleans())
def test_any_jsonl_of_objects_gives_a_dataset_or_a_data_error(rows, blank_lines, ascii_only):
    outcome_ok("data.jsonl", to_jsonl(rows, blank_lines, ascii_only))


@st.composite
def bad_jsonl_line(draw):
    """A line that is not a JSON object, as bytes, with no line break in it."""
    kind = draw(st.sampled_from(["truncated", "array", "number", "string", "null", "garbage",
                                 "bad_bytes", "lone_surrogate"]))
    if kind == "truncated":
        full = json.dumps(draw(st.dictionaries(any_name, cell, min_size=1, max_size=3)))
        return full[:draw(st.integers(1, len(full) - 1))].encode()
    if kind == "array":
        return json.dumps(draw(st.lists(cell, max_size=3))).encode()
    if kind == "number":
        return json.dumps(draw(st.one_of(INT64, st.floats()))).encode()
    if kind == "string":
        return json.dumps(draw(cell)).encode()
    if kind == "null":
        return draw(st.sampled_from([b"null", b"true", b"false"]))
    if kind == "garbage":
        text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=20)
                    .filter(lambda s: s.strip()))
        try:
            json.loads(text)
            assume(False)
        except ValueError:
            pass
        return text.encode()
    if kind == "bad_bytes":
        good = json.dumps({"text": draw(cell), "label": "x"}).encode()
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x93"])) + good[at:]
    return b'{"text": "a\\ud83dz", "label": "x"}'


@SETTINGS
@given(rows=st.lists(st.dictionaries(any_name, field_value, max_size=3), max_size=5),
       bad=bad_jsonl_line(), data=st.data(), crlf=st.booleans())
def test_a_bad_jsonl_line_is_named_by_its_number(rows, bad, data, crlf):
    lines = [json.dumps(r, ensure_ascii=data.draw(st.booleans())).encode("utf-8") for r in rows]
    lines += [b""] * data.draw(st.integers(0, 2))  # blank lines count in the numbering
    lines = data.draw(st.permutations(lines))
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, bad)
    ds, err = load_bytes("data.jsonl", (b"\r\n" if crlf else b"\n").join(lines))
    assert err is not None, ds
    assert f"data.jsonl line {at + 1} " in str(err)


@st.composite
def jsonl_in_a_layout(draw):
    """Records in a known layout whose required fields may be blank, null, numbers or containers."""
    _, mapping = draw(st.sampled_from(TEXT_LAYOUTS))
    extras = draw(st.lists(extra_name, max_size=2, unique=True))
    required = list(mapping.values())
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        row = {}
        for c in required:
            if draw(st.integers(0, 9)):  # now and then the field is left out altogether
                row[c] = draw(field_value)
        for e in extras:
            row[e] = draw(st.one_of(st.none(), cell))  # extra columns of one arrow type
        rows.append(row)
    return mapping, rows


@SETTINGS
@given(data=jsonl_in_a_layout())
def test_jsonl_in_a_known_layout_names_the_rows_of_empty_or_missing_fields(data):
    mapping, rows = data
    ds, err = outcome_ok("data.jsonl", to_jsonl(rows, False, False))
    if any(all(c not in r for r in rows) for c in mapping.values()):
        assert err is not None  # a field no row has: a different layout, or none is detected
        return
    expected = expected_empty_errors(mapping, rows)
    not_text = [mapping[k] for k in shape_fields(mapping)
                if any(isinstance(r.get(mapping[k]), (list, dict)) for r in rows)]
    for message in expected:
        assert err is not None and message in str(err)
    for col in not_text:
        assert err is not None and f"column '{col}' is not text (a " in str(err)
    if not expected and not not_text:
        assert err is None, err
        key = shape_fields(mapping)[0]
        want = [v if isinstance(v, str) else None for v in (r[mapping[key]] for r in rows)]
        assert [v for v, w in zip(ds[key], want) if w is not None] == [w for w in want if w is not None]


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"messages": st.lists(turn, max_size=4)}), min_size=1, max_size=4))
def test_messages_rows_give_valid_conversations_or_a_data_error_naming_rows(rows):
    _, err = outcome_ok("chat.jsonl", to_jsonl(rows, False, False))
    if err is not None:
        assert "column 'messages' " in str(err) and " row(s): " in str(err)


# --- JSON ------------------------------------------------------------------------------------------

@st.composite
def json_documents(draw):
    """A .json file: a list of records, a wrapper object, a bare object, a scalar, or broken JSON."""
    rows = draw(records())
    kind = draw(st.sampled_from(["list", "wrapped", "two_lists", "object", "scalar", "jsonl",
                                 "broken_list", "broken_object", "bad_bytes"]))
    ascii_only = draw(st.booleans())
    dump = lambda v: json.dumps(v, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 2])))
    if kind == "list":
        return kind, dump(rows).encode()
    if kind == "wrapped":
        key = draw(st.sampled_from(["data", "train", "rows", "examples"]))
        return kind, dump({key: rows, "meta": draw(st.one_of(st.none(), cell))}).encode()
    if kind == "two_lists":
        return kind, dump({"train": rows, "test": rows}).encode()
    if kind == "object":
        return kind, dump(draw(st.dictionaries(any_name, st.one_of(st.none(), cell, INT64)))).encode()
    if kind == "scalar":
        return kind, dump(draw(st.one_of(st.none(), st.booleans(), INT64, st.floats(), cell))).encode()
    if kind == "jsonl":
        return kind, to_jsonl(rows, False, ascii_only)
    if kind == "bad_bytes":
        good = dump(rows).encode()
        at = draw(st.integers(0, len(good)))
        return kind, good[:at] + b"\xff" + good[at:]
    text = dump(rows) if kind == "broken_list" else dump({"data": rows})
    return kind, text[:draw(st.integers(1, len(text) - 1))].encode()


@SETTINGS
@given(doc=json_documents())
def test_any_json_file_gives_a_dataset_or_a_data_error(doc):
    kind, data = doc
    ds, err = outcome_ok("data.json", data)
    if kind in ("two_lists", "broken_list", "broken_object", "bad_bytes"):
        assert err is not None, ds
    if kind == "two_lists":
        assert "holds one JSON object" in str(err)
    if kind == "broken_list":
        assert "is not valid JSON" in str(err) and "line " in str(err) and "column " in str(err)
    if kind == "bad_bytes":
        assert "is not UTF-8" in str(err)


@SETTINGS
@given(data=layout_rows(values=cell.filter(str.strip)), key=st.sampled_from(["data", "train"]))
def test_a_list_of_records_reads_the_same_bare_wrapped_or_as_json_lines(data, key):
    mapping, _, rows = data
    bare, _ = load_bytes("a.json", json.dumps(rows).encode())
    wrapped, _ = load_bytes("b.json", json.dumps({key: rows}).encode())
    lines, _ = load_bytes("c.jsonl", to_jsonl(rows, True, False))
    assert bare is not None and wrapped is not None and lines is not None
    assert bare.to_list() == wrapped.to_list() == lines.to_list()
    assert bare[shape_fields(mapping)[0]] == [r[mapping[shape_fields(mapping)[0]]] for r in rows]


@pytest.mark.parametrize("data,message", [
    (b'{}\n{}\n', "data.jsonl: none of its 2 record(s) has any field"),
    (b'{"text": "a", "label": "b", "x\\u0000": 1}\n', "the column name 'x\\x00' holds a NUL character"),
])
def test_records_without_fields_or_with_a_nul_in_a_name_are_a_data_error(data, message):
    _, err = load_bytes("data.jsonl", data)
    assert err is not None and message in str(err)


# --- values arrow cannot store are a DataError too ------------------------------------------------

@pytest.mark.parametrize("extra", [2**63, -(2**63) - 1, 10**30, json.loads("[" * 900 + "]" * 900)],
                         ids=["2**63", "-2**63-1", "10**30", "nested-900"])
def test_extra_columns_arrow_cannot_store_are_a_data_error(extra):
    _, err = load_bytes("data.jsonl", json.dumps({"text": "a", "label": "b", "n": extra}).encode())
    assert err is not None and "arrow cannot store" in str(err)


# --- rows longer than the bound, paths that are not files, bytes that are not text ------------------

BOUND = 300  # max_chars for generated rows: over it is a few hundred characters, quick to generate
# Long text made of what breaks readers: quotes, separators, line breaks inside a field, wide characters.
LONG_UNITS = ["a", "é", "😀", "word ", "x\n", '"', ",", "{}", "a\u2028", "\\u0041", "\t;"]


def long_text(least: int):
    return st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(LONG_UNITS), st.integers(least + 1, least + 400))


@st.composite
def rows_some_long(draw, least: int):
    """Rows in a known text layout whose values are sometimes longer than ``least`` characters."""
    _, mapping = draw(st.sampled_from(TEXT_LAYOUTS))
    extras = draw(st.lists(extra_name, max_size=1))
    columns = list(dict.fromkeys([*mapping.values(), *extras]))
    value = st.one_of(cell.filter(str.strip), cell.filter(str.strip), long_text(least))
    rows = draw(st.lists(st.fixed_dictionaries({c: value for c in columns}), min_size=1, max_size=7))
    return mapping, columns, rows


def write_rows(fmt: str, columns, rows, folder: str) -> Path:
    path = Path(folder) / f"data.{fmt}"
    if fmt == "csv":
        path.write_bytes(to_csv(columns, [[r[c] for c in columns] for r in rows]))
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_bytes(to_jsonl(rows, False, False))
    return path


def check_long_rows(mapping, columns, rows, fmt, bound, **kw):
    """check_data on the rows saved as ``fmt``: the rows over ``bound`` characters are skipped and
    named, or (most of them over) the data refused; the tokenizer never sees more than ``bound``."""
    long = [i for i, r in enumerate(rows) if sum(len(v) for v in r.values()) > bound]
    tok = CountingTokenizer()
    with tempfile.TemporaryDirectory() as d:
        report = check_data(write_rows(fmt, columns, rows, d), tokenizer=tok, **kw)
    assert tok.most_chars <= bound
    if 2 * len(long) > len(rows):
        assert report.errors == [next(e for e in report.errors if e.startswith(
            f"{len(long)} of {len(rows)} rows are longer than {bound:,} characters"))]
        assert f": rows {rows_text(long)} (counting from 0" in report.errors[0] or len(long) == 1
        return
    assert report.ok, report.errors
    assert report.skipped == long
    if long:
        assert any(w.startswith(f"row{'s' if len(long) > 1 else ''} {rows_text(long)} (counting from 0")
                   and "skipped before tokenizing" in w for w in report.warnings), report.warnings
    key = shape_fields(mapping)[0]
    assert report.dataset[key] == [r[mapping[key]] for i, r in enumerate(rows) if i not in long]


@SETTINGS
@given(data=rows_some_long(BOUND), fmt=st.sampled_from(["jsonl", "csv", "json"]))
@example(data=({"prompt": "text", "completion": "label"}, ["text", "label"],
               [{"text": "a" * 301, "label": "x"}, {"text": "b", "label": "y"}]), fmt="jsonl")
def test_rows_over_the_character_bound_are_skipped_by_row_number_or_refused(data, fmt):
    check_long_rows(*data, fmt, BOUND, max_chars=BOUND)


@settings(SETTINGS, max_examples=8)
@given(data=rows_some_long(char_limit()), fmt=st.sampled_from(["jsonl", "csv"]))
def test_rows_over_the_default_bound_are_skipped_too(data, fmt):
    check_long_rows(*data, fmt, char_limit())


PATH_KINDS = ["missing", "folder", "fifo", "/dev/null", "/dev/zero", "/dev/urandom", "broken link", "link loop",
              "nul in name", "name too long", "under a file", "empty"]
file_stem = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12) \
    .filter(lambda s: s not in (".", ".."))


def make_path(folder: Path, kind: str, name: str) -> Path:
    """A path of ``kind`` named ``name`` in ``folder``: never a regular file with data in it."""
    path = folder / name
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind.startswith("/dev/"):
        path.symlink_to(kind)
    elif kind == "broken link":
        path.symlink_to(folder / "gone")
    elif kind == "link loop":
        path.symlink_to(path)
    elif kind == "nul in name":
        path = folder / f"a\x00{name}"
    elif kind == "name too long":
        path = folder / (name * 300)[:300]
    elif kind == "under a file":
        (folder / "plain").write_text("x")
        path = folder / "plain" / name
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@SETTINGS
@given(kind=st.sampled_from(PATH_KINDS), stem=file_stem,
       suffix=st.sampled_from(sorted(FILE_FORMATS) + ["", ".txt", ".JSONL"]))
def test_a_path_that_is_no_data_file_is_a_data_error_naming_it_at_once(kind, stem, suffix):
    assume(kind != "fifo" or hasattr(os, "mkfifo"))
    with tempfile.TemporaryDirectory() as d:
        path = make_path(Path(d), kind, stem + suffix)
        try:
            within(10, load_data, path)
        except DataError as err:
            assert path.name in str(err), (kind, str(err))
            if kind in ("fifo", "folder") or kind.startswith("/dev/"):
                what = {"fifo": "a FIFO", "folder": "a folder"}.get(kind, "a character device")
                assert f" is {what}" in str(err), str(err)
        else:
            raise AssertionError(f"{kind} {path} gave no DataError")


@SETTINGS
@given(data=st.binary(min_size=1, max_size=3000),
       suffix=st.sampled_from([".jsonl", ".csv", ".tsv", ".json", ".parquet"]))
@example(data=b"\x1f\x8b\x08\x00" + bytes(range(256)), suffix=".jsonl")
@example(data=b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(200, 256)), suffix=".csv")
@example(data="text,label\nhi,a\n".encode("utf-16"), suffix=".csv")
@example(data=b"\x00" * 100, suffix=".jsonl")
def test_bytes_that_are_not_utf8_are_a_data_error_naming_the_file(data, suffix):
    try:
        data.decode("utf-8")
        text = suffix != ".parquet"
    except UnicodeDecodeError:
        text = False
    ds, err = outcome_ok(f"blob{suffix}", data)
    if not text:  # no reading of such bytes gives rows: the error must say which file it is
        assert err is not None and f"blob{suffix}" in str(err), (ds, err)


# --- PromptTemplate --------------------------------------------------------------------------------

row_text = st.one_of(unicode_text, st.lists(st.sampled_from(SPECIAL) | unicode_text, max_size=6).map("".join))


@SETTINGS
@given(text=row_text, label=row_text, labels=st.lists(row_text, max_size=3))
def test_row_text_goes_into_the_instruction_verbatim(text, label, labels):
    t = PromptTemplate(instruction="Q: {prompt} [{label}] ({labels})", labels=labels)
    content = t.messages({"prompt": text, "label": label})[-1]["content"]
    assert content == f"Q: {text} [{label}] ({', '.join(labels)})"  # no braces in values re-formatted


@SETTINGS
@given(shots=st.lists(st.fixed_dictionaries({"prompt": row_text, "completion": row_text}), max_size=3),
       text=row_text, system=st.none() | row_text)
def test_shots_and_system_are_verbatim_too(shots, text, system):
    t = PromptTemplate(instruction="{prompt}", shots=shots, system=system)
    msgs = t.messages({"prompt": text})
    expected = [] if system is None else [{"role": "system", "content": system}]
    for s in shots:
        expected += [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["completion"]}]
    assert msgs == expected + [{"role": "user", "content": text}]


field_name = st.one_of(st.sampled_from(["prompt", "label", "id", "labels", "my column", "ключ", "名前"]),
                       st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True))
literal = row_text.map(lambda s: s.replace("{", "{{").replace("}", "}}"))


@SETTINGS
@given(parts=st.lists(st.tuples(literal, field_name), min_size=1, max_size=4), tail=literal,
       row=st.dictionaries(field_name, row_text, max_size=4))
def test_fields_the_row_lacks_raise_a_key_error_naming_the_first(parts, tail, row):
    instruction = "".join(f"{lit}{{{name}}}" for lit, name in parts) + tail
    t = PromptTemplate(instruction=instruction)
    values = {"labels": "", **row}
    missing = sorted({name for _, name in parts} - set(values))
    if missing:
        with pytest.raises(KeyError, match=f"instruction uses \\{{{missing[0]}\\}}, but the row has no such field"):
            t.messages(row)
    else:
        unescape = lambda s: s.replace("{{", "{").replace("}}", "}")
        want = "".join(unescape(lit) + str(values[name]) for lit, name in parts) + unescape(tail)
        assert t.messages(row)[-1]["content"] == want


@pytest.mark.parametrize("instruction,message", [
    ("{prompt.__class__}", "no attribute or index access"),
    ("{prompt.__class__.__mro__}", "no attribute or index access"),
    ("{labels.__init__.__globals__}", "no attribute or index access"),
    ("{prompt[0]}", "no attribute or index access"),
    ("Q: {prompt[__class__]}", "no attribute or index access"),
    ("{}", "positional placeholder"),
    ("{0}", "positional placeholder"),
    ("{prompt:{width}}", "placeholder inside the format spec"),
    ("{prompt!z}", "unknown conversion"),
    ("Q: {prompt", "is not a valid template"),
    ("Q: prompt}", "is not a valid template"),
    ("{{prompt}}", "has no placeholder"),
])
def test_instructions_with_more_than_plain_field_names_are_refused_when_made(instruction, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(instruction=instruction)


def test_format_specs_and_conversions_on_plain_fields_still_work():
    t = PromptTemplate(instruction="{prompt!r} {prompt:.3} {id:>4}")
    assert t.messages({"prompt": "hello", "id": 7})[-1]["content"] == "'hello' hel    7"
    with pytest.raises(ValueError, match="cannot format this row: Unknown format code 'd'"):
        PromptTemplate(instruction="{prompt:d}").messages({"prompt": "text"})


@SETTINGS
@given(instruction=st.text(st.sampled_from("{}[]().:!0prs_ abc>\\"), max_size=16), text=row_text)
def test_any_instruction_is_a_template_or_a_value_error(instruction, text):
    try:
        t = PromptTemplate(instruction=instruction)
    except ValueError:
        return
    row = {name: text for name in t._fields}
    try:
        content = t.messages(row)[-1]["content"]
    except ValueError as err:  # a format spec that does not fit text, e.g. {prompt:d}
        assert "cannot format this row" in str(err)
        return
    assert isinstance(content, str)
