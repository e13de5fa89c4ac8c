"""Hostile config files: deep nesting, YAML alias bombs, binary garbage, paths that are no file,
and numbers outside their meaning.

The contract: ``load_config`` gives a :class:`PipelineConfig` whose every number lies in the range
its field declares, or a :class:`ConfigError` that names the file and the key, before it costs time
or memory; never another exception. ``ftkit run --check`` says it in one line and exits 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ftkit.cli import main
from ftkit.config import ConfigError, PipelineConfig, config_from_dict, describe, load_config
from ftkit.generation.endpoint import Endpoint

# The contract, stated here rather than imported: a config file nests at most 32 levels, its YAML
# aliases expand to at most 1,000 values, and a number's field declares its range with these keys.
MAX_DEPTH, MAX_ALIAS_VALUES = 32, 1_000
RANGE_KEYS = ("min", "max", "above", "below")

# No example database: nothing is written into the checkout (.hypothesis/).
SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
REPO = Path(__file__).resolve().parents[1]

# Endpoint's bounds are checked by Endpoint.problems() in ftkit/generation/endpoint.py, not declared in its
# metadata yet; this table states them, and the walk below fails on an Endpoint number not in it.
ENDPOINT_RANGES = {"max_concurrency": {"min": 1}, "timeout_s": {"above": 0}, "max_retries": {"min": 0},
                   "price_per_million_input": {"min": 0}, "price_per_million_output": {"min": 0}}
# What a config needs around a key for the rest of it to be valid.
ENDPOINT_BASE = {"model": "gpt-4o-mini", "api_key_env": None}


# --- every number of the config, with its range ----------------------------------------------------

def numeric_fields(cls=PipelineConfig, steps=()):
    """``(steps, owner, field, kind)`` for every int/float field (Optional too) reachable from ``cls``;
    ``steps`` is the key path, with 0 for the first item of a list of sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
            yield from numeric_fields(args[0], (*steps, f.name, 0))
            continue
        nested = next((a for a in (tp, *args) if dataclasses.is_dataclass(a)), None)
        if nested is not None:
            yield from numeric_fields(nested, (*steps, f.name))
            continue
        kind = next((a for a in (tp, *args) if a in (int, float)), None)
        if kind is not None:
            yield steps + (f.name,), cls, f, kind


FIELDS = list(numeric_fields())


def dotted(steps) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(steps))


def declared(owner, f) -> dict:
    return ENDPOINT_RANGES[f.name] if owner is Endpoint else {k: f.metadata[k] for k in (*RANGE_KEYS, "also")
                                                               if k in f.metadata}


def config_with(steps, value) -> dict:
    """A config dict that sets only ``steps`` to ``value`` (an endpoint gets a model)."""
    root: dict = {}
    node = root
    for step, following in zip(steps, steps[1:]):
        if isinstance(following, int):
            node[step] = [{}]
            node = node[step][0]
        elif not isinstance(step, int):
            node[step] = dict(ENDPOINT_BASE) if step == "endpoint" else {}
            node = node[step]
    node[steps[-1]] = value
    return root


def read_back(config, steps):
    for step in steps:
        config = config[step] if isinstance(step, int) else getattr(config, step)
    return config


def named(message: str, steps, owner) -> bool:
    """The problem names the key: its path, or (Endpoint.problems()) the endpoint's path and the name."""
    if dotted(steps) in message:
        return True
    return owner is Endpoint and f"{dotted(steps[:-1])}: {steps[-1]}" in message


def outside_and_at(bounds: dict, kind):
    """Values just outside the declared range, and values at its bounds (inside)."""
    step_down = (lambda v: v - 1) if kind is int else (lambda v: math.nextafter(v, -math.inf))
    step_up = (lambda v: v + 1) if kind is int else (lambda v: math.nextafter(v, math.inf))
    outside, at = [], list(bounds.get("also", ()))
    if "min" in bounds:
        outside.append(step_down(bounds["min"]))
        at.append(bounds["min"])
    if "above" in bounds:
        outside.append(bounds["above"])
        at.append(step_up(bounds["above"]))
    if "max" in bounds:
        outside.append(step_up(bounds["max"]))
        at.append(bounds["max"])
    if "below" in bounds:
        outside.append(bounds["below"])
        at.append(step_down(bounds["below"]))
    return [v for v in outside if v not in bounds.get("also", ())], at


