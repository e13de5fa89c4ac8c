"""The one seam for speed-ups that lean on other libraries' internals.

ftkit is fast on a CPU because of a few paths that re-implement a library step or touch a private
name of TRL, transformers, torch or sacrebleu. Each of them lives in this package, and each has:

- a contract test per private name it uses (``tests/fastpath/test_*_contracts.py``): the name
  exists and has the signature used, so that an upgrade fails there, by name, saying what to do;
- an equivalence test against the plain library path (the same loss, logits or score);
- the plain TRL / transformers / sacrebleu path as its fallback, which ftkit takes by itself when
  an installed library is outside the release lines in :data:`TESTED`, and always when the
  environment says ``FTKIT_FASTPATH=0``.

Callers ask before they take a fast path::

    if fastpath.enabled("trl", "transformers"):
        ...   # the fast path
    else:
        ...   # the library's own

>>> outside("trl", "9.0.0")
'trl 9.0.0 is outside the release lines ftkit tested its fast paths with (trl >=1.16,<1.17)'
>>> outside("trl", "1.16.2") is None
True
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import warnings

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["ENV", "TESTED", "disabled_reason", "enabled", "outside"]

ENV = "FTKIT_FASTPATH"

# The release lines the test suite ran the fast paths on (README, "Tested versions"). A newer
# line takes the plain library path until the suite has run on it: widen a range here only
# with the contract and equivalence tests green on that release.
TESTED = {
    "torch": ">=2.13,<2.14",
    "transformers": ">=5.24,<5.26",
    "trl": ">=1.16,<1.17",
    "peft": ">=0.21,<0.22",
    "sacrebleu": ">=2.6,<2.7",
}


def outside(library: str, version: str) -> str | None:
    """Why ``version`` of ``library`` gets the plain path, or None when it is a tested line."""
    try:
        release = Version(version.split("+")[0])
    except InvalidVersion:
        return f"{library} {version} is not a version ftkit can read; its fast paths are off"
    if release in SpecifierSet(TESTED[library]):
        return None
    return f"{library} {version} is outside the release lines ftkit tested its fast paths with " \
           f"({library} {TESTED[library]})"


@functools.cache
def _installed_problem(library: str) -> str | None:
    try:
        version = importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return f"{library} is not installed"
    problem = outside(library, version)
    if problem:
        warnings.warn(f"{problem}; ftkit uses the plain {library} path instead (slower, same results). "
                      f"Install a tested release for the fast path, or set {ENV}=0 to silence this.",
                      RuntimeWarning, stacklevel=3)
    return problem


def disabled_reason(*libraries: str) -> str | None:
    """Why the fast paths over ``libraries`` are off (the environment, or an untested release),
    or None when they are on."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}={os.environ[ENV]}"
    for library in libraries:
        problem = _installed_problem(library)
        if problem:
            return problem
    return None


def enabled(*libraries: str) -> bool:
    """Whether to take a fast path that relies on the internals of ``libraries`` (names in
    :data:`TESTED`). Read at each call, so a test or a notebook can switch ``FTKIT_FASTPATH``."""
    unknown = [name for name in libraries if name not in TESTED]
    if unknown:
        raise ValueError(f"no tested range for {', '.join(unknown)}; add it to ftkit.fastpath.TESTED")
    return disabled_reason(*libraries) is None
