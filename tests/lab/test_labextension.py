"""The JupyterLab extension as it ships: built assets that match their sources, installed where
JupyterLab finds them, enabled beside the server extension. None of this needs Node.

The sources are in labextension/ (TypeScript; `make labextension` builds them, `cd labextension &&
npm test` runs their unit tests); the build is committed in ftkit/labextension/ with
build-stamp.json, a hash of the sources it was built from (labextension/scripts/stamp.js). The
wheel, and the editable install of `make setup` (hatchling's shared-data), copy it to
share/jupyter/labextensions/ftkit-labextension/, the server switch to
etc/jupyter/jupyter_server_config.d/ftkit.json and the tour notebooks to share/ftkit/notebooks/ (where ftkit.lab.extension.tour_dir looks).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_packaging import source_copy

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension"
BUILT = ROOT / "ftkit" / "labextension"
NAME = json.loads((SOURCE / "package.json").read_text())["name"]
# What stamp.js hashes: these files and folders of labextension/ (the unit tests are not built in).
STAMPED = ["package.json", "tsconfig.json", "src", "style", "schema"]
REBUILD = "run `make labextension` (Node 20.19+) and commit ftkit/labextension/"
REINSTALL = "reinstall: `make setup` (or `pip install -e .`) copies the build into the environment"


def sources_hash() -> tuple[list[str], str]:
    """The hash stamp.js writes, computed the same way (see its header)."""
    files: list[str] = []
    for name in STAMPED:
        path = SOURCE / name
        if path.is_dir():
            files += [p.relative_to(SOURCE).as_posix() for p in path.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(SOURCE).parts)]
        else:
            files.append(name)
    files.sort()
    lines = "".join(f"{rel}\t{hashlib.sha256((SOURCE / rel).read_bytes()).hexdigest()}\n" for rel in files)
    return files, hashlib.sha256(lines.encode()).hexdigest()


def built_files() -> dict[str, bytes]:
    """The files JupyterLab loads, by path under the extension's folder (the stamp is ours only)."""
    return {p.relative_to(BUILT).as_posix(): p.read_bytes() for p in BUILT.rglob("*")
            if p.is_file() and p.name != "build-stamp.json"}


def jupyter(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # no colours


# --- the build matches its sources -----------------------------------------------------------------

def test_built_assets_were_built_from_these_sources():
    stamp = json.loads((BUILT / "build-stamp.json").read_text())
    files, digest = sources_hash()
    assert stamp["sources"] == files, f"the build saw other source files than are here: {REBUILD}"
    assert stamp["sources_sha256"] == digest, f"labextension/ changed since ftkit/labextension/ was built: {REBUILD}"


def test_build_is_complete_and_named_like_its_sources():
    source = json.loads((SOURCE / "package.json").read_text())
    built = json.loads((BUILT / "package.json").read_text())
    assert (built["name"], built["version"]) == (source["name"], source["version"])
    assert source["jupyterlab"]["outputDir"] == "../ftkit/labextension"
    # The entry point JupyterLab loads, and the settings schema as written in labextension/schema.
    assert (BUILT / built["jupyterlab"]["_build"]["load"]).is_file(), REBUILD
    schema = BUILT / "schemas" / NAME / "plugin.json"
    assert json.loads(schema.read_text()) == json.loads((SOURCE / "schema" / "plugin.json").read_text()), REBUILD
    assert json.loads((BUILT / "install.json").read_text())["packageName"] == "ftkit"


def test_settings_schema_defaults_poll_every_2_s_while_a_run_is_active():
    props = json.loads((SOURCE / "schema" / "plugin.json").read_text())["properties"]
    assert props["interval"]["default"] == 2
    assert props["idleInterval"]["default"] > props["interval"]["default"]
    assert props["pollOnlyWhileActive"]["type"] == "boolean"


# --- installed and enabled ----------------------------------------------------------------------

def test_this_environment_has_the_current_build_installed():
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / NAME
    assert installed.is_dir(), f"{installed} is missing: {REINSTALL}"
    have = {p.relative_to(installed).as_posix(): p.read_bytes() for p in installed.rglob("*") if p.is_file()}
    want = built_files()
    assert sorted(have) == sorted(want), f"the installed extension is another build: {REINSTALL}"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"installed files differ from ftkit/labextension/: {stale}; {REINSTALL}"
    server_switch = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "ftkit.json"
    assert server_switch.is_file(), f"{server_switch} is missing: {REINSTALL}"


def test_jupyter_labextension_list_shows_it_enabled():
    out = jupyter("labextension", "list")
    line = next((line for line in out.splitlines() if NAME in line), None)
    assert line, f"{NAME} is not listed by `jupyter labextension list`:\n{out}"
    assert re.search(rf"{NAME} v\S+ enabled\s+OK \(python, ftkit\)", line), line


def test_jupyter_server_extension_list_shows_ftkit_server_enabled():
    if not (ROOT / "ftkit" / "server.py").is_file():
        pytest.skip("ftkit/lab/extension.py (the server extension) does not exist yet")
    out = jupyter("server", "extension", "list")
    assert re.search(r"ftkit\.server\s+enabled", out), out
    assert re.search(r"ftkit\.server\s+OK", out), f"ftkit.lab.extension is enabled but does not load:\n{out}"


# --- what a wheel installs (binder's `pip install --no-deps .` is this) --------------------------

def test_wheel_installs_the_extension_the_server_switch_and_the_tour(tmp_path):
    """Read from the wheel, not installed: an installer puts ``<name>.data/data/X`` at
    ``<prefix>/X`` (the wheel spec). (``pip install --prefix`` would uninstall this environment's
    own ftkit first, so the test does not install it anywhere.)"""
    src = source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=600)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("ftkit-*.whl")))
    version = json.loads((SOURCE / "package.json").read_text())["version"]
    data = next(n.split("/data/")[0] + "/data/" for n in wheel.namelist() if ".data/data/" in n)

    def under(prefix: str) -> dict[str, bytes]:
        return {n[len(data + prefix):]: wheel.read(n) for n in wheel.namelist() if n.startswith(data + prefix)}

    assert not any(n.startswith("ftkit/labextension/") for n in wheel.namelist()), "the build is data files only"
    assert under(f"share/jupyter/labextensions/{NAME}/") == built_files()
    assert json.loads(under(f"share/jupyter/labextensions/{NAME}/")["package.json"])["version"] == version
    switch = under("etc/jupyter/jupyter_server_config.d/")
    assert list(switch) == ["ftkit.json"]
    assert json.loads(switch["ftkit.json"])["ServerApp"]["jpserver_extensions"] == {"ftkit.lab.extension": True}
    tour = under("share/ftkit/notebooks/")
    assert sorted(tour) == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert tour["00_quickstart.ipynb"] == (ROOT / "notebooks" / "00_quickstart.ipynb").read_bytes()


def test_binder_installs_the_package_with_its_data_files():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    # A plain (non-editable) install of the repository: the wheel route above, no Node needed.
    assert re.search(r"pip install --no-deps \.$", post_build, re.MULTILINE), post_build
    assert "npm" not in post_build and "labextension build" not in post_build, "binder must not need Node"