def inside(bounds: dict, value) -> bool:
    if value in bounds.get("also", ()):
        return True
    return (isinstance(value, int) or math.isfinite(value)) and all((
        "min" not in bounds or value >= bounds["min"], "above" not in bounds or value > bounds["above"],
        "max" not in bounds or value <= bounds["max"], "below" not in bounds or value < bounds["below"]))


def test_hostile_every_number_declares_its_range_and_is_refused_just_outside_it(tmp_path):
    assert len(FIELDS) > 30  # the walk reaches the stages, LoRA, the templates and their endpoints
    assert {f.name for _, owner, f, _ in FIELDS if owner is Endpoint} == set(ENDPOINT_RANGES)
    for steps, owner, f, kind in FIELDS:
        bounds = declared(owner, f)
        assert set(bounds) & set(RANGE_KEYS), f"{dotted(steps)} declares no range: add min/max/above/below"
        outside, at = outside_and_at(bounds, kind)
        for value in outside:
            with pytest.raises(ConfigError) as err:
                config_from_dict(config_with(steps, value), base=tmp_path)
            assert named(str(err.value), steps, owner), (value, str(err.value))
        for value in at:
            assert read_back(config_from_dict(config_with(steps, value), base=tmp_path), steps) == value


def test_hostile_the_testers_numbers_are_refused_together_naming_each_key(tmp_path):
    bad = {"data": {"limit": -4}, "sft": {"batch_size": -3, "max_steps": 0, "learning_rate": -1, "epochs": -2,
                                          "save_steps": 0, "lora": {"r": 0}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(bad, base=tmp_path)
    assert err.value.problems == [
        "data.limit: -4 is below its minimum 0; allowed: >= 0",
        "sft.batch_size: -3 is below its minimum 1; allowed: >= 1",
        "sft.max_steps: 0 is below its minimum 1; allowed: >= 1, or -1",
        "sft.learning_rate: -1.0 is not above 0; allowed: > 0 and <= 1",
        "sft.epochs: -2.0 is not above 0; allowed: > 0",
        "sft.save_steps: 0 is below its minimum 1; allowed: >= 1",
        "sft.lora.r: 0 is below its minimum 1; allowed: >= 1"]
    # max_length 0 is the stages' default: the task's length, fitted to the rows (MAX_LENGTH_HELP).
    assert config_from_dict({"sft": {"max_length": 0}}, base=tmp_path).sft.max_length == 0
    # NaN passes every comparison unseen, and YAML and JSON both write it.
    with pytest.raises(ConfigError, match=r"sft.lora.dropout: nan is not a finite number; allowed: >= 0 and < 1"):
        config_from_dict({"sft": {"lora": {"dropout": float("nan")}}}, base=tmp_path)
    assert "batch_size: 4  # Examples (DPO: preference pairs) per step [>= 1]" in describe()  # --help says it


number = st.one_of(st.integers(), st.integers(min_value=-2, max_value=3), st.floats(),
                   st.sampled_from([0, -1, 1, 0.0, 1.0, 2**32 - 1, 2**32, 2**53, 10**400, -(10**400),
                                    float("nan"), float("inf"), True, None, "1", [1]]))


@SETTINGS
@given(st.sampled_from(FIELDS), number)
@example(next(x for x in FIELDS if x[2].name == "learning_rate"), 10**400)
def test_hostile_random_numbers_are_refused_by_key_or_lie_in_the_declared_range(spot, value):
    steps, owner, f, kind = spot
    try:
        config = config_from_dict(config_with(steps, value))
    except ConfigError as err:
        assert named(str(err), steps, owner), str(err)
        return
    got = read_back(config, steps)
    assert got is None or inside(declared(owner, f), got), (dotted(steps), got)


# --- files that are no config ----------------------------------------------------------------------

def billion_laughs(levels=9, fanout=9, place="metrics: *{last}") -> str:
    lines = ['a: &a [' + ", ".join(['"lol"'] * fanout) + ']']
    names = "abcdefghijklmnopqrstuvwxyz"
    for prev, cur in zip(names[:levels - 1], names[1:levels]):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * fanout) + "]")
    return "\n".join(lines) + "\n" + place.format(last=names[levels - 1]) + "\n"


