"""The `notify` section of the config: targets as Apprise URLs and when to speak.

The URLs carry secrets (tokens, passwords): they are kept out of repr, never logged, never shown
on the status page or in `status --json`, and errors name a URL by its position and scheme only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tlsbridge import names

KEYS = ("urls", "after_failures", "expiry_warning", "on_success", "timeout")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://\S+")
DEFAULT_TIMEOUT = timedelta(seconds=10)
MAX_EXPIRY_WARNING = timedelta(days=7)


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[str, ...] = field(default=(), repr=False)
    after_failures: int = 2
    expiry_warning: timedelta | None = None  # None: a quarter of the lifetime, at most 7 days
    on_success: bool = False
    timeout: timedelta = DEFAULT_TIMEOUT  # per attempt, and the longest `renew` waits at its end

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def warning_for(self, lifetime: timedelta) -> timedelta:
        """How close to expiry a certificate of this lifetime must be for a warning."""
        if self.expiry_warning is not None:
            return self.expiry_warning
        return min(lifetime / 4, MAX_EXPIRY_WARNING)


def scheme(url: str) -> str:
    """The URL's scheme (json, mailto, slack...): the only part of a URL that may be shown."""
    m = _URL.fullmatch(url)
    return m.group(1).lower() if m else "?"


def parse(reader: names.Reader, raw: Any) -> NotifyConfig:
    """Read `notify` with the config's primitives (${VAR} interpolation included). Raises ConfigError.

    Only the shape of each URL is checked here: whether Apprise knows the scheme is checked when
    sending (`tlsbridge notify --test`), so that `validate` never imports Apprise.
    """
    if raw is None:
        return NotifyConfig()
    m = reader.mapping(raw, "notify", KEYS)
    urls = reader.str_list(m.get("urls"), "notify.urls")
    for i, url in enumerate(urls):
        if not _URL.fullmatch(url):  # never echo the URL: it may hold a token
            reader.error(f"notify.urls[{i}]", "expected an Apprise URL such as json://host/path or "
                                              "mailto://user:password@host (the value is not shown)")
    d = NotifyConfig()
    after = reader.integer(m.get("after_failures", d.after_failures), "notify.after_failures", 1, 1000)
    warning = None
    if m.get("expiry_warning", "auto") != "auto":
        warning = reader.duration(m["expiry_warning"], "notify.expiry_warning")
        if warning <= timedelta(0):
            reader.error("notify.expiry_warning", "must be auto or a positive duration")
    timeout = reader.duration(m["timeout"], "notify.timeout") if "timeout" in m else d.timeout
    if not timedelta(seconds=1) <= timeout <= timedelta(minutes=5):
        reader.error("notify.timeout", "must be between 1s and 5m")
    return NotifyConfig(urls=tuple(urls), after_failures=after, expiry_warning=warning,
                        on_success=reader.boolean(m.get("on_success", False), "notify.on_success"),
                        timeout=timeout)
