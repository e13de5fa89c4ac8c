"""The house rules of ftkit/, read from the source: imports run one way, and modules stay readable.

Data flows file -> data -> tasks/prompts/retrieval -> models -> generation -> training -> evaluation -> export
-> serving -> config -> the recipes (pipeline, report) -> the lab extension and the command line. A
module may import from its own layer or below, never above, and no set of modules imports itself
round: a late import inside a function counts like one at the top, so a cycle cannot hide there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ftkit"

# Lowest first. A module's layer is that of the longest prefix listed here.
LAYERS = [
    ["ftkit._lazy", "ftkit._source_tree", "ftkit.budget", "ftkit.config_file", "ftkit.runs", "ftkit.fastpath",
     "ftkit.fastpath.prefix", "ftkit.models.threads"],
    ["ftkit.data"],
    ["ftkit.prompts", "ftkit.retrieval", "ftkit.tasks"],
    ["ftkit.models"],
    ["ftkit.fastpath.*"],
    ["ftkit.generation"],
    ["ftkit.training"],
    ["ftkit.evaluation"],
    ["ftkit.export"],
    ["ftkit.serving"],
    ["ftkit.config"],
    ["ftkit.preparation", "ftkit.pipeline", "ftkit.estimate", "ftkit.report"],
    ["ftkit.lab", "ftkit.cli", "ftkit.__main__", "ftkit"],
]

# Longer than this, a module says at the top of its docstring why it is one module.
MAX_LINES = 400
WHY = "over 400 lines because"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "labextension" not in p.parts}


def layer(name: str) -> int:
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for entry in names:
            if entry.endswith(".*"):
                prefix = entry[:-2]
                hit = name.startswith(prefix + ".") and len(prefix) + 1 > best_len
                size = len(prefix) + 1
            else:
                hit = (name == entry or name.startswith(entry + ".")) and len(entry) > best_len
                size = len(entry)
            if hit:
                best, best_len = i, size
    assert best is not None, f"{name} has no layer: add it to LAYERS in {__file__}"
    return best


def ftkit_imports(name: str, path: Path) -> set[str]:
    """Every ftkit module ``name`` imports, at its top or inside a function."""
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from ftkit.data import sources` imports the module ftkit.data.sources
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                       for a in node.names]
        for target in targets:
            if target == "ftkit" or target.startswith("ftkit."):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    return {name: ftkit_imports(name, path) for name, path in modules().items()}


def test_imports_never_go_up_a_layer():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph().items() for b in sorted(targets)
              if layer(b) > layer(a)]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_long_modules_say_why():
    long = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if WHY not in " ".join(doc.split()):
                long.append(f"{name}: {lines} lines, and its docstring does not say why ('... {WHY} ...')")
    assert not long, "\n".join(long)


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


@pytest.mark.parametrize("a, b, ok", [("ftkit.data.sources", "ftkit.runs", True),
                                      ("ftkit.runs", "ftkit.export.check", False),
                                      ("ftkit.fastpath.dpo_lean", "ftkit.fastpath.prefix", True),
                                      ("ftkit.fastpath.dpo_lean", "ftkit.training.settings", False),
                                      ("ftkit.cli", "ftkit.pipeline", True),
                                      ("ftkit.evaluation.judge", "ftkit.generation.backend", True),
                                      ("ftkit.generation.endpoint", "ftkit.evaluation.judge", False)])
def test_the_layer_rule_itself(a, b, ok):
    assert (layer(b) <= layer(a)) is ok


def test_a_late_import_inside_a_function_is_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ftkit import tasks\n    from ftkit.evaluation import metrics\n")
    assert {"ftkit.tasks", "ftkit.evaluation.metrics"} <= ftkit_imports("ftkit.data.probe", probe)