HOSTILE_FILES = {
    "deep.json": ('{"sft": {"trl": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}}", "nested deeper than 32 levels"),
    "deep.yaml": ("sft: {trl: {x: " + "[" * 100_000 + "]" * 100_000 + "}}\n", "nested deeper than 32 levels"),
    "lol.yaml": (billion_laughs(), "uses 1,000+ alias expansions"),
    "garbage.yaml": (b"sft: {}\n" + bytes(range(256)) * 4, "is not UTF-8 text (byte 0x80 at offset 136)"),
    "garbage.json": (bytes(range(255, -1, -1)), "is not UTF-8 text (byte 0xff at offset 0)"),
    "big.yaml": ("# a data file, not a config\n" * 40_000, "is larger than 1,000,000 bytes"),
    "self.yaml": ("sft: {trl: &a {x: [*a]}}\n", "refers to a value that contains it"),
}


def write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_hostile_files_are_refused_with_one_line_naming_the_file(name, tmp_path):
    content, says = HOSTILE_FILES[name]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, name, content))
    message = str(err.value)
    assert says in message and name in message and "\n" not in message, message


def test_hostile_paths_that_are_no_file_say_what_they_are_and_never_wait(tmp_path):
    os.mkfifo(tmp_path / "pipeline.yaml")  # open() would wait here for a writer forever
    (tmp_path / "configs.yaml").mkdir()
    for path, what in ((tmp_path / "pipeline.yaml", "is a FIFO (named pipe), not a file"),
                       (tmp_path / "configs.yaml", "is a directory, not a file"),
                       (Path("/dev/null"), "is a character device, not a file")):
        with pytest.raises(ConfigError, match=re.escape(f"{path} {what}")):
            load_config(path)


def test_hostile_yaml_anchors_a_config_really_uses_still_work(tmp_path):
    path = write(tmp_path, "p.yaml", textwrap.dedent("""\
        sft: &train {epochs: 1, batch_size: 2, lora: &lora {r: 4, alpha: 8}}
        dpo: {<<: *train, beta: 0.2, lora: *lora}
        """))
    config = load_config(path)
    assert (config.dpo.epochs, config.dpo.batch_size, config.dpo.beta, config.dpo.lora.r) == (1, 2, 0.2, 4)


def nested_config(depth: int, style: str, opener: str, key: str) -> tuple[str, int]:
    """A config whose ``key`` holds a value ``depth`` collections deep, written in ``style``, and
    the whole file's depth (the root mapping and the sections around the value count)."""
    around = ["sft", "trl", "x"] if key == "trl" else [key]  # trl passes through: any value is valid
    if style in ("json", "flow"):
        text = "[" * depth + "1" + "]" * depth if opener == "[" else '{"k": ' * depth + "1" + "}" * depth
        for k in reversed(around):
            text = f'{{"{k}": {text}}}'
    else:
        lines = ["  " * i + f"{k}:" for i, k in enumerate(around)]
        pad = "  " * len(around)
        lines += [pad + "- " * depth + "1"] if opener == "[" else \
            [pad + "  " * i + ("k: 1" if i == depth - 1 else "k:") for i in range(depth)]
        text = "\n".join(lines) + "\n"
    return text, len(around) + depth


@SETTINGS
@given(depth=st.integers(1, 70), style=st.sampled_from(["json", "flow", "block"]), opener=st.sampled_from("[{"),
       key=st.sampled_from(["metrics", "data", "task", "trl"]))
def test_hostile_random_nesting_is_read_or_refused_by_depth_never_a_crash(depth, style, opener, key):
    text, total = nested_config(depth, style, opener, key)
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "c.json" if style == "json" else "c.yaml", text)
        try:
            load_config(path)
        except ConfigError as err:
            assert path.name in str(err)
            assert (f"nested deeper than {MAX_DEPTH} levels" in str(err)) == (total > MAX_DEPTH), (total, str(err))
        else:
            assert total <= MAX_DEPTH


@SETTINGS
@given(levels=st.integers(1, 40), fanout=st.integers(1, 12),
       place=st.sampled_from(["metrics: *{last}", "dpo: {{trl: {{x: *{last}}}}}", "data: *{last}",
                              "dpo: {{trl: {{x: *{last}, y: [*{last}, *{last}]}}}}", "dpo: {{trl: {{x: *nowhere}}}}",
                              "dpo: {{trl: &self {{x: [*self]}}}}"]))
