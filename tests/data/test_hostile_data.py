"""Data files a hostile (or unlucky) user points ftkit at: a row of 50 MB among normal rows, a FIFO,
a device, a folder, binary garbage, a file of gigabytes, a number of 5000 digits.

The contract: a row longer than the character bound (:func:`ftkit.data.report.char_limit`) is
skipped and named by row and column before any tokenizer sees it, or the data is refused when most
rows are that long; any other bad source is a :class:`DataError` that names the file and what it
is; nothing blocks, nothing prints a traceback, and memory stays near what normal data costs.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml
from blocking import within
from tiny_models import CountingTokenizer as _Counting

from ftkit import DataError, load_data
from ftkit.cli import main
from ftkit.data.canonical import check_data
from ftkit.data.report import CHARS_PER_TOKEN, char_limit, count_tokens, token_lengths
from ftkit.data.sources import MAX_FILE_BYTES, path_problem

ROWS = [{"text": f"my card {i} was charged twice", "label": "ab"[i % 2]} for i in range(20)]


class CountingTokenizer(_Counting):
    model_max_length = 1000  # a context of 1000 tokens: a bound of 10,000 characters


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- 1. a row longer than the bound --------------------------------------------------------------

def test_hostile_a_long_row_is_skipped_by_row_and_column_before_any_tokenizer_sees_it(tmp_path):
    tok = CountingTokenizer()
    limit = char_limit(tok)
    assert limit == 1000 * CHARS_PER_TOKEN
    rows = list(ROWS)
    rows.insert(3, {"text": "word " * 20_000, "label": "a"})  # 100,000 characters: 10x the bound
    rows.insert(17, {"text": "short", "label": "b", "notes": "x" * (limit + 1)})
    report = check_data(write_jsonl(tmp_path / "data.jsonl", rows), tokenizer=tok)
    assert report.ok, report.errors
    assert report.skipped == [3, 17]
    assert report.n_rows == len(rows) - 2 == len(report.dataset)
    assert "word" not in " ".join(report.dataset["prompt"])
    [warning] = [w for w in report.warnings if "skipped" in w]
    assert warning.startswith("rows 3, 17 (counting from 0, as dataset[i]; the longest, row 3, has 100,001 "
                              "characters, most in column 'text'): longer than 10,000 characters")
    assert "skipped before tokenizing" in warning and warning in report.summary()
    assert 0 < tok.most_chars <= limit  # the tokenizer never saw the long rows, nor more than the bound at once


def test_hostile_most_rows_over_the_bound_are_refused_saying_what_to_do(tmp_path):
    rows = [{"document": "lorem ipsum " * 1000, "summary": f"s{i}"} for i in range(3)] + \
        [{"document": "a short one", "summary": "short"}, {"document": "another", "summary": "one"}]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_data(path, tokenizer=CountingTokenizer(), verbose=False)
    message = str(err.value)
    assert message.startswith("3 of 5 rows are longer than 10,000 characters (the model's context, 1,000 tokens, "
                              "x 10 characters per token): rows 0, 1, 2")
    assert "column 'document'" in message and "shorten them" in message and "longer context" in message
    # max_chars sets the bound: then the same rows are read, and tokenized
    assert len(load_data(path, tokenizer=CountingTokenizer(), verbose=False, max_chars=20_000)) == 5


def test_hostile_token_counts_never_hand_a_tokenizer_more_than_the_bound():
    tok = CountingTokenizer()
    texts = ["a " * 12_000, "b c", "d " * 3_000]  # 24,000 characters, then two short ones
    assert count_tokens(tok, texts, max_chars=10_000) == [12_000, 2, 3_000]
    assert tok.most_chars <= 10_000
    rows = [{"prompt": "p " * 6_000, "completion": "q"}, {"prompt": "hi", "completion": "there"}]
    tok = CountingTokenizer()
    assert token_lengths(rows, tok) == [6_001, 2]  # prompt and answer, joined by a line break
    assert tok.most_chars <= char_limit(tok)


def test_hostile_the_checks_median_answer_length_is_counted_within_the_bound():
    from ftkit.pipeline import answer_tokens  # what --check and the run's budget both count

    tok = CountingTokenizer()
    assert answer_tokens(tok, [{"completion": t} for t in ["w " * 30_000, "a b", "c"]]) == 2
    assert tok.most_chars <= char_limit(tok)


# --- 2. paths that are not regular files, and files that are not text ------------------------------

def special_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of path that is not a data file, and what the message must call it."""
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    null_link = tmp_path / "null.jsonl"
    null_link.symlink_to("/dev/null")
    paths = {"folder": (folder, "is a folder, not a file"),
             "device link": (null_link, "is a character device (a link to /dev/null), not a regular file"),
             "device": (Path("/dev/zero"), "/dev/zero is a character device, not a regular file")}
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "data.jsonl"
        os.mkfifo(fifo)
        paths["fifo"] = (fifo, "data.jsonl is a FIFO (named pipe), not a regular file: point data.source at a file")
    return paths


