"""What the sidecar's main loop is asked to do, and how a batch of queued requests is merged.

Requests come from APScheduler jobs (a periodic check, a site's wake-up), the Docker watcher
(verify a site after a container start) and signal handlers (SIGHUP: reload the config; SIGTERM:
stop). The loop takes every request queued at once and runs one merged batch: a full pass covers
any per-site pass, and a stop wins over everything.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence, Set
from dataclasses import dataclass


class Kind(enum.Enum):
    PASS = "pass"  # reconcile the sites (all of them when `sites` is None)
    VERIFY = "verify"  # check that the sites' containers serve what is published
    RELOAD = "reload"  # read the config file again (SIGHUP)
    DISCOVER = "discover"  # list the labelled app containers again (discovery)
    STOP = "stop"


@dataclass(frozen=True)
class Request:
    kind: Kind
    sites: frozenset[str] | None = None  # None: every site
    why: str = ""


STOP = Request(Kind.STOP)


class PassAbandoned(BaseException):
    """Raised in the main thread by a second stop signal while a pass runs."""


@dataclass(frozen=True)
class Batch:
    """Queued requests merged: what the loop does next, in this order."""

    stop: bool = False
    reload_config: bool = False
    full_pass: bool = False
    pass_sites: frozenset[str] = frozenset()
    verify_sites: frozenset[str] = frozenset()
    why: str = ""  # the requests' reasons, sorted, comma-separated
    discover: bool = False


@dataclass(frozen=True)
class Work:
    """A batch against the (possibly reloaded) config: the pass to run and the sites to verify."""

    pass_sites: tuple[str, ...] | None  # None: a full pass
    run_pass: bool
    verify_sites: tuple[str, ...]
    why: str


def merge(requests: Sequence[Request]) -> Batch:
    """Merge queued requests into one batch (pure)."""
    if any(r.kind is Kind.STOP for r in requests):
        return Batch(stop=True)
    full = False
    sites: set[str] = set()
    verify: set[str] = set()
    for r in requests:
        if r.kind is Kind.PASS:
            if r.sites is None:
                full = True
            else:
                sites |= r.sites
        elif r.kind is Kind.VERIFY and r.sites:
            verify |= r.sites
    return Batch(reload_config=any(r.kind is Kind.RELOAD for r in requests), full_pass=full,
                 pass_sites=frozenset(sites), verify_sites=frozenset(verify),
                 why=", ".join(sorted({r.why for r in requests if r.why})),
                 discover=any(r.kind is Kind.DISCOVER for r in requests))


def work(batch: Batch, known: Set[str], config_changed: bool = False) -> Work:
    """What a batch means for the sites in the config (pure). A config that changed on reload
    gets a full pass; sites no longer in the config are dropped."""
    full = batch.full_pass or config_changed
    sites = tuple(sorted(batch.pass_sites & known))
    return Work(pass_sites=None if full else sites, run_pass=full or bool(sites),
                verify_sites=tuple(sorted(batch.verify_sites & known)), why=batch.why)
