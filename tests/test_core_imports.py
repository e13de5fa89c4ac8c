"""The core works in a script, a test or a CLI: no ftkit module may import UI packages."""

import subprocess
import sys
import textwrap
from pathlib import Path

import ftkit

BLOCKER = textwrap.dedent("""
    import importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"ipywidgets", "IPython", "anywidget", "ipykernel"}:
                raise ImportError(f"{name} is blocked: the ftkit core must not import it")

    sys.meta_path.insert(0, Block())
    import ftkit
    names = [m.name for m in pkgutil.walk_packages(ftkit.__path__, "ftkit.")
             if not m.name.startswith("ftkit.widgets")]
    for name in names:
        __import__(name)
    print("imported", len(names), "modules:", " ".join(sorted(names)))
""")


def test_every_core_module_imports_without_ui_packages():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = result.stdout.split(":", 1)[1].split()
    on_disk = {p.stem for p in Path(ftkit.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert {f"ftkit.{m}" for m in on_disk} <= set(imported)  # a new module cannot slip past


def test_the_blocker_does_block():
    code = BLOCKER.replace("import ftkit\n", "import ftkit\nimport ipywidgets\n", 1)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "ipywidgets is blocked" in result.stderr