@pytest.mark.parametrize("kind", ["folder", "device link", "device", "fifo"])
def test_hostile_a_fifo_device_or_folder_is_named_for_what_it_is_without_blocking(kind, tmp_path):
    paths = special_paths(tmp_path)
    if kind not in paths:
        pytest.skip("no FIFOs on this system")
    path, expected = paths[kind]
    with pytest.raises(DataError) as err:
        within(10, load_data, path)
    assert expected in str(err.value) and path.name in str(err.value)
    assert path_problem(path) == str(err.value)  # what a config check can say without opening it


def garbage_files() -> dict[str, tuple[bytes, str]]:
    rng = random.Random(0)
    text = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    buffer = io.BytesIO()  # what an .xlsx workbook is: a zip archive
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    return {
        "random.jsonl": (rng.randbytes(100_000), "random.jsonl is binary data, not JSON Lines text"),
        "random.csv": (rng.randbytes(5_000), "random.csv is binary data, not CSV text"),
        "packed.jsonl": (gzip.compress(text), "packed.jsonl is a gzip archive, not JSON Lines text"),
        "sheet.csv": (buffer.getvalue(), "sheet.csv is a zip archive (an .xlsx workbook is one), not CSV text"),
        "wide.csv": ("text,label\ncafé,a\n".encode("utf-16"), "wide.csv is UTF-16 text, not UTF-8"),
        "zeroed.jsonl": (bytes(4096), "zeroed.jsonl is binary data, not JSON Lines text"),
    }


@pytest.mark.parametrize("name", list(garbage_files()))
def test_hostile_a_file_that_is_not_text_is_named_as_such(name, tmp_path):
    data, expected = garbage_files()[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError) as err:
        load_data(tmp_path / name, verbose=False)
    assert str(err.value).startswith(expected), str(err.value)


def test_hostile_latin1_text_is_still_named_by_its_line_not_called_binary(tmp_path):
    (tmp_path / "old.csv").write_bytes("text,label\nok,a\ncafé crème,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"old.csv line 3 is not UTF-8 text \(byte 0xe9"):
        load_data(tmp_path / "old.csv", verbose=False)


def test_hostile_a_file_over_the_size_bound_is_refused_by_its_size_unread(tmp_path):
    path = tmp_path / "dump.jsonl"
    with open(path, "wb") as f:  # sparse: no disk is used, and reading it would take seconds and gigabytes
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(DataError) as err:
        within(5, load_data, path)
    assert str(err.value).startswith("dump.jsonl is 1.0 GB, more than the 1.0 GB ftkit reads into memory: "
                                     "train on a sample of its rows (head -n 100001 dump.jsonl > sample.jsonl)")


def test_hostile_a_number_of_5000_digits_is_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"text": "a", "label": "b", "n": ' + "7" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"big.jsonl line 2 is not valid JSON \(a number of more than 4300 digits"):
        load_data(path, verbose=False)


def test_hostile_jsonl_read_in_small_chunks_gives_the_same_rows_and_line_numbers(tmp_path, monkeypatch):
    import ftkit.data.sources as sources

    body = b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in ROWS[:3]) + b"\r\r\n" + \
        json.dumps({"text": "caf\u00e9 \u2028 ok", "label": "b"}, ensure_ascii=False).encode() + b"\r"
    (tmp_path / "a.jsonl").write_bytes(body)
    (tmp_path / "b.jsonl").write_bytes(body + b"\n\n{oops\n")
    whole = load_data(tmp_path / "a.jsonl", verbose=False).to_list()
    for size in (1, 2, 3, 7):  # every split of \r\n and of a UTF-8 character across two chunks
        monkeypatch.setattr(sources, "_CHUNK_BYTES", size)
        assert load_data(tmp_path / "a.jsonl", verbose=False).to_list() == whole
        with pytest.raises(DataError, match="b.jsonl line 7 is not valid JSON"):  # \r\n is one break
            load_data(tmp_path / "b.jsonl", verbose=False)
    assert [r["prompt"] for r in whole][-1] == "caf\u00e9 \u2028 ok" and len(whole) == 4


# --- the same through `ftkit run --check` -----------------------------------------------------------


def write_config(folder: Path, source: str, model_dir, **data) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": source, "test_size": 4, **data}, "model": {"name": str(model_dir)},
                                    "task": "classification", "sft": {"max_steps": 1}}))
    return path


