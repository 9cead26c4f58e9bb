"""An injectable clock: UTC-aware datetimes only.

Pure code takes `now` as an argument; the wiring passes `Clock.now()`. Tests and the
accelerated-schedule checks pass a `FixedClock` or an offset through $TLSBRIDGE_FAKE_NOW.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real time, optionally shifted by $TLSBRIDGE_FAKE_NOW (ISO 8601) for tests."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        fake = os.environ.get("TLSBRIDGE_FAKE_NOW")
        if fake:
            target = datetime.fromisoformat(fake)
            if target.tzinfo is None:
                target = target.replace(tzinfo=UTC)
            self._offset = target - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = at

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class ScaledClock:
    """A clock that runs `rate` times faster than real time from `start` (for schedule tests).

    `to_wall` maps a moment of this clock to the real time at which it will be reached, which
    is what a real-time scheduler (APScheduler) needs.
    """

    def __init__(self, start: datetime, rate: float) -> None:
        if start.tzinfo is None or rate <= 0:
            raise ValueError("ScaledClock needs an aware start and a positive rate")
        self.rate = rate
        self._start = start
        self._real = datetime.now(UTC)

    def now(self) -> datetime:
        return self._start + (datetime.now(UTC) - self._real) * self.rate

    def to_wall(self, at: datetime) -> datetime:
        return datetime.now(UTC) + (at - self.now()) / self.rate


def clock_from_env() -> Clock:
    """SystemClock, or a ScaledClock when $TLSBRIDGE_FAKE_RATE (a speed factor) is set."""
    rate = os.environ.get("TLSBRIDGE_FAKE_RATE")
    system = SystemClock()
    if not rate:
        return system
    return ScaledClock(system.now(), float(rate))


def to_wall(clock: Clock, at: datetime) -> datetime:
    """The real time at which `clock` shows `at` (identity for an unshifted SystemClock)."""
    if isinstance(clock, ScaledClock):
        return clock.to_wall(at)
    return datetime.now(UTC) + (at - clock.now())
