"""``ftkit.widgets`` from a source checkout, whichever way ftkit is installed.

The panels live in ``widgets/`` at the top of the repository and install as ``ftkit.widgets``
(the wheel's ``sources`` mapping in pyproject.toml). A Python started at the repository root (a
notebook, a console, ``python -c``) has the current folder first on ``sys.path``, so ``import
ftkit`` finds the source folder ``ftkit/``, which holds no ``widgets/``, and hides the installed
package. The editable install (hatchling's, a ``.pth`` file naming the checkout) maps nothing
either; nor does a non-editable one imported from a checkout (``pip install .``, as binder/postBuild
does). This finder is what maps it in both.

So when this ``ftkit/`` sits in a checkout (``widgets/__init__.py`` and ``pyproject.toml`` beside
it), a finder resolves exactly the name ``ftkit.widgets`` to that ``widgets/`` folder; its
submodules follow through the package's ``__path__``. Appending ``widgets/``'s parent to
``ftkit.__path__`` instead would expose every folder of the repository root (``tests``,
``notebooks``...) as an ``ftkit.*`` package. The finder goes at the end of ``sys.meta_path``, so
it answers only when the normal search found nothing, and it imports
nothing itself: the core still never imports ipywidgets.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

NAME = "ftkit.widgets"


class SourceTreeWidgetsFinder(importlib.abc.MetaPathFinder):
    """Finds ``ftkit.widgets`` in ``widgets`` when ``ftkit`` was imported from ``package``."""

    _ftkit_source_tree = True  # marks instances across reloads of this module

    def __init__(self, package: Path, widgets: Path):
        self.package = package
        self.widgets = widgets

    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME or not path:
            return None
        # Only for the ftkit package this finder was made for, not one installed elsewhere.
        if not any(_same(entry, self.package) for entry in path):
            return None
        init = self.widgets / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init,
                                                      submodule_search_locations=[str(self.widgets)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.widgets)!r})"


def _same(entry, folder: Path) -> bool:
    try:
        return Path(entry).resolve() == folder
    except (OSError, TypeError, ValueError):
        return False


def install(package_file: str | None = __file__) -> SourceTreeWidgetsFinder | None:
    """Registers the finder if ``package_file``'s folder is ``ftkit/`` in a checkout; once only."""
    if not package_file:
        return None
    package = Path(package_file).resolve().parent
    root = package.parent
    widgets = root / "widgets"
    if not ((widgets / "__init__.py").is_file() and (root / "pyproject.toml").is_file()):
        return None  # an installed ftkit: ftkit/widgets/ is inside it
    for finder in sys.meta_path:
        if getattr(finder, "_ftkit_source_tree", False) and getattr(finder, "widgets", None) == widgets:
            return finder
    finder = SourceTreeWidgetsFinder(package, widgets)
    sys.meta_path.append(finder)
    return finder


install()
