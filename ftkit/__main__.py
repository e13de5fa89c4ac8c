"""``python -m ftkit``: the same as the ``ftkit`` command."""

import sys

from ftkit.cli import main

if __name__ == "__main__":  # importing this module (tests/test_core_imports.py does) runs nothing
    sys.exit(main())
