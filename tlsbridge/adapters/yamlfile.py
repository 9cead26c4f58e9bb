"""Reading a YAML config file strictly: a regular file only, a duplicate key is an error.

A FIFO or a device is refused after a stat(), before it is opened for reading (reading one
would hang or never end). YAML lets a later duplicate key silently win (a second `sites:`
block replaces the first); here it is an error naming both lines.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from tlsbridge.errors import ConfigError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path) -> str:
    """The text of a regular file (following symlinks). Raises ConfigError."""
    source = str(path)
    try:
        _require_regular(os.stat(path).st_mode, source)
        # O_NONBLOCK: a file swapped for a FIFO since the stat() cannot block the open;
        # fstat() then checks what was actually opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            _require_regular(os.fstat(fd).st_mode, source)
            return fh.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found (give --config PATH or set $TLSBRIDGE_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc.__class__.__name__}: {exc}") from None


def _require_regular(mode: int, source: str) -> None:
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise ConfigError(source, "", f"cannot read: {what}, not a regular file")


def parse(text: str, source: str) -> Any:
    """YAML text -> plain data. Raises ConfigError: broken YAML, or a key twice in one mapping."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader
    except _DuplicateKey as dup:
        raise ConfigError(source, f"line {dup.line}", f"duplicate key {dup.key!r} (first at line "
                          f"{dup.first}; YAML would silently keep only the last)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, where, f"broken YAML: {problem}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: object, first: int, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.line = key, first, line


class _StrictLoader(_Base):  # type: ignore[valid-type, misc]
    """The safe loader (the C one where available) that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merge keys may repeat; the merged mapping was checked itself
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            seen[key] = line
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result