def test_hostile_random_alias_structures_are_read_or_refused_before_they_grow(levels, fanout, place):
    # Level 1 is a list of `fanout` strings, level k a list of `fanout` aliases of level k - 1, all
    # under sft.trl (passed through to TRL, so they are valid there); `place` uses the last level.
    lines = ["sft:", "  trl:", "    l1: &l1 [" + ", ".join(['"lol"'] * fanout) + "]"]
    lines += [f"    l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * fanout) + "]" for k in range(2, levels + 1)]
    lines.append(place.format(last=f"l{levels}"))
    sizes = [1 + fanout]  # the values each level expands to
    for _ in range(levels - 1):
        sizes.append(1 + fanout * sizes[-1])
    expanded = fanout * sum(sizes[:-1]) + sizes[-1] * place.count("*{last}")
    depth = 3 + levels  # the root mapping, sft, trl, then the levels
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_config(write(Path(folder), "lol.yaml", "\n".join(lines) + "\n"))
        except ConfigError as err:
            message = str(err)
            assert "lol.yaml" in message
            broken = "nowhere" in place or "self" in place      # its own error may come first
            if (expanded > MAX_ALIAS_VALUES or depth > MAX_DEPTH) and not broken:
                assert "alias expansions" in message or "nested deeper" in message, message
        else:
            assert expanded <= MAX_ALIAS_VALUES and depth <= MAX_DEPTH and "*" not in place.replace("*{last}", "")


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from(["c.yaml", "c.json"]),
       st.sampled_from([b"", b"sft: {epochs: ", b'{"sft": {"lora": ', b"\xef\xbb\xbf", b"a: &a ["]))
@example(b"\x80", "c.yaml", b"")
@example(b"1" * 5000, "c.json", b'{"max_new_tokens": ')  # past Python's 4,300-digit limit for int()
@example(b"2024-13-45}", "c.yaml", b"sft: {epochs: ")   # a YAML date no calendar has
def test_hostile_random_bytes_give_a_config_or_a_config_error_naming_the_file(data, name, prefix):
    with tempfile.TemporaryDirectory() as folder:
        try:
            config = load_config(write(Path(folder), name, prefix + data))
        except ConfigError as err:
            assert name in str(err) or "no config file" in str(err)
        else:
            assert isinstance(config, PipelineConfig)


# --- ftkit run --check ----------------------------------------------------------------------------

CLI_CASES = {
    **{f"{key.replace('.', '_')}.yaml": (text, key) for key, text in [
        ("sft.batch_size", "sft: {batch_size: -3}"), ("sft.max_steps", "sft: {max_steps: 0}"),
        ("sft.learning_rate", "sft: {learning_rate: -1}"), ("sft.epochs", "sft: {epochs: -2}"),
        ("sft.save_steps", "sft: {save_steps: 0}"), ("sft.lora.r", "sft: {lora: {r: 0}}"),
        ("data.limit", "data: {limit: -4}"), ("dpo.beta", "dpo: {beta: 0}")]},
    **{name: (content, says) for name, (content, says) in HOSTILE_FILES.items()},
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_hostile_check_refuses_each_bad_config_in_one_line_naming_file_and_key(name, tmp_path, capsys):
    content, key = CLI_CASES[name]
    path = write(tmp_path, name, content)
    assert main(["run", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err and key in err and "Traceback" not in err, err


def test_hostile_check_on_a_fifo_says_so_without_waiting_for_a_writer(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipeline.yaml")
    assert main(["run", "--check", str(tmp_path / "pipeline.yaml")]) == 2
    assert "pipeline.yaml is a FIFO (named pipe), not a file" in capsys.readouterr().err


# The child's own peak, reported by a wrapper process: RUSAGE_CHILDREN here would count every
# child this test session ever waited for. The address-space cap only guards this machine from
# an unfixed loader (the billion laughs grew past 1 GB); the assertion is on the peak it reports.
MEASURE = """
import resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
child = subprocess.run([sys.executable, "-m", "ftkit", "run", "--check", sys.argv[1]], capture_output=True,
                       text=True, preexec_fn=cap)
sys.stderr.write(child.stderr)
print(child.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.parametrize("name", ["lol.yaml", "deep.json", "deep.yaml"])
def test_hostile_check_refuses_bombs_in_a_process_that_stays_under_500_mb(name, tmp_path):
    content, says = HOSTILE_FILES[name]
    path = write(tmp_path, name, content)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    code, peak_kb = map(int, done.stdout.split())
    assert code == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr and "Traceback" not in done.stderr
    assert peak_kb < 500 * 1024, f"--check on {name} peaked at {peak_kb / 1024:.0f} MB"


@pytest.mark.parametrize("argv", [["--limit", "-4"], ["--max-steps", "0"], ["--sft-minutes", "-1"],
                                  ["--dpo-minutes", "nan"], ["--limit", "0"]])
def test_hostile_demo_flags_out_of_range_are_refused_by_name(argv, capsys):
    from ftkit.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and argv[1] in err and "Traceback" not in err
