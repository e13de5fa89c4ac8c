"""Names a package offers without importing the module behind them until first use (PEP 562).

``ftkit.data``, ``ftkit.training`` and the other stage packages re-export their public names
this way, so importing one light module of a package (the run record, the config reader) never
loads torch, transformers or datasets through the package's ``__init__``:

>>> import sys
>>> getattr_, dir_ = exports("ftkit.data", {"path_problem": "sources"})
>>> getattr_("path_problem").__module__
'ftkit.data.sources'
>>> exports("ftkit", {}, modules={"examples": "data.examples"})[0]("examples").__name__
'ftkit.data.examples'
"""

from __future__ import annotations

import importlib
import sys


def exports(package: str, names: dict[str, str], modules: dict[str, str] | None = None):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule
    (relative to the package) that defines it; ``modules`` maps a public name to a submodule that
    is itself the value (``ftkit.examples`` is ``ftkit.data.examples``)."""
    modules = modules or {}

    def __getattr__(name: str):
        if name in modules:
            value = importlib.import_module(f"{package}.{modules[name]}")
        elif name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *names, *modules])

    return __getattr__, __dir__
