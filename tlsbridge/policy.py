"""Pure renewal policy: (site, observed certificate, ARI, remembered state, now) -> Decision.

No I/O and no clock reads: `now` and the random source are arguments, so tests pin them.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from tlsbridge.durations import format_duration
from tlsbridge.model import Action, AriWindow, Decision, ObservedCert

SHORT_LIFETIME = timedelta(days=10)
BACKOFF_STEPS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100), timedelta(days=1))


@dataclass(frozen=True)
class Schedule:
    """When a certificate should be renewed, by which rule, and an ARI moment to remember."""

    renew_at: datetime
    rule: str  # "ari" | "lifetime" | "before_expiry"
    detail: str
    chosen: datetime | None = None  # a newly chosen ARI moment the caller must store


def lifetime_renew_at(cert: ObservedCert) -> datetime:
    """Renew with 1/3 of the lifetime left; 1/2 for certificates shorter than 10 days."""
    lifetime = cert.lifetime
    left = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return cert.not_after - left


class Draw(Protocol):
    def random(self) -> float: ...


class SeededLater:
    """random.Random(seed), made only when a number is drawn: seeding costs ~5 us, and a
    schedule with its moment already chosen draws nothing (every site, every pass)."""

    __slots__ = ("_rng", "_seed")

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._rng: random.Random | None = None

    def random(self) -> float:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng.random()


def schedule(
    cert: ObservedCert,
    *,
    before_expiry: timedelta | None,
    ari: AriWindow | None,
    chosen: datetime | None,
    now: datetime,
    rng: Draw,
) -> Schedule:
    """Pick the renewal moment of `cert`.

    `ari` must belong to `cert` and `chosen` must be the moment remembered for it (callers drop
    both when the certificate changed). A remembered moment is kept while it lies inside the
    window, so the choice is made once and never postponed by re-randomising.
    """
    if before_expiry is not None:
        at = cert.not_after - before_expiry
        if before_expiry < cert.lifetime * 0.9:
            return Schedule(at, "before_expiry", f"{format_duration(before_expiry)} before expiry")
        lifetime_at = lifetime_renew_at(cert)
        return Schedule(
            lifetime_at,
            "lifetime",
            f"renewal.before_expiry {format_duration(before_expiry)} is not shorter than the "
            f"{format_duration(cert.lifetime)} lifetime; using the lifetime rule",
        )
    if ari is not None:
        if chosen is not None and ari.start <= chosen <= ari.end:
            return Schedule(chosen, "ari", f"a moment inside the CA's window {_window(ari)}")
        if ari.end <= now:
            pick = ari.start
        else:
            low = max(ari.start, now)
            pick = low + (ari.end - low) * rng.random()
        return Schedule(pick, "ari", f"a moment inside the CA's window {_window(ari)}", chosen=pick)
    return Schedule(
        lifetime_renew_at(cert),
        "lifetime",
        "1/2 of the lifetime left" if cert.lifetime < SHORT_LIFETIME else "1/3 of the lifetime left",
    )


def decide(
    *,
    domains: tuple[str, ...],
    key_type: str,
    cert: ObservedCert | None,
    sched: Schedule | None,
    now: datetime,
    force: bool = False,
) -> Decision:
    """What to do with certbot's lineage for a site. `sched` is required when `cert` is given."""
    if cert is None:
        return Decision(Action.ISSUE, "NoCertificate", "no certificate yet")
    if cert.placeholder:
        return Decision(Action.ISSUE, "Placeholder", "only a placeholder certificate is present")
    want, have = set(domains), set(cert.domains)
    if want != have:
        parts = []
        if want - have:
            parts.append("adds " + ", ".join(sorted(want - have)))
        if have - want:
            parts.append("drops " + ", ".join(sorted(have - want)))
        return Decision(Action.REISSUE, "DomainsChanged", "the config " + " and ".join(parts))
    if cert.key_type != key_type:
        return Decision(Action.REISSUE, "KeyTypeChanged", f"key type {cert.key_type} -> {key_type}")
    if force:
        return Decision(Action.RENEW, "Forced", "--force was given")
    assert sched is not None
    if now >= cert.not_after:
        return Decision(Action.RENEW, "Expired", f"expired {_ts(cert.not_after)}", sched.renew_at)
    if now >= sched.renew_at:
        return Decision(Action.RENEW, "Due", f"due since {_ts(sched.renew_at)} ({sched.detail})",
                        sched.renew_at)
    return Decision(Action.NONE, "NotDue", f"renews at {_ts(sched.renew_at)} ({sched.detail})",
                    sched.renew_at)


def backoff(failures: int, rng: random.Random, retry_after: datetime | None, now: datetime) -> datetime:
    """When to try again after `failures` consecutive failures (1m, 10m, 100m, then daily, +-10%).

    A CA's retry-after (rate limits) is a floor, never shortened by jitter.
    """
    step = BACKOFF_STEPS[min(max(failures, 1), len(BACKOFF_STEPS)) - 1]
    at = now + step * (0.9 + 0.2 * rng.random())
    if retry_after is not None and retry_after > at:
        at = retry_after
    return at


@functools.lru_cache(maxsize=8192)  # the same stored moments come back on every pass
def _ts(at: datetime) -> str:
    """2026-06-01T12:00Z (times here are UTC; isoformat is ~2x faster than strftime)."""
    return at.isoformat(timespec="minutes")[:16] + "Z"


def _window(ari: AriWindow) -> str:
    return f"{_ts(ari.start)}..{_ts(ari.end)}"
