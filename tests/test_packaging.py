"""ftkit.widgets comes from widgets/; it must import from the editable install and a built wheel.

The build backend is hatchling (pyproject.toml); a build prints no packaging deprecation banner
(setuptools' data-files and the setup.py that made its editable install copy them printed a page).
"""

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_copy(folder: Path) -> Path:
    """What a build reads, copied out of the checkout: the build sees these files only (no runs/,
    caches or a local .gitignore), and nothing is written into the repository."""
    folder.mkdir(parents=True)
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, folder / name)
    # ftkit/ holds the built lab extension; jupyter-config/ and notebooks/ are data files.
    for name in ["ftkit", "widgets", "jupyter-config", "notebooks"]:
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def require_build_backend() -> None:
    """For an offline build with this environment's backend (no build isolation, no index)."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail("hatchling, ftkit's build backend, is not installed in this environment: "
                    "run `make setup` (the dev extra installs it)")


def assert_no_deprecation_banner(result: subprocess.CompletedProcess) -> None:
    """What a build or an install printed (pip shows the backend's warnings even with -q)."""
    output = result.stdout + result.stderr
    output = output.decode(errors="replace") if isinstance(output, bytes) else output
    assert "deprecat" not in output.lower(), output[-5000:]
    assert "BuildBackendWarning" not in output, output[-5000:]


def test_widgets_import_from_this_install():
    import ftkit.widgets

    assert Path(ftkit.widgets.__file__).parent.name == "widgets"


def test_built_wheel_holds_widgets_and_example_data_and_imports(tmp_path):
    src = source_copy(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], check=True, capture_output=True, timeout=600)
    assert_no_deprecation_banner(built)
    wheel = next((tmp_path / "dist").glob("ftkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ftkit/widgets/__init__.py", "ftkit/data/examples/data/support_routing.jsonl",
            "ftkit/data/examples/data/support_routing_preferences.jsonl", "ftkit/models/loading.py"} <= names
    assert not any(n.startswith(("widgets/", "tests/", "notebooks/", "jupyter-config/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
    assert "ftkit = ftkit.__main__:main" in entry_points.decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    code = ("import ftkit.widgets, ftkit.data.examples as e; print(ftkit.widgets.__file__); "
            "print(len(e.load('support_routing', verbose=False)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    widgets_file, rows = out.stdout.split()
    assert widgets_file == str(target / "ftkit" / "widgets" / "__init__.py")
    assert int(rows) >= 400


def test_editable_wheel_copies_the_data_files_and_imports_from_the_checkout(tmp_path):
    """What `pip install -e .` (`make setup`) installs: the wheel the backend's PEP 660 hook builds.

    It carries the lab extension, its server switch and the tour as data files (the venv's share/
    and etc/, where Jupyter looks; tests/lab/test_labextension.py checks this environment's), and no
    copy of the package: ftkit imports from the checkout, ftkit.widgets from its widgets/. Built
    offline with this venv's backend (the dev extra has it), no pip and no index.
    """
    require_build_backend()
    src = source_copy(tmp_path / "src")
    code = "import sys, build; print(build.ProjectBuilder(sys.argv[1]).build('editable', sys.argv[2]))"
    built = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert_no_deprecation_banner(built)
    wheel = zipfile.ZipFile(built.stdout.strip().splitlines()[-1])
    names = wheel.namelist()
    data = next(n.split(".data/data/")[0] for n in names if ".data/data/" in n) + ".data/data/"
    assert {data + "share/jupyter/labextensions/ftkit-labextension/package.json",
            data + "share/jupyter/labextensions/ftkit-labextension/install.json",
            data + "share/jupyter/labextensions/ftkit-labextension/schemas/ftkit-labextension/plugin.json",
            data + "etc/jupyter/jupyter_server_config.d/ftkit.json"} <= set(names)
    assert any(n.startswith(data + "share/jupyter/labextensions/ftkit-labextension/static/") for n in names)
    assert sorted(n[len(data + "share/ftkit/notebooks/"):] for n in names
                  if n.startswith(data + "share/ftkit/notebooks/")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert not any(n.startswith("ftkit/") for n in names), "an editable install copies no package files"

    # Its site-packages part (a .pth file, or a finder), processed as site does for a venv, from
    # another folder (so '' on sys.path finds nothing); the venv's purelib after it, without its
    # .pth files (-S), for ipywidgets & co.
    site = tmp_path / "site"
    for name in names:
        if not name.split("/")[0].endswith((".data", ".dist-info")):
            wheel.extract(name, site)
    purelib = sysconfig.get_paths()["purelib"]
    report = (f"import site, sys; site.addsitedir({str(site)!r}); sys.path.append({purelib!r}); "
              "import ftkit, ftkit.widgets; print(ftkit.__file__); print(ftkit.widgets.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", report], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ftkit_file, widgets_file = out.stdout.split()
    assert Path(ftkit_file) == src / "ftkit" / "__init__.py"
    assert Path(widgets_file) == src / "widgets" / "__init__.py"
