"""The sidecar's timers, on APScheduler: each job only puts a request on the main loop's queue."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tlsbridge.clock import Clock, to_wall
from tlsbridge.sidecar.requests import Request


class Jobs:
    """One-shot jobs by id (a new one with the same id replaces the old), in wall-clock time of
    `clock` (an accelerated test clock included)."""

    def __init__(self, clock: Clock, enqueue: Callable[[Request], None]) -> None:
        from apscheduler.executors.debug import DebugExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.clock = clock
        self.enqueue = enqueue
        # Jobs only put a request on the queue, so they run right in the scheduler's thread (no
        # worker pool); late jobs still run (no misfires), piled-up runs of one job coalesce.
        self.scheduler: Any = BackgroundScheduler(
            timezone=UTC,
            executors={"default": DebugExecutor()},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 100},
        )

    def add(self, job_id: str, at: datetime, request: Request) -> None:
        self.scheduler.add_job(self.enqueue, "date", run_date=to_wall(self.clock, at), id=job_id,
                               args=[request], replace_existing=True, name=job_id)

    def remove(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id)

    def alive(self) -> bool:
        thread = getattr(self.scheduler, "_thread", None)
        return bool(self.scheduler.running and thread is not None and thread.is_alive())
