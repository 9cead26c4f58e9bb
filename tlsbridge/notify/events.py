"""Which notifications a pass should send: pure, from the sites' status rows, what was sent
before, and `now`.

Problems of a site: `failing` (at least `after_failures` consecutive failed attempts),
`undelivered` (published, but the containers do not serve it), `expiring` (closer to expiry than
`expiry_warning`: the certificate was not renewed in time). A problem is announced when it
starts and repeated at most once a day while it stands; its end is announced once (`recovered`).
With `on_success`, each new certificate is announced (`renewed`).

The memory is per site: the standing problems (since when, last sent) and the serial last seen,
so that a new certificate is noticed whether `renew` or `run` made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tlsbridge.model import ObservedCert
from tlsbridge.notify.settings import NotifyConfig
from tlsbridge.status import SiteStatus

FAILING, UNDELIVERED, EXPIRING = "failing", "undelivered", "expiring"
RECOVERED, RENEWED = "recovered", "renewed"
PROBLEMS = (FAILING, UNDELIVERED, EXPIRING)
REPEAT = timedelta(days=1)
NO_CERT = ""  # the serial remembered for a site seen without a certificate


@dataclass(frozen=True)
class Standing:
    """A problem announced and not over yet."""

    since: datetime  # first announced
    sent: datetime  # last announced


@dataclass(frozen=True)
class SiteMemory:
    problems: Mapping[str, Standing] = field(default_factory=dict)
    serial: str | None = None  # the certificate last seen (NO_CERT: none); None: never seen


@dataclass(frozen=True)
class Event:
    site: SiteStatus
    kind: str  # one of PROBLEMS, RECOVERED or RENEWED
    problem: str | None = None  # RECOVERED: which problem is over
    since: datetime | None = None  # a repeated problem: first announced then

    @property
    def repeat(self) -> bool:
        return self.since is not None


def real_cert(row: SiteStatus) -> ObservedCert | None:
    """The site's certificate, a placeholder counting as none."""
    return row.cert if row.cert is not None and not row.cert.placeholder else None


def problems_of(row: SiteStatus, now: datetime, cfg: NotifyConfig) -> list[str]:
    """The site's current problems, in PROBLEMS order."""
    found = []
    if row.site_state.failures >= cfg.after_failures:
        found.append(FAILING)
    if row.state == UNDELIVERED:
        found.append(UNDELIVERED)
    cert = real_cert(row)
    if cert is not None and cert.not_after - now <= cfg.warning_for(cert.lifetime):
        found.append(EXPIRING)
    return found


def decide(rows: Sequence[SiteStatus], memory: Mapping[str, SiteMemory], now: datetime,
           cfg: NotifyConfig) -> tuple[list[Event], dict[str, SiteMemory]]:
    """The events to announce now, and the memory to keep (sites no longer configured dropped)."""
    events: list[Event] = []
    new: dict[str, SiteMemory] = {}
    for row in rows:
        site_events, new[row.name] = _site(row, memory.get(row.name), now, cfg)
        events.extend(site_events)
    return events, new


def _site(row: SiteStatus, mem: SiteMemory | None, now: datetime,
          cfg: NotifyConfig) -> tuple[list[Event], SiteMemory]:
    before = mem.problems if mem is not None else {}
    active = problems_of(row, now, cfg)
    events: list[Event] = []
    kept: dict[str, Standing] = {}
    for kind in active:
        old = before.get(kind)
        if old is None:
            events.append(Event(row, kind))
            kept[kind] = Standing(since=now, sent=now)
        elif now - old.sent >= REPEAT:
            events.append(Event(row, kind, since=old.since))
            kept[kind] = Standing(since=old.since, sent=now)
        else:
            kept[kind] = old
    recovered = [kind for kind in PROBLEMS if kind in before and kind not in active]
    events.extend(Event(row, RECOVERED, problem=kind) for kind in recovered)
    cert = real_cert(row)
    serial = cert.serial_hex if cert is not None else NO_CERT
    previous = mem.serial if mem is not None else None
    if (cfg.on_success and not recovered and cert is not None and previous is not None
            and serial != previous and not active):
        events.append(Event(row, RENEWED))
    return events, SiteMemory(problems=kept, serial=serial)
