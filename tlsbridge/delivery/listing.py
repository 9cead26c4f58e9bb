"""The deliverer's view of containers in one pass: one listing of the engine's containers per
issuing pass (each target warning logged once), and the targets it acts on.

An issuing pass asks the deliverer three times about the same containers: the bootstrap (start
nginx on a placeholder), the webroot pre-check (before the CA is asked), the delivery (after
certbot). Listing the containers for each step cost an API call each and logged each resolve
warning ("no container has the label ...") once per step. The pre-check's listing is kept for
the delivery of the same sites; the delivery refreshes only its targets (one inspect each,
as their state may have changed while certbot ran) and forgets the listing.

A listing covers the sites it was taken for: the delivery reuses it only for those, and only
while it is younger than MAX_AGE, so a later pass (no pre-check before a pure re-delivery, or a
pass whose issuance all failed) never works from an old one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tlsbridge.config import Site
from tlsbridge.targets import ContainerInfo

MAX_AGE = 600.0  # seconds: longer than a pass's certbot runs take, far shorter than between passes


@dataclass
class Listing:
    containers: list[ContainerInfo]
    sites: frozenset[str]
    at: float = field(default_factory=time.monotonic)
    logged: set[tuple[str, str]] = field(default_factory=set)  # (site, message) already logged

    def young(self, now: float | None = None) -> bool:
        """Taken in this pass, as far as can be told (within MAX_AGE)."""
        return 0 <= (time.monotonic() if now is None else now) - self.at < MAX_AGE

    def covers(self, sites: Iterable[str], now: float | None = None) -> bool:
        return self.young(now) and frozenset(sites) <= self.sites

    def first_time(self, site: str, message: str) -> bool:
        """Whether this message about this site is new in this pass (and remember it)."""
        key = (site, message)
        if key in self.logged:
            return False
        self.logged.add(key)
        return True


@dataclass
class Target:
    """A container the deliverer acts on in this pass, with the sites it serves."""

    info: ContainerInfo
    sites: list[Site] = field(default_factory=list)
    since: float = 0.0  # monotonic time of the reload or start
    how: str = ""  # "SIGHUP", "nginx -s reload", "started", "restarting"
    error: str | None = None
    skip: bool = False  # stopped on purpose: neither started nor verified

    @property
    def names(self) -> str:
        return ",".join(s.name for s in self.sites)

    def serves(self, site: str) -> bool:
        return any(s.name == site for s in self.sites)

    @property
    def acted(self) -> bool:
        """Reloaded or started by us (not skipped, not failed, not left restarting on its own)."""
        return self.error is None and not self.skip and self.how not in ("", "restarting")
