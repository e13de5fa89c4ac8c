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
    root = Path(ftkit.__file__).parent.parent
    on_disk = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
               for p in (root / "ftkit").rglob("*.py")} - {"ftkit"}
    assert len(on_disk) > 60 and on_disk <= set(imported)  # a new module, in any package, cannot slip past


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


# The layers of every module (late imports included) are tests/test_layers.py's.


# --- a light top level ------------------------------------------------------------------------------------------
LIGHT = ("torch", "transformers", "peft", "trl", "datasets")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {LIGHT!r} if m in sys.modules))\n"
    return eval(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                               timeout=300).stdout.strip().splitlines()[-1])


def test_the_data_task_prompt_and_model_modules_import_no_model_library():
    modules = ["ftkit.data", "ftkit.data.canonical", "ftkit.data.report", "ftkit.data.lengths", "ftkit.data.splits",
               "ftkit.data.sources", "ftkit.data.languages", "ftkit.data.examples", "ftkit.data.examples.house",
               "ftkit.tasks", "ftkit.prompts", "ftkit.models", "ftkit.models.loading", "ftkit.models.device",
               "ftkit.models.conversion", "ftkit.models.families", "ftkit.models.threads"]
    assert _loaded_after("\n".join(f"import {m}" for m in modules)) == []
    # the public names still load the model stack on first use
    assert "torch" in _loaded_after("from ftkit import choose_device\nchoose_device('cpu')")


def test_the_data_file_checks_refuse_a_bad_file_without_a_model_library(tmp_path):
    """What refuses a data file (its kind, size, binary content, rows, columns, long rows) needs no
    model library: `ftkit run --check` says so before a tokenizer loads."""
    (tmp_path / "garbage.jsonl").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "rows.jsonl").write_text('{"text": "hi"}\n{"text": "' + "x" * 400_000 + '", "label": "a"}\n')
    code = (f"from ftkit.data.canonical import check_data\n"
            f"bad = check_data({str(tmp_path / 'garbage.jsonl')!r})\n"
            f"odd = check_data({str(tmp_path / 'rows.jsonl')!r}, long_rows='refuse')\n"
            "assert not bad.ok and 'binary' in bad.errors[0], bad.errors\n"
            "assert not odd.ok and 'row 1' in odd.errors[0], odd.errors\n")
    assert _loaded_after(code) == []


def test_import_ftkit_loads_no_model_library_and_load_model_still_imports():
    assert _loaded_after("import ftkit\nftkit.__version__") == []
    assert _loaded_after("from ftkit import load_model, check_data, load_data, split") == []
    # the names a notebook written before the stage packages imports (the lab launcher's cards too)
    assert _loaded_after("from ftkit import describe_device, examples, load_model\n"
                         "assert examples.__name__ == 'ftkit.data.examples' and examples.names()") == []


def test_import_ftkit_cli_loads_no_model_library():
    assert _loaded_after("import ftkit.cli, ftkit.config") == []


def test_ftkit_help_and_ftkit_runs_load_no_model_library(tmp_path):
    run = "import sys\nfrom ftkit.__main__ import main\n"
    assert _loaded_after(run + "try:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []
    assert _loaded_after(run + f"main(['runs', '--root', {str(tmp_path / 'none')!r}])") == []


def test_run_check_refuses_a_bad_number_and_a_bad_data_file_without_a_model_library(tmp_path):
    (tmp_path / "rows.jsonl").write_text("".join(f'{{"text": "m{i}", "label": "ab"}}\n' for i in range(8)))
    (tmp_path / "number.yaml").write_text("data: {source: rows.jsonl}\nsft: {batch_size: -3}\n")
    (tmp_path / "garbage.jsonl").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "data.yaml").write_text("data: {source: garbage.jsonl}\n")
    run = "from ftkit.__main__ import main\n"
    for config in ("number.yaml", "data.yaml"):
        code = run + f"assert main(['run', '--check', {str(tmp_path / config)!r}]) == 2"
        assert _loaded_after(code) == [], config
