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


HEAVY = ("torch", "transformers", "datasets", "pandas", "peft", "trl")


def test_import_ftkit_and_its_config_reader_load_no_heavy_library():
    """`import ftkit` is light (its names load on first use), and so is the config reader that
    `ftkit run` calls before anything else."""
    code = ("import sys, ftkit, ftkit.config_file, ftkit.__main__\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
            "print(ftkit.load_data.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "ftkit.data.canonical"


def test_hostile_a_config_bomb_is_refused_before_torch_loads(tmp_path):
    """`ftkit run --check` on a file that is no config: one line, exit 2, within a 300 MB address
    space (torch alone maps GBs of it): the file was refused before the kit loaded."""
    import resource

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    limit = 300 << 20
    proc = subprocess.run([sys.executable, "-m", "ftkit", "run", "--check", str(deep)], capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "ftkit: invalid config: deep.json: nested deeper than 32 levels at line 1; a config is a few levels deep "
        "(a section, its keys, a list of templates)"]
