"""Pure: when the sidecar wakes up next. Inputs are values and `now`; no clock, no I/O.

Two kinds of wake-up, both recomputed after every pass from what the pass left behind:

- the periodic check: `check_interval` plus a random part of `jitter` after a full pass;
- one per site: its chosen renewal moment, or, while it is failing, the backoff's next attempt
  (a CA's retry-after is already folded into it). A moment already past is moved `MIN_DELAY`
  ahead so a site that stays due can never make the loop spin.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tlsbridge.model import SiteState

MIN_DELAY = timedelta(seconds=5)
PASS_RETRY = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100))


@dataclass(frozen=True)
class Wakeup:
    site: str
    at: datetime
    reason: str  # "Renewal" | "Backoff"

    def __str__(self) -> str:
        return f"{self.site} at {self.at:%Y-%m-%dT%H:%M:%SZ} ({self.reason})"


@dataclass(frozen=True)
class SiteTiming:
    """What the timetable needs to know about a site after a pass."""

    site: str
    renew_at: datetime | None  # chosen renewal moment of the current certificate, if any
    state: SiteState


def next_check(now: datetime, interval: timedelta, jitter: timedelta, rng: random.Random) -> datetime:
    """The next periodic full pass: `interval` after `now`, delayed by up to `jitter`."""
    return now + interval + jitter * rng.random()


def pass_retry(now: datetime, interval: timedelta, failed_passes: int) -> datetime:
    """When to retry a whole pass that could not run (e.g. the state store was unreadable)."""
    step = PASS_RETRY[min(max(failed_passes, 1), len(PASS_RETRY)) - 1]
    return now + min(step, interval)


def site_wakeup(t: SiteTiming, now: datetime, min_delay: timedelta = MIN_DELAY) -> Wakeup | None:
    """The moment `t.site` next needs a pass, or None when only the periodic check concerns it.

    A pending backoff wins: waking earlier would only find the site waiting. A backoff already
    over means the last pass looked at the site and had nothing to retry (e.g. a failed
    verification of a certificate that is not due): only the renewal moment matters then.
    """
    st = t.state
    if st.failures and st.next_attempt is not None and st.next_attempt > now:
        return Wakeup(t.site, st.next_attempt, "Backoff")
    if t.renew_at is not None:
        return Wakeup(t.site, max(t.renew_at, now + min_delay), "Renewal")
    return None


def site_wakeups(timings: Iterable[SiteTiming], now: datetime,
                 min_delay: timedelta = MIN_DELAY) -> dict[str, Wakeup]:
    out = {}
    for t in timings:
        w = site_wakeup(t, now, min_delay)
        if w is not None:
            out[t.site] = w
    return out

