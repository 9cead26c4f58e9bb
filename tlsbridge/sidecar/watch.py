"""`run`'s reactions to the Docker engine: container starts trigger a verification.

`DockerWatcher` follows the engine's event stream in a thread. When a container that is a target
of some site starts, it queues a verify request for the site (the main loop runs it: see
sidecar.reverify). A lost stream is logged once and reconnected with capped exponential backoff;
on reconnection the missed events are replayed (`since`), so a start during the outage still
counts. The watcher knows the loop only through callables: the current config, `enqueue`, and
`on_state` (told "connected", "reconnecting", or None once it stopped).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from tlsbridge.errors import DockerError
from tlsbridge.retry import scale
from tlsbridge.sidecar.requests import Kind, Request

if TYPE_CHECKING:
    from tlsbridge.adapters.docker import DockerEvent
    from tlsbridge.config import Config, DockerConfig

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MIN_RETRY = 0.1
REPLAY = timedelta(seconds=5)  # on reconnection, replay events from a little before the loss

CONNECTED = "connected"
RECONNECTING = "reconnecting"


class EventStream(Protocol):
    def __iter__(self) -> Iterator[DockerEvent]: ...
    def close(self) -> None: ...


Filters = Mapping[str, "str | Sequence[str]"]
OpenEvents = Callable[["DockerConfig", Filters, "datetime | None"], EventStream]
# die/destroy: discovery's apps going away (a start verifies sites and discovers apps)
FILTERS: Filters = {"type": "container", "event": ["start", "die", "destroy"]}
OnApp = Callable[["DockerEvent | None"], None]


def _open_events(cfg: DockerConfig, filters: Filters, since: datetime | None) -> EventStream:
    from tlsbridge.adapters.docker_events import events

    return events(cfg, filters, since=since)


def backoff(failures: int, jitter: float) -> float:
    """Seconds to wait before reconnection attempt number `failures` + 1 (`jitter` in [0, 1))."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (failures - 1)) * (0.5 + 0.5 * jitter) * scale()
    return max(delay, MIN_RETRY)  # never a busy loop, even with scale 0


class DockerWatcher:
    def __init__(self, config: Callable[[], Config], enqueue: Callable[[Request], None],
                 on_state: Callable[[str | None], None], *, open_events: OpenEvents = _open_events,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rng: random.Random | None = None, on_app: OnApp | None = None,
                 owns: Callable[[Config, str], bool] | None = None) -> None:
        self._config = config
        self._owns = owns or owned_container
        self._enqueue = enqueue
        self._on_state = on_state
        self._open = open_events
        self._now = now
        self._rng = rng or random.Random()
        self._on_app = on_app  # discovery: told every container event, and None on (re)connection
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._reconnect = False
        self._thread = threading.Thread(target=self.run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._close()

    def reconnect(self) -> None:
        """Reconnect now, with the current config (after a SIGHUP changed `docker`)."""
        self._reconnect = True
        self._close()

    def _close(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.close()

    def run(self) -> None:
        """The thread's body: follow the stream until `stop`, reconnecting when it is lost."""
        failures = 0
        lost_at: datetime | None = None
        while not self._stop.is_set():
            stream = None
            try:
                since = lost_at - REPLAY if lost_at is not None else None
                # the config may have been reloaded: read docker settings each time
                stream = self._open(self._config().docker, FILTERS, since)
                self._stream = stream
                self._on_state(CONNECTED)
                if lost_at is not None:
                    logger.info("run: Docker event stream reconnected")
                failures, lost_at = 0, None
                if self._on_app is not None:
                    self._on_app(None)  # a full re-list: what happened while not connected
                for event in stream:
                    if self._on_app is not None:
                        self._on_app(event)
                    if event.action == "start":
                        self._on_start(event)
                    if self._stop.is_set():
                        break
                else:
                    raise DockerError("the engine closed the event stream")
            except (DockerError, OSError) as exc:
                if self._stop.is_set():
                    break
                if self._reconnect:  # asked for, not lost: no warning, no wait
                    self._reconnect = False
                    lost_at = lost_at or self._now()  # replay what the switch might miss
                    continue
                failures += 1
                self._on_state(RECONNECTING)
                if lost_at is None:
                    lost_at = self._now()
                    logger.warning("run: lost the Docker event stream (%s); retrying with backoff "
                                   "(logged once until it is back)", exc)
                else:
                    logger.debug("run: Docker event stream still unavailable: %s", exc)
                self._stop.wait(backoff(failures, self._rng.random()))
            finally:
                self._stream = None
                if stream is not None:
                    stream.close()
        self._on_state(None)

    def _on_start(self, event: DockerEvent) -> None:
        cfg = self._config()
        sites = sites_of_container(cfg, event)
        if sites and not self._owns(cfg, event.id):
            logger.debug("run: container %s started; another tlsbridge's (delivery.scope)", event.name)
            return
        if sites:
            logger.info("run: container %s started; verifying site(s) %s", event.name or event.id[:12],
                        ", ".join(sites))
            self._enqueue(Request(Kind.VERIFY, frozenset(sites), f"container {event.name} started"))


def owned_container(cfg: Config, container_id: str) -> bool:
    """Whether a started container is this instance's (delivery.scope: it mounts our published
    folder, or no other instance's). True when that cannot be told: the verification that
    follows resolves the targets with the scope again."""
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.delivery.scope import own_scope
    from tlsbridge.errors import TlsbridgeError

    adapter = DockerAdapter(cfg.docker)
    try:
        return own_scope(cfg.publish.dir, adapter).owns(adapter.container(container_id))
    except TlsbridgeError:
        return True
    finally:
        adapter.close()


def sites_of_container(cfg: Config, event: DockerEvent) -> list[str]:
    """The sites whose reload targets include the container an event is about."""
    from tlsbridge.targets import ContainerInfo, resolve

    labels = {k: v for k, v in event.attributes.items() if k != "name"}
    c = ContainerInfo(id=event.id, name=event.name, state="running", labels=labels)
    return [s.name for s in cfg.sites.values() if resolve(s, [c]).targets]
