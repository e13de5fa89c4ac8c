"""Every way ftkit is run or installed: `python -m ftkit`, and ftkit.widgets from the repository root.

The panels live in widgets/ and install as ftkit.widgets. A notebook or console started at the
repository root has '' (the root) first on sys.path, so `import ftkit` finds the source folder
ftkit/ (no widgets/ in it) before the installed package: with a non-editable install (binder's
`pip install --no-deps .`) `import ftkit.widgets` failed there. ftkit/_source_tree.py fixes it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from importlib.machinery import PathFinder
from pathlib import Path

import pytest
from test_packaging import assert_no_deprecation_banner, require_build_backend, source_copy

import ftkit
from ftkit import _source_tree

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["demo", "run", "runs", "report", "launch"]

# What the subprocesses print: where ftkit and ftkit.widgets came from, and whether the hook is on.
REPORT = ("import json, sys, ftkit, ftkit.widgets; "
          "print(json.dumps({'path0': sys.path[0], 'ftkit': ftkit.__file__, 'widgets': ftkit.widgets.__file__, "
          "'panel': ftkit.widgets.DataPanel.__name__, "
          "'hook': any(getattr(f, '_ftkit_source_tree', False) for f in sys.meta_path)}))")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # no PYTHONPATH & co.
    env.update(COLUMNS="100", **extra)  # the same help layout in every process
    return env


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


# --- python -m ftkit -------------------------------------------------------------------------------

def test_python_m_ftkit_help_is_the_ftkit_command_help(tmp_path):
    result = run([sys.executable, "-m", "ftkit", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: ftkit ")
    for name in SUBCOMMANDS:
        assert name in result.stdout.split("\n", 1)[0]  # usage: ftkit [-h] {demo,run,train,runs,report,launch}
    script = Path(sys.executable).with_name("ftkit")  # the console script of this environment
    if script.is_file():
        expected = run([str(script), "--help"], cwd=tmp_path)
        assert expected.returncode == 0, expected.stderr[-2000:]
        assert result.stdout == expected.stdout
    else:
        from ftkit.cli import build_parser

        assert "positional arguments" in build_parser().format_help()


def test_python_m_ftkit_runs_and_exit_code(tmp_path):
    empty = tmp_path / "runs"
    empty.mkdir()
    result = run([sys.executable, "-m", "ftkit", "runs", "--root", str(empty)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no runs under" in result.stdout
    bad = run([sys.executable, "-m", "ftkit", "run", str(tmp_path / "missing.yaml")], cwd=tmp_path)
    assert bad.returncode == 2 and "no config file" in bad.stderr  # main()'s return code reaches the shell


# --- ftkit.widgets from the repository root ------------------------------------------------------

@pytest.fixture(scope="module")
def non_editable(tmp_path_factory) -> Path:
    """ftkit installed as binder's postBuild does (`pip install --no-deps .`), into a target folder.

    Built from a copy of the checkout, offline: the venv's build backend (hatchling, in the dev
    extra) builds it (--no-build-isolation --no-index). Takes about a second.
    """
    require_build_backend()
    tmp = tmp_path_factory.mktemp("non-editable")
    src = source_copy(tmp / "src")
    target = tmp / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", "--target", str(target), str(src)],
                            env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_deprecation_banner(result)
    assert (target / "ftkit" / "widgets" / "__init__.py").is_file()
    return target


def import_without_site(target: Path, cwd: Path) -> dict:
    """`import ftkit, ftkit.widgets` as a Python whose site-packages hold the non-editable install.

    -S: the venv's .pth files (the editable install's finder, which maps ftkit.widgets to widgets/
    and would hide the problem) are not processed. sys.path is then what a notebook kernel has:
    '' (the current folder) first, the standard library, then site-packages: here the target
    folder (ftkit) and the venv's purelib (torch, ipywidgets...), without their .pth files.
    """
    purelib = sysconfig.get_paths()["purelib"]
    code = (f"import sys; assert sys.path[0] == '', sys.path; "
            f"sys.path += [{str(target)!r}, {purelib!r}]; " + REPORT)
    result = run([sys.executable, "-S", "-c", code], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_non_editable_install_imports_widgets_from_the_repository_root(non_editable):
    seen = import_without_site(non_editable, cwd=ROOT)
    # The source folder shadows the installed package (that is the situation being tested) ...
    assert seen["path0"] == "" and Path(seen["ftkit"]) == ROOT / "ftkit" / "__init__.py"
    # ... and ftkit.widgets still imports: from widgets/, beside it.
    assert Path(seen["widgets"]) == ROOT / "widgets" / "__init__.py"
    assert seen["panel"] == "DataPanel" and seen["hook"]


def test_non_editable_install_is_complete_from_another_folder(non_editable, tmp_path):
    seen = import_without_site(non_editable, cwd=tmp_path)
    assert Path(seen["ftkit"]) == non_editable / "ftkit" / "__init__.py"
    assert Path(seen["widgets"]) == non_editable / "ftkit" / "widgets" / "__init__.py"
    assert seen["panel"] == "DataPanel" and not seen["hook"]  # an installed ftkit needs no hook


def installed_from() -> tuple[Path | None, bool]:
    """The folder this environment's ftkit was pip-installed from, and whether editably."""
    purelib = sysconfig.get_paths()["purelib"]
    for dist in importlib.metadata.distributions(name="ftkit", path=[purelib]):
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("url", "").startswith("file://"):
            return Path(direct["url"][len("file://"):]).resolve(), direct.get("dir_info", {}).get("editable", False)
    return None, False


