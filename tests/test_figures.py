"""The figures a reader sees in the README and the notebooks' markdown are the benchmarks' own.

A figure is quoted as ``<!-- measured: BENCHMARK.FIGURE -->`` right before the number; the number
must be docs/measured.json's value rounded to the decimals written (see the file's "about" lines).
The benchmarks write that file through benchmarks/_measured.py, which is tested here too.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "docs" / "measured.json"
MARKER = re.compile(r"<!--\s*measured:\s*([^\s>]+)\s*-->")
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# between the numbers of one quoted interval: "0.96 [0.90-1.00]", "+0.09 [+0.07, +0.11]"
SEPARATOR = re.compile(r"\s*\[\s*|\s*,\s*|-(?=\d)")
CODE_SPAN = re.compile(r"`[^`\n]*`")  # a marker shown as an example in `code` is no marker


def _prose(text: str) -> str:
    """``text`` with its inline code blanked out (same length, so line numbers stay)."""
    return CODE_SPAN.sub(lambda m: " " * len(m.group()), text)


def _measured_module():
    spec = importlib.util.spec_from_file_location("_measured", ROOT / "benchmarks" / "_measured.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quoted_numbers(text: str, most: int) -> list[str]:
    """Up to ``most`` numbers at the start of ``text``, joined only by an interval's brackets, commas or dash."""
    found, pos = [], len(text) - len(text.lstrip())
    while len(found) < most:
        number = NUMBER.match(text, pos)
        if not number:
            break
        found.append(number.group())
        pos = number.end()
        separator = SEPARATOR.match(text, pos)
        if not separator:
            break
        pos = separator.end()
    return found


def _agrees(written: str, value: float) -> bool:
    decimals = len(written.partition(".")[2])
    return abs(float(written) - float(value)) <= 0.5 * 10 ** -decimals + 1e-9


def figure_problems(text: str, measured: dict, where: str) -> list[str]:
    """Every marked figure in ``text`` that docs/measured.json does not hold, or holds another value of."""
    entries, problems, text = measured["benchmarks"], [], _prose(text)
    for marker in MARKER.finditer(text):
        key = marker.group(1)
        benchmark, _, name = key.rpartition(".")
        line = text.count("\n", 0, marker.start()) + 1
        if benchmark not in entries or name not in entries[benchmark]["figures"]:
            problems.append(f"{where}:{line}: {key} is not in docs/measured.json")
            continue
        value, after = entries[benchmark]["figures"][name], text[marker.end():]
        if isinstance(value, str):
            if not after.lstrip().startswith(value):
                problems.append(f"{where}:{line}: {key} is {value!r}, the text reads {after.strip()[:30]!r}")
            continue
        values = value if isinstance(value, list) else [value]
        written = quoted_numbers(after, len(values))
        if len(written) not in (1, len(values)) or not all(map(_agrees, written, values)):
            problems.append(f"{where}:{line}: {key} is {value} in docs/measured.json, the text reads "
                            f"{after.strip()[:30]!r}")
    return problems


def _markdown(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.fixture(scope="module")
def measured():
    return json.loads(MEASURED.read_text(encoding="utf-8"))


def test_every_entry_says_where_when_and_on_what_it_was_measured(measured):
    assert measured["benchmarks"]
    for name, entry in measured["benchmarks"].items():
        assert entry["source"].startswith(("written by benchmarks/", "from README")), name
        datetime.date.fromisoformat(entry["date"])
        assert entry["machine"].get("cores") and ("cpu" in entry["machine"]), name
        assert entry["figures"] and not any("." in f for f in entry["figures"]), name


def test_the_readme_quotes_the_measured_figures(measured):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(MARKER.findall(_prose(readme))) >= 20  # the demo, generation, precision and scenario figures
    assert figure_problems(readme, measured, "README.md") == []


def test_the_readme_quotes_each_figure_once():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    twice = [key for key, n in Counter(MARKER.findall(_prose(readme))).items() if n > 1]
    assert twice == [], f"quote these once and refer to that place: {twice}"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_the_notebooks_markdown_quotes_the_measured_figures(measured, notebook):
    assert figure_problems(_markdown(notebook), measured, notebook.name) == []


def test_a_figure_that_differs_from_measured_json_is_caught(measured):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = MARKER.search(_prose(readme))
    number = NUMBER.search(readme, marker.end())
    changed = readme[:number.start()] + str(float(number.group()) + 1) + readme[number.end():]
    assert figure_problems(changed, measured, "README.md") != []
    entries = {"benchmarks": {"demo": {"figures": {"sft": [0.96, 0.9, 1.0], "ratio": 1.44, "d": [-0.02, -0.1, 0.06],
                                                   "best": "4-shot"}}}}
    good = ("<!-- measured: demo.sft -->0.96 [0.90-1.00], <!-- measured: demo.sft --> 0.96 | "
            "<!-- measured: demo.ratio -->1.4x, <!-- measured: demo.d -->-0.02 [-0.10, +0.06], "
            "<!-- measured: demo.best -->4-shot")
    assert figure_problems(good, entries, "t") == []
    for bad in ("<!-- measured: demo.sft -->0.96 [0.90-0.99]", "<!-- measured: demo.ratio -->1.3x",
                "<!-- measured: demo.d -->+0.02 [-0.10, +0.06]", "<!-- measured: demo.sft -->0.96 [0.90",
                "<!-- measured: demo.best -->3-shot", "<!-- measured: demo.missing -->1",
                "<!-- measured: demo.ratio -->about 1.4x"):
        assert figure_problems(bad, entries, "t") != [], bad


def test_record_writes_its_entry_with_the_machine_and_keeps_the_others(tmp_path, monkeypatch):
    measured = _measured_module()
    path = tmp_path / "docs" / "measured.json"
    monkeypatch.delenv("FTKIT_MEASURED", raising=False)
    measured.record("generation", {"batched_vs_one_at_a_time": 6.23456, "identical": "64/64"}, path=path)
    measured.record("demo", {"lora_sft": [0.958333, 0.9, 1.0], "steps": 96.0}, path=path)
    measured.record("generation", {"batched_vs_one_at_a_time": 5.0}, path=path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data["benchmarks"]) == ["demo", "generation"] and data["about"]
    generation, demo = data["benchmarks"]["generation"], data["benchmarks"]["demo"]
    assert generation["figures"] == {"batched_vs_one_at_a_time": 5.0}  # the entry is replaced, not merged
    assert demo["figures"] == {"lora_sft": [0.9583, 0.9, 1.0], "steps": 96}
    assert demo["date"] == datetime.date.today().isoformat() and demo["source"].startswith("written by ")
    assert {"cpu", "cores", "torch", "transformers"} <= set(demo["machine"])
    with pytest.raises(ValueError, match="without dots"):
        measured.record("demo", {"a.b": 1}, path=path)
    monkeypatch.setenv("FTKIT_MEASURED", "0")
    assert measured.record("demo", {"lora_sft": 0.1}, path=path) is None
    assert json.loads(path.read_text(encoding="utf-8"))["benchmarks"]["demo"]["figures"]["steps"] == 96
    assert measured.slug("SFT + DPO") == "sft_dpo" and measured.slug("8-shot") == "8_shot"
