"""The validators, in one place: site and client names, DNS names, HOST:PORT, config values.

Each validator returns the normalised value or raises ValueError whose message is the problem
alone; the caller adds where the value came from (a config key path or a flag). They are pure,
except `user` and `group`, which ask this host's user database. Patterns are applied with
`fullmatch`, so a trailing newline or any control character fails. `Reader` applies them to
one config file's values and turns each problem into a ConfigError.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tlsbridge.durations import parse_duration, seconds_to_timedelta
from tlsbridge.errors import ConfigError

_T = TypeVar("_T")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

HTTPS_PORT = 443
MAX_NAMES = 100  # names in one certificate (Let's Encrypt's limit)
# A site name is certbot's --cert-name and a folder name; a client name is a folder name too.
SITE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CLIENT_NAME = SITE_NAME
SITE_NAME_RULE = ("a site name is lowercase letters, digits, '.', '_' or '-' "
                  "(at most 64, starting with a letter or digit; never a path)")
CLIENT_NAME_RULE = "a client name is lowercase letters, digits, '.', '_' or '-'"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_PORT = re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)")


def is_site_name(text: object) -> bool:
    return isinstance(text, str) and SITE_NAME.fullmatch(text) is not None


def is_client_name(text: object) -> bool:
    return isinstance(text, str) and CLIENT_NAME.fullmatch(text) is not None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def ip_address(text: str) -> str:
    """The normalised form of an IPv4 or IPv6 address; ValueError if it is none."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def dns_name(text: str, *, wildcard: bool = False, dotted: bool = False) -> str:
    """`text` as a lowercase A-label DNS name (IDNA 2008 with UTS 46 mapping), no trailing dot.

    `wildcard`: a leading `*.` label is allowed (and kept); `dotted`: at least two labels (what a
    CA issues for). Raises ValueError: an IP address, a misplaced '*', an invalid label, too long.
    """
    if _CONTROL.search(text):
        raise ValueError("contains a control character")
    name = text.strip(" ").rstrip(".").lower()
    star = wildcard and name.startswith("*.")
    if star:
        name = name[2:]
    if "*" in name:
        raise ValueError("'*' is only allowed as the whole leftmost label")
    if is_ip(name):
        raise ValueError("is an IP address, not a DNS name")
    if name.isascii() and "xn--" not in name:
        ascii_name = name  # plain LDH names need no IDNA pass (the label check below suffices)
    else:
        import idna

        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid domain name ({exc})") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a valid domain name")
    if dotted and len(labels) < 2:
        raise ValueError("needs at least two labels (a CA will not issue for a bare name)")
    return ("*." if star else "") + ascii_name


def host_name(text: str) -> str:
    """A host's DNS name (one label is enough, no wildcard), e.g. a name of the Docker engine."""
    if is_ip(text):
        raise ValueError(f"{text!r} is an IP address: give it with --ip (daemon_tls.ips)")
    try:
        return dns_name(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid DNS name: {exc}") from None


def user(name: str | None) -> str | None:
    """A user of this host, by name or number (None: none given)."""
    import pwd

    if name is not None and not name.isdigit():
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"no user named {name!r} on this host (give a user name or a number)") from None
    return name


def group(name: str | None) -> str | None:
    """A group of this host, by name or number (None: none given)."""
    import grp

    if name is not None and not name.isdigit():
        try:
            grp.getgrnam(name)
        except KeyError:
            raise ValueError(f"no group named {name!r} on this host (give a group name or a number)") from None
    return name


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT, an IPv6 host in brackets ([::1]:443), port 1..65535. Raises ValueError."""
    match = _HOST_PORT.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:2376; IPv6 in brackets: [::]:2376)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    return host, port


# -- scalar values of the config (YAML gives str, int, float, bool, None, list, dict) ---------
def kind(value: Any) -> str:
    """How a YAML value is called in an error message."""
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def duration(value: Any) -> timedelta:
    """A duration: `1d12h`-style text, or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a duration like 30d or 12h, got {kind(value)}")
    if isinstance(value, int):
        return seconds_to_timedelta(value)
    return parse_duration(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {kind(value)}")
    return value


def integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {kind(value)}")
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}..{high}")
    return value


def file_mode(value: Any) -> int:
    """An octal file mode as a string, like '0640'; never world-writable."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"modes must be quoted strings, like '0640': unquoted, YAML reads this one "
                         f"as the number {value}" + (f" (octal {value:o})" if value < 0o1000 else ""))
    text = value if isinstance(value, str) else ""
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError("expected an octal file mode as a string, like '0640'")
    mode = int(text, 8)
    if mode & 0o002:
        raise ValueError(f"{text} would make files world-writable")
    return mode


class Reader:
    """Reads the values of one config file at key paths. Every problem is a ConfigError naming
    the file, the key path and the problem (one line); `${VAR}` / `${VAR:-default}` in strings
    take values from the environment, which are never echoed back in errors."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base

    def error(self, path: str, problem: str) -> NoReturn:
        """Raise the ConfigError for `path` (one line: file, key path, problem)."""
        raise ConfigError(self.source, path, problem) from None

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path or "(top level)", f"expected a mapping, got {kind(value)}")
        for key in value:
            if not isinstance(key, str):
                self.error(path or "(top level)", f"keys must be strings, got {kind(key)}")
            if key not in allowed:
                hint = ", ".join(allowed)
                self.error(_join(path, key), f"unknown key (expected one of: {hint})")
        return value

    def string(self, value: Any, path: str, *, optional: bool = False, text_only: bool = False) -> str | None:
        """A string; a number is taken as its text unless `text_only` (a name `1.5` is a typo)."""
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, str if text_only else str | int | float):
            self.error(path, f"expected a string, got {kind(value)}")
        text = self.interpolate(str(value), path)
        if _CONTROL.search(text):  # a newline in a name ends up in file names, nginx paths, argv
            self.error(path, "contains a control character (a newline, a tab...)")
        if not text and not optional:
            self.error(path, "must not be empty")
        return text or None

    def interpolate(self, text: str, path: str) -> str:
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            self.error(path, f"environment variable {name} is not set")

        return _ENV.sub(sub, text)

    def path(self, value: Any, key: str, *, optional: bool = False) -> Path | None:
        text = self.string(value, key, optional=optional)
        if text is None:
            return None
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def req_path(self, value: Any, key: str) -> Path:
        p = self.path(value, key)
        assert p is not None
        return p

    def check(self, path: str, validate: Callable[..., _T], *args: Any) -> _T:
        """`validate(*args)` (a validator above); its ValueError becomes a ConfigError at `path`."""
        try:
            return validate(*args)
        except ValueError as exc:
            self.error(path, str(exc))

    def duration(self, value: Any, path: str) -> timedelta:
        return self.check(path, duration, value)

    def boolean(self, value: Any, path: str) -> bool:
        return self.check(path, boolean, value)

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        return self.check(path, integer, value, low, high)

    def mode(self, value: Any, path: str) -> int:
        return self.check(path, file_mode, value)

    def str_list(self, value: Any, path: str, *, text_only: bool = True) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {kind(value)}")
        return [self.string(v, f"{path}[{i}]", text_only=text_only) or "" for i, v in enumerate(value)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
