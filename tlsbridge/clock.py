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
