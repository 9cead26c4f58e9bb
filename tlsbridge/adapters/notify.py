"""Notifications out (Apprise) and the memory of what was sent (a table of the state store).

Apprise is imported only when a message must go out, so `validate`, `status` and an idle sidecar
never load it. Each target gets its own thread, a timeout per attempt, retries with jittered
backoff (tlsbridge.retry) and one log line when it fails; the caller waits at most `timeout`
in all. A target's URL (it may hold a token) is never logged: a target is named `#N (scheme)`,
and Apprise's own log, which may quote the URL, is silenced and its lines redacted before use.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tlsbridge import retry
from tlsbridge.errors import StateError, TlsbridgeError
from tlsbridge.notify.events import SiteMemory, Standing
from tlsbridge.notify.messages import Message
from tlsbridge.notify.settings import scheme

logger = logging.getLogger(__name__)

ATTEMPTS = 3
QUEUE_SIZE = 64  # batches waiting for the background sender; more are dropped, with a log line


class SendFailed(TlsbridgeError):
    """A target did not accept a message (retried)."""


class BadTarget(TlsbridgeError):
    """Apprise cannot use this URL, or is not installed (never retried)."""


@dataclass
class TargetResult:
    target: str  # "#1 (json)": never the URL
    sent: int = 0
    failed: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.error is None


def target_name(index: int, url: str) -> str:
    return f"#{index + 1} ({scheme(url)})"


def redact(text: str, urls: Sequence[str]) -> str:
    """`text` with every piece of every URL (but its scheme) replaced by ***."""
    for url in urls:
        for piece in sorted(set(re.split(r"[/:@?&=#,]+", url.partition("://")[2])), key=len, reverse=True):
            if len(piece) >= 3:
                text = text.replace(piece, "***")
    return text


# -- sending -------------------------------------------------------------------------------------
def send(urls: Sequence[str], messages: Sequence[Message], timeout: float) -> list[TargetResult]:
    """Send every message to every target, one thread per target; return after at most `timeout`
    seconds (a target still busy then is reported as timed out and left to finish on its own)."""
    results = [TargetResult(target_name(i, url)) for i, url in enumerate(urls)]
    if not messages:
        return results
    threads = []
    for i, url in enumerate(urls):
        t = threading.Thread(target=_send_target, args=(url, urls, messages, timeout, results[i]),
                             name=f"notify-{i + 1}", daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout
    for t, r in zip(threads, results, strict=True):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            r.error = r.error or f"no answer within {timeout:g}s"
            r.failed = len(messages) - r.sent
            logger.warning("notify: target %s: %s; given up for this pass", r.target, r.error)
    return results


def _send_target(url: str, urls: Sequence[str], messages: Sequence[Message], timeout: float,
                 result: TargetResult) -> None:
    for message in messages:
        try:
            retry.retry(lambda m=message: _send_one(url, urls, m, timeout), on=(SendFailed,),  # type: ignore[misc]
                        attempts=ATTEMPTS, what=f"notify: target {result.target}")
            result.sent += 1
        except (SendFailed, BadTarget) as exc:
            result.failed += 1
            result.error = str(exc)
            logger.warning("notify: target %s did not take the %s message for site=%s: %s",
                           result.target, message.kind, message.site, exc)
        except Exception as exc:  # noqa: BLE001 - a notification never takes a pass down
            result.failed += 1
            result.error = f"unexpected error: {exc.__class__.__name__}: {redact(str(exc), urls)}"
            logger.warning("notify: target %s: %s", result.target, result.error)


def _send_one(url: str, urls: Sequence[str], message: Message, timeout: float) -> None:
    try:
        import apprise
    except ImportError:
        raise BadTarget("Apprise is not installed: pip install 'tlsbridge[notify]'") from None
    _quiet_apprise()
    asset = apprise.AppriseAsset(async_mode=False)
    box = apprise.Apprise(asset=asset)
    if not box.add(url):
        raise BadTarget("Apprise does not understand this URL (check its scheme and form)")
    outcome = box.notify(body=message.body, title=message.title, notify_type=message.level,
                         timeout=timeout)
    if not outcome:
        raise SendFailed(_why(outcome, urls))


def _why(outcome: object, urls: Sequence[str]) -> str:
    logs = getattr(outcome, "logs", None)
    lines = [e.message for e in logs() if e.level in ("WARNING", "ERROR", "CRITICAL")] if logs else []
    return redact("; ".join(lines[-2:]), urls) or f"Apprise reported {getattr(outcome, 'status', 'a failure')}"


def _quiet_apprise() -> None:
    # Apprise logs URLs at debug level and hosts in warnings: nothing of it reaches our handlers
    # (no propagation; a NullHandler keeps logging's last-resort stderr handler away). Its
    # warnings still reach the per-call capture that notify() returns (result.logs()), which
    # _why redacts.
    log = logging.getLogger("apprise")
    if log.propagate:
        log.propagate = False
        log.addHandler(logging.NullHandler())
    log.setLevel(logging.WARNING)


class BackgroundSender:
    """For the sidecar: a thread that sends batches from a bounded queue, so no pass waits."""

    def __init__(self, urls: Sequence[str], timeout: float) -> None:
        self.urls, self.timeout = tuple(urls), timeout
        self._queue: queue.Queue[list[Message]] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.results: list[list[TargetResult]] = []  # the last few batches' results (tests, debugging)

    def submit(self, messages: Sequence[Message]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(list(messages))
        except queue.Full:
            logger.warning("notify: %d notification(s) dropped: the targets are too slow to keep up",
                           len(messages))

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for what is queued to go out (the sidecar stopping)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                self.results = [*self.results[-9:], send(self.urls, batch, self.timeout)]
            except Exception as exc:  # noqa: BLE001 - the sender thread must outlive any batch
                logger.warning("notify: unexpected error: %s", redact(str(exc), self.urls))
            finally:
                self._queue.task_done()


class SyncSender:
    """For `renew`: send at once, waiting at most `timeout` in all."""

    def __init__(self, urls: Sequence[str], timeout: float) -> None:
        self.urls, self.timeout = tuple(urls), timeout
        self.results: list[TargetResult] = []

    def submit(self, messages: Sequence[Message]) -> None:
        self.results = send(self.urls, messages, self.timeout)

    def drain(self, timeout: float) -> None:
        pass  # submit() already waited


# -- memory --------------------------------------------------------------------------------------
_SCHEMA = "CREATE TABLE IF NOT EXISTS notify_sent (site TEXT PRIMARY KEY, data TEXT NOT NULL)"


@dataclass
class SentStore:
    """What was announced per site: the table `notify_sent` of `state.dir/state.sqlite3`."""

    directory: Path
    _db: sqlite3.Connection | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.directory / "state.sqlite3"

    def _conn(self, create: bool) -> sqlite3.Connection | None:
        if self._db is None and (create or self.path.exists()):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fresh = not self.path.exists()
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                if fresh:
                    os.chmod(self.path, 0o600)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise StateError(f"state store {self.path}: {exc}") from exc
            self._db = db
        return self._db

    def load(self) -> dict[str, SiteMemory]:
        db = self._conn(create=False)
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT site, data FROM notify_sent").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        out = {}
        for site, data in rows:
            try:
                out[site] = decode(data)
            except (ValueError, KeyError, TypeError):  # unreadable: as if nothing had been sent
                logger.warning("notify: forgot what was sent for site=%s (unreadable record)", site)
        return out

    def save(self, memory: Mapping[str, SiteMemory]) -> None:
        db = self._conn(create=True)
        assert db is not None
        try:
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM notify_sent")
                db.executemany("INSERT INTO notify_sent (site, data) VALUES (?, ?)",
                               [(site, encode(m)) for site, m in memory.items()])
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: cannot save what was sent: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def encode(m: SiteMemory) -> str:
    return json.dumps({"serial": m.serial,
                       "problems": {k: [s.since.isoformat(), s.sent.isoformat()] for k, s in m.problems.items()}},
                      sort_keys=True)


def decode(data: str) -> SiteMemory:
    raw = json.loads(data)
    problems = {k: Standing(datetime.fromisoformat(v[0]), datetime.fromisoformat(v[1]))
                for k, v in raw.get("problems", {}).items()}
    return SiteMemory(problems=problems, serial=raw.get("serial"))
