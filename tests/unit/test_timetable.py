"""The sidecar's wake-up decisions: pure functions of (what the last pass left, now)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tlsbridge import policy
from tlsbridge.clock import FixedClock, ScaledClock, to_wall
from tlsbridge.model import ObservedCert, SiteState
from tlsbridge.sidecar import timetable
from tlsbridge.sidecar.timetable import SiteTiming, Wakeup

T0 = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def test_next_check_is_interval_plus_up_to_jitter() -> None:
    rng = random.Random(7)
    got = [timetable.next_check(T0, 12 * H, H, rng) for _ in range(200)]
    assert all(T0 + 12 * H <= g <= T0 + 13 * H for g in got)
    assert max(got) - min(got) > 50 * timedelta(minutes=1)  # the jitter really spreads
    assert timetable.next_check(T0, 12 * H, timedelta(0), rng) == T0 + 12 * H


@pytest.mark.parametrize(
    ("renew_at", "state", "want"),
    [
        # the chosen renewal moment
        (T0 + 3 * D, SiteState(), Wakeup("s", T0 + 3 * D, "Renewal")),
        # already past (e.g. a site pass that did not include it): soon, never in the past
        (T0 - H, SiteState(), Wakeup("s", T0 + timetable.MIN_DELAY, "Renewal")),
        # failing: the backoff's next attempt wins, earlier or later than the renewal moment
        (T0 - H, SiteState(failures=2, next_attempt=T0 + 10 * timedelta(minutes=1)),
         Wakeup("s", T0 + 10 * timedelta(minutes=1), "Backoff")),
        (T0 + 3 * D, SiteState(failures=1, next_attempt=T0 + 4 * D),
         Wakeup("s", T0 + 4 * D, "Backoff")),
        # a backoff already over (the pass saw nothing to retry): only the renewal moment counts
        (T0 + 3 * D, SiteState(failures=1, next_attempt=T0 - H), Wakeup("s", T0 + 3 * D, "Renewal")),
        # no certificate and not failing: only the periodic check
        (None, SiteState(), None),
        # no certificate, failing: retry at the backoff (a rate limit's retry-after is in it)
        (None, SiteState(failures=3, next_attempt=T0 + 100 * timedelta(minutes=1)),
         Wakeup("s", T0 + 100 * timedelta(minutes=1), "Backoff")),
    ],
)
def test_site_wakeup(renew_at: datetime | None, state: SiteState, want: Wakeup | None) -> None:
    assert timetable.site_wakeup(SiteTiming("s", renew_at, state), T0) == want


def test_rate_limit_retry_after_is_a_floor_for_the_wakeup() -> None:
    retry_after = T0 + 5 * H
    rng = random.Random(1)
    st = SiteState(failures=1, next_attempt=policy.backoff(1, rng, retry_after, T0))
    w = timetable.site_wakeup(SiteTiming("s", None, st), T0)
    assert w is not None and w.at >= retry_after


def test_pass_retry_backs_off_and_never_exceeds_the_interval() -> None:
    assert timetable.pass_retry(T0, 12 * H, 1) == T0 + timedelta(minutes=1)
    assert timetable.pass_retry(T0, 12 * H, 2) == T0 + timedelta(minutes=10)
    assert timetable.pass_retry(T0, 12 * H, 9) == T0 + timedelta(minutes=100)
    assert timetable.pass_retry(T0, timedelta(minutes=5), 3) == T0 + timedelta(minutes=5)


def _cert(nb: datetime, lifetime: timedelta) -> ObservedCert:
    return ObservedCert(serial=int(nb.timestamp()), not_before=nb, not_after=nb + lifetime,
                        domains=("a.example",), key_type="ecdsa", issuer="CN=x",
                        fingerprint=f"fp{nb.timestamp()}")


def test_sixty_days_of_a_six_day_certificate_renew_on_time_with_a_12h_check() -> None:
    """Drive the timetable like the daemon does, event by event, with a fixed clock.

    Each renewal must happen at the certificate's renewal moment (half its lifetime left), not
    at the next 12-hourly check, and the number of passes stays small.
    """
    clock = FixedClock(T0)
    rng = random.Random(3)
    lifetime = timedelta(hours=160)  # Let's Encrypt's "shortlived" profile
    cert = _cert(T0, lifetime)
    renewals: list[tuple[datetime, datetime]] = []  # (planned, done)
    passes = 0
    next_check = timetable.next_check(clock.now(), 12 * H, H, rng)
    end = T0 + 60 * D
    while clock.now() < end:
        sched = policy.schedule(cert, before_expiry=None, ari=None, chosen=None, now=clock.now(),
                                rng=random.Random(cert.fingerprint))
        wake = timetable.site_wakeup(SiteTiming("s", sched.renew_at, SiteState()), clock.now())
        assert wake is not None
        at = min(next_check, wake.at)
        clock.advance(at - clock.now())
        passes += 1
        if at == next_check:
            next_check = timetable.next_check(clock.now(), 12 * H, H, rng)
        decision = policy.decide(domains=("a.example",), key_type="ecdsa", cert=cert, sched=sched,
                                 now=clock.now())
        if decision.action.value == "renew":
            renewals.append((sched.renew_at, clock.now()))
            cert = _cert(clock.now(), lifetime)
        assert clock.now() < cert.not_after
    assert len(renewals) == 60 * 24 // 80  # every 80 h (half of 160 h)
    assert all(done == planned for planned, done in renewals)
    assert passes < 60 * 2 + len(renewals) + 1  # checks plus one wake-up per renewal


def test_scaled_clock_maps_its_moments_to_wall_time() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = ScaledClock(start, rate=3600.0)  # an hour per second
    now = clock.now()
    assert abs((now - start).total_seconds()) < 3600  # under a second of real time has passed
    wall = to_wall(clock, now + 2 * H)
    real_in = (wall - datetime.now(UTC)).total_seconds()
    assert 1.9 < real_in <= 2.0
    fixed = FixedClock(T0)
    assert abs((to_wall(fixed, T0 + H) - datetime.now(UTC)).total_seconds() - 3600) < 1
    with pytest.raises(ValueError):
        ScaledClock(start, rate=0)
