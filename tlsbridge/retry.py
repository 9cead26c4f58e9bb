"""Retries that name what they retry on, with exponential backoff and full jitter.

Set $TLSBRIDGE_RETRY_SCALE=0 to turn the waits off (tests), never by patching sleep.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


def scale() -> float:
    try:
        return float(os.environ.get("TLSBRIDGE_RETRY_SCALE", "1"))
    except ValueError:
        return 1.0


def retry(
    fn: Callable[[], T],
    *,
    on: tuple[type[BaseException], ...],
    attempts: int = 3,
    base: float = 0.5,
    cap: float = 10.0,
    what: str = "request",
) -> T:
    """Call `fn`, retrying on the given exceptions with backoff (base * 2**n, full jitter)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except on as exc:
            if attempt == attempts:
                raise
            delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1))) * scale()
            logger.warning("%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
