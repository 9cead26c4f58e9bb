"""Durations as people write them in YAML: 30d, 12h, 90m, 45s, 1d12h, 1w."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse `1d12h`-style text; raises ValueError naming what is wrong."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    seconds = 0
    pos = 0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(compact):
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 1d12h")
    return seconds_to_timedelta(seconds)


MAX_SECONDS = 100 * 365 * 86400  # a century: larger values overflow date arithmetic


def seconds_to_timedelta(seconds: int) -> timedelta:
    """A duration of `seconds`; ValueError when negative or longer than a century."""
    if seconds < 0:
        raise ValueError(f"{seconds} is negative: a duration is 0 or more, like 30d or 12h")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{seconds}s is too long (at most 36500d)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest `1d12h` form of a duration (seconds precision)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(out)