def test_this_environment_imports_widgets_from_the_repository_root():
    """This environment (the Makefile's `pip install -e .`), .pth files and all, from the root."""
    result = run([sys.executable, "-c", REPORT], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(seen["ftkit"]) == ROOT / "ftkit" / "__init__.py" and seen["panel"] == "DataPanel"
    source, editable = installed_from()
    if not editable or source == ROOT:  # an editable install of another checkout maps to its widgets/
        assert Path(seen["widgets"]) == ROOT / "widgets" / "__init__.py"


# --- the hook itself -------------------------------------------------------------------------------

def test_hook_resolves_only_ftkit_widgets_and_registers_once(tmp_path):
    package = Path(ftkit.__file__).resolve().parent
    finders = [f for f in sys.meta_path if getattr(f, "_ftkit_source_tree", False)]
    if package != ROOT / "ftkit":
        pytest.skip(f"ftkit is imported from {package}, not from this checkout")
    # One finder, after the normal path search: it only answers when that found nothing.
    assert len(finders) == 1 and sys.meta_path.index(finders[0]) > sys.meta_path.index(PathFinder)
    assert _source_tree.install() is finders[0]  # a second import or a reload adds nothing
    assert len([f for f in sys.meta_path if getattr(f, "_ftkit_source_tree", False)]) == 1

    finder = finders[0]
    spec = finder.find_spec("ftkit.widgets", [str(package)])
    assert spec.origin == str(ROOT / "widgets" / "__init__.py")
    assert spec.submodule_search_locations == [str(ROOT / "widgets")]
    for name in ["ftkit.tests", "ftkit.notebooks", "widgets", "ftkit.widgets.data_panel"]:
        assert finder.find_spec(name, [str(package)]) is None
    assert finder.find_spec("ftkit.widgets", [str(tmp_path)]) is None  # another ftkit package
    assert finder.find_spec("ftkit.widgets", None) is None
    assert not any(Path(p).resolve() == ROOT for p in ftkit.__path__)  # the root is no ftkit.* folder


def test_hook_stays_off_for_an_installed_ftkit(tmp_path):
    installed = tmp_path / "site" / "ftkit"
    (installed / "widgets").mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (installed / "widgets" / "__init__.py").write_text("")
    before = list(sys.meta_path)
    assert _source_tree.install(str(installed / "__init__.py")) is None
    # A stray top-level `widgets` package in site-packages is not a checkout either (no pyproject.toml).
    (tmp_path / "site" / "widgets").mkdir()
    (tmp_path / "site" / "widgets" / "__init__.py").write_text("")
    assert _source_tree.install(str(installed / "__init__.py")) is None
    assert sys.meta_path == before
