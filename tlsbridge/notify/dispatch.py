"""After a pass: decide what to announce (events), remember it (the state store's notify_sent
table), and hand the messages to a sender (adapters.notify). Used by `renew` (at its end, waiting
at most notify.timeout) and `run` (after each pass, sending in a background thread).

Remembering happens when the messages are handed over: a target that is down misses that message
(logged), and a problem that still stands is repeated the next day.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from tlsbridge.adapters.notify import BackgroundSender, SentStore, SyncSender
from tlsbridge.errors import StateError
from tlsbridge.notify import events
from tlsbridge.notify.messages import Message, render
from tlsbridge.notify.settings import NotifyConfig
from tlsbridge.status import SiteStatus

logger = logging.getLogger(__name__)


class Sender(Protocol):
    def submit(self, messages: Sequence[Message]) -> None: ...
    def drain(self, timeout: float) -> None: ...


class Notifier:
    """One per config: decides after each pass and submits what must be said."""

    def __init__(self, cfg: NotifyConfig, state_dir: Path, *, background: bool,
                 sender: Sender | None = None) -> None:
        self.cfg = cfg
        self.store = SentStore(state_dir)
        timeout = cfg.timeout.total_seconds()
        self.sender: Sender = sender or (BackgroundSender(cfg.urls, timeout) if background
                                         else SyncSender(cfg.urls, timeout))

    def after_pass(self, rows: Sequence[SiteStatus], now: datetime,
                   next_pass: datetime | None = None) -> list[Message]:
        """Decide, remember, submit. Never raises: notifications never take a pass down."""
        try:
            memory = self.store.load()
            found, new = events.decide(rows, memory, now, self.cfg)
            if new != memory:
                self.store.save(new)
            messages = [render(e, now, next_pass) for e in found]
            for m in messages:
                logger.info("notify: site=%s: sending the %s notification", m.site, m.kind)
            if messages:
                self.sender.submit(messages)
        except StateError as exc:
            logger.warning("notify: %s (no notifications this pass)", exc)
            return []
        except Exception as exc:  # noqa: BLE001 - a notification never takes a pass down
            logger.warning("notify: unexpected error: %s: %s (no notifications this pass)",
                           exc.__class__.__name__, exc)
            logger.debug("notify: traceback", exc_info=True)
            return []
        return messages

    def close(self, wait: float = 0.0) -> None:
        """Let queued messages go out for up to `wait` seconds; close the store."""
        self.sender.drain(wait)
        self.store.close()


def notifier_for(cfg: NotifyConfig, state_dir: Path, *, background: bool) -> Notifier | None:
    """A Notifier when `notify.urls` is set, else None."""
    return Notifier(cfg, state_dir, background=background) if cfg.enabled else None


def after_renew(cfg: NotifyConfig, state_dir: Path, rows: Sequence[SiteStatus], now: datetime) -> None:
    """`renew`'s end: announce, waiting at most notify.timeout for the targets."""
    notifier = notifier_for(cfg, state_dir, background=False)
    if notifier is not None:
        try:
            notifier.after_pass(rows, now)
        finally:
            notifier.close()