def check_in_a_child(config: Path) -> tuple[int, str, int]:
    """``python -m ftkit run --check config`` in a fresh process: exit code, output, and its peak
    resident memory in MB (``os.wait4`` gives this child's own rusage, not the largest child's so far)."""
    out = config.with_suffix(".out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(out, "wb") as f:
        child = subprocess.Popen([sys.executable, "-m", "ftkit", "run", "--check", str(config)], cwd=config.parent,
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
        guard = threading.Timer(600, child.kill)  # not a time limit on the check: a guard against a hang
        guard.start()
        _, status, usage = os.wait4(child.pid, 0)
        guard.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return child.returncode, out.read_text(), usage.ru_maxrss // 1024  # KB on Linux


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for a child's own peak memory")
def test_hostile_cli_check_refuses_a_50mb_row_by_number_or_skips_it_and_stays_within_memory(model_dir, tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    write_jsonl(normal / "data.jsonl", ROWS)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    rows = list(ROWS)
    rows.insert(3, {"text": "word " * 10_000_000, "label": "a"})  # 50 MB on one line
    write_jsonl(hostile / "data.jsonl", rows)

    code, out, normal_mb = check_in_a_child(write_config(normal, "data.jsonl", model_dir))
    assert code == 0, out
    # A headless run refuses by default (a warning is easy to miss in a log), naming the row and the way out.
    code, out, refused_mb = check_in_a_child(write_config(hostile, "data.jsonl", model_dir))
    assert code == 2 and "Traceback" not in out, out
    assert "row 3 (counting from 0, as dataset[i]; 50,000,001 characters, most in column 'text'): longer than " \
           "327,680 characters" in out and "set data.long_rows: skip" in out
    code, out, hostile_mb = check_in_a_child(write_config(hostile, "data.jsonl", model_dir, long_rows="skip"))
    assert code == 0, out
    assert "Traceback" not in out
    assert "row 3 (counting from 0, as dataset[i]; 50,000,001 characters, most in column 'text'): longer than " \
           "327,680 characters" in out and "skipped before tokenizing" in out
    assert refused_mb - normal_mb < 300, (normal_mb, refused_mb)
    # The row is held as the line's bytes, its text and the parsed string, one after another, never
    # tokenized: about 150 MB over normal data at the peak. 300 MB leaves room for the allocator; the
    # code before tokenized it whole and took over 10 GB (5.7 GB where it was first seen).
    assert hostile_mb - normal_mb < 300, (normal_mb, hostile_mb)


@pytest.mark.parametrize("kind", ["folder", "device link", "device", "fifo", "garbage"])
def test_hostile_cli_check_refuses_a_special_path_or_garbage_in_one_line_without_a_traceback(kind, model_dir,
                                                                                                tmp_path, capsys):
    if kind == "garbage":
        path = tmp_path / "data.jsonl"
        path.write_bytes(random.Random(1).randbytes(50_000))
    else:
        paths = special_paths(tmp_path)
        if kind not in paths:
            pytest.skip("no FIFOs on this system")
        path = paths[kind][0]
    code = within(60, main, ["run", "--check", str(write_config(tmp_path, str(path), model_dir))])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, text
    assert "Traceback" not in text
    problems = [line for line in text.splitlines() if path.name in line and ("ERROR" in line or "source" in line)]
    assert len(problems) == 1, text
    if kind == "garbage":
        assert "data.jsonl is binary data, not JSON Lines text" in problems[0]


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_hostile_cli_check_names_what_a_special_path_is(kind, model_dir, tmp_path, capsys):
    paths = special_paths(tmp_path)
    if kind not in paths:
        pytest.skip("no FIFOs on this system")
    path, expected = paths[kind]
    assert within(60, main, ["run", "--check", str(write_config(tmp_path, str(path), model_dir))]) == 2
    out = capsys.readouterr()
    assert expected in out.out + out.err
