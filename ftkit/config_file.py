"""Reading a config file, before anything heavy is imported: what the file is, its size, its
encoding, its nesting and its YAML aliases. :func:`ftkit.config.load_config` builds the config
from what this returns; ``ftkit run`` calls it first, so a file that is no config is refused in a
fraction of a second, before torch and transformers load (seconds, and 400 MB).

Only the standard library and PyYAML: importing this module must stay light (a test says so).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import yaml

__all__ = ["MAX_ALIAS_VALUES", "MAX_CONFIG_BYTES", "MAX_DEPTH", "ConfigError", "read_config_file"]


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem with its key path, after the
    config file's name (``source``) when it came from one."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems, self.source = problems, source
        head = f"invalid config {source}" if source else "invalid config"
        # One problem stays on one line: `ftkit` prints it as one line, which a log search finds whole.
        body = f" {problems[0]}" if len(problems) == 1 else "".join(f"\n  {p}" for p in problems)
        super().__init__(f"{head}:{body}")


ConfigError.__module__ = "ftkit.config"  # its public home, where tracebacks and docs name it



# A config is a few KB of settings, a few levels deep; these limits are far above any real one and
# far below what costs time or memory. Past them, a file is refused before it is parsed further.
MAX_CONFIG_BYTES = 1_000_000  # a bigger file is a data file passed by mistake
MAX_DEPTH = 32  # the deepest key is 4 levels down: templates -> a template -> its endpoint -> a key
# YAML anchors repeat a section or two (a few dozen values); a "billion laughs" file of 9 levels of
# 9 aliases expands to 9^9 values, each composed once but walked as a tree by every check after.
MAX_ALIAS_VALUES = 1_000

_NOT_A_FILE = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_config_file(path: str | Path):
    """The values of the ``.yaml``/``.yml``/``.json`` config file at ``path``, parsed within the
    limits above; a :class:`ConfigError` naming the file when it is not one (what it is instead).

    >>> read_config_file("pipeline.yaml")    # doctest: +SKIP
    {'data': {'source': 'tickets.csv'}, 'sft': {'max_minutes': 5}}
    """
    path = Path(path)
    kind = path.suffix.lower()
    text = _read(path)
    if kind not in (".yaml", ".yml", ".json"):
        raise ConfigError([f"{path.name}: a config is a .yaml, .yml or .json file"])
    try:
        return _parse_json(text, path.name) if kind == ".json" else _parse_yaml(text, path.name)
    except ConfigError:
        raise
    # A ValueError too: an integer of over 4,300 digits, a YAML date like 2024-13-45.
    except (yaml.YAMLError, ValueError) as err:
        raise ConfigError([f"{path.name} is not valid {kind[1:].upper()}: {err}"]) from None


def _read(path: Path) -> str:
    """The text of the config file at ``path``; a ConfigError when it is none (what it is instead)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError([f"no config file at {str(path)!r}"]) from None
    except OSError as err:
        raise ConfigError([f"{path.name}: cannot read it ({err.strerror})"]) from None
    kind = next((what for test, what in _NOT_A_FILE if test(mode)), None)
    if kind is not None:
        raise ConfigError([f"{path} is {kind}, not a file; pass the path of a .yaml or .json config"])
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the stat above returns no data at once,
        # where a plain open would wait for a writer forever.
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"{path.name}: cannot read it ({err.strerror})"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path.name} is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few KB of "
                           "settings, and the data goes in its own file (data.source)"])
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is not an error
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path.name} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                           "a config is a YAML or JSON text file: save it as UTF-8"]) from None


def _too_deep(name: str, line: int) -> ConfigError:
    return ConfigError([f"{name}: nested deeper than {MAX_DEPTH} levels at line {line}; a config is a few "
                        "levels deep (a section, its keys, a list of templates)"])


def _parse_json(text: str, name: str):
    """``json.loads(text)``, after a scan of its brackets: the parser recurses once per level and
    ends in a RecursionError on deep nesting, so depth is measured first, outside any string."""
    depth, in_string, skip = 0, False, -1
    for m in re.finditer(r'[\[\]{}"\\]', text):
        pos, c = m.start(), m.group()
        if pos < skip:  # the character after a backslash in a string
            continue
        if in_string:
            skip = pos + 2 if c == "\\" else skip
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(name, text.count("\n", 0, pos) + 1)
        elif c in "]}":
            depth -= 1
    return json.loads(text)


def _parse_yaml(text: str, name: str):
    """``yaml.safe_load(text)`` with :class:`_ConfigLoader`'s limits."""
    loader = _ConfigLoader(text, name)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts while it composes, so a limit trips before time or memory
    grow: the nesting depth (the composer recurses once per level), and the values that aliases
    expand to. Each composed node's size (values it expands to, levels of collections) is kept,
    so an alias costs one look-up."""

    def __init__(self, text: str, name: str):
        super().__init__(text)
        self.name, self._depth, self._expanded = name, 0, 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels), once composed

    def compose_node(self, parent, index):
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # its anchor is still open: the value would contain itself
                raise ConfigError([f"{self.name}: the alias at line {line} refers to a value that contains it"])
            self._expanded += self._sizes[id(node)][0]
            if self._expanded > MAX_ALIAS_VALUES:
                raise ConfigError([f"{self.name}: uses {MAX_ALIAS_VALUES:,}+ alias expansions (line {line}); a config "
                                   "repeats a section or two with aliases: write the values out, or alias fewer levels"])
            return node
        opens = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        self._depth += opens
        if self._depth > MAX_DEPTH:
            raise _too_deep(self.name, line)
        node = super().compose_node(parent, index)
        self._depth -= opens
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        sizes = [self._sizes[id(c)] for c in children]
        values, levels = 1 + sum(v for v, _ in sizes), opens + max((lv for _, lv in sizes), default=0)
        if levels > MAX_DEPTH:  # deeper through aliases than as written
            raise _too_deep(self.name, line)
        self._sizes[id(node)] = (values, levels)
        return node
