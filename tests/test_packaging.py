"""ftkit.widgets comes from widgets/; it must import from the editable install and a built wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_copy(folder: Path) -> Path:
    """What a build reads, copied out of the checkout (an in-tree build writes build/ and
    ftkit.egg-info into the repository)."""
    folder.mkdir(parents=True)
    for name in ["pyproject.toml", "setup.py", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, folder / name)
    # ftkit/ holds the built lab extension; jupyter-config/ and notebooks/ are data files.
    for name in ["ftkit", "widgets", "jupyter-config", "notebooks"]:
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_widgets_import_from_this_install():
    import ftkit.widgets

    assert Path(ftkit.widgets.__file__).parent.name == "widgets"


def test_built_wheel_holds_widgets_and_example_data_and_imports(tmp_path):
    src = source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("ftkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ftkit/widgets/__init__.py", "ftkit/examples/data/support_routing.jsonl",
            "ftkit/examples/data/support_routing_preferences.jsonl", "ftkit/models.py"} <= names
    assert not any(n.startswith(("widgets/", "tests/")) for n in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    code = ("import ftkit.widgets, ftkit.examples as e; print(ftkit.widgets.__file__); "
            "print(len(e.load('support_routing', verbose=False)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    widgets_file, rows = out.stdout.split()
    assert widgets_file == str(target / "ftkit" / "widgets" / "__init__.py")
    assert int(rows) >= 400
