"""``python -m ftkit`` and the ``ftkit`` command.

``main`` reads the config file of ``ftkit run`` before it imports the rest of the kit: a file that
is no config (a folder, a FIFO, binary data, a nesting or alias bomb) is refused in a fraction of a
second and a few MB, not after the seconds and 400 MB that torch and transformers take to load.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) >= 2 and args[0] == "run" and "-h" not in args and "--help" not in args:
        from ftkit.config_file import ConfigError, read_config_file

        config = _config_argument(args[1:])
        if config is not None:
            try:
                read_config_file(config)
            except ConfigError as err:
                print(f"ftkit: {err}", file=sys.stderr)
                return 2
    from ftkit.cli import main as cli_main

    return cli_main(args)


def _config_argument(args: list[str]) -> str | None:
    """The config path among ``ftkit run``'s arguments: the first one that is no option nor an
    option's value, when it names a config file (anything else is left to the full parser)."""
    valued = {"--out", "--resume", "--limit", "--max-steps"}   # ftkit run's options that take a value
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in valued:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg.lower().endswith((".yaml", ".yml", ".json")) else None
    return None


if __name__ == "__main__":  # importing this module (tests/test_core_imports.py does) runs nothing
    sys.exit(main())
