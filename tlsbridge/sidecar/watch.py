"""`run`'s reactions to the Docker engine: container starts trigger a verification.

`DockerWatcher` follows the engine's event stream in a thread. When a container that is a target
of some site starts, the site is queued for `verify_sites`, run by the main loop: probe what the
container serves, and reload it (then verify again) only if that is not the published
certificate. A lost stream is logged once and reconnected with capped exponential backoff; on
reconnection the missed events are replayed (`since`), so a start during the outage still counts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tlsbridge.errors import DockerError, TlsbridgeError
from tlsbridge.retry import scale

if TYPE_CHECKING:
    from tlsbridge.adapters.docker import DockerAdapter, DockerEvent
    from tlsbridge.config import Config, Site
    from tlsbridge.model import ObservedCert
    from tlsbridge.sidecar.loop import Daemon

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MIN_RETRY = 0.1
REPLAY = timedelta(seconds=5)  # on reconnection, replay events from a little before the loss
START_TIMEOUT = 10.0  # how long a just-started container gets to answer TLS


class DockerWatcher:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._stop = threading.Event()
        self._stream: object | None = None
        self._reconnect = False
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._loop, name="docker-events", daemon=True)

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
            stream.close()  # type: ignore[attr-defined]

    def _set(self, state: str | None, up: int) -> None:
        self.daemon.view.docker_state = state
        self.daemon.metrics.docker_up.set(up)

    def _loop(self) -> None:
        from tlsbridge.adapters.docker_events import events

        failures = 0
        lost_at: datetime | None = None
        while not self._stop.is_set():
            stream = None
            try:
                since = lost_at - REPLAY if lost_at is not None else None
                # the config may have been reloaded: read docker settings each time
                stream = events(self.daemon.cfg.docker, {"type": "container", "event": ["start"]},
                                since=since)
                self._stream = stream
                self._set("connected", 1)
                if lost_at is not None:
                    logger.info("run: Docker event stream reconnected")
                failures, lost_at = 0, None
                for event in stream:
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
                    lost_at = lost_at or datetime.now(UTC)  # replay what the switch might miss
                    continue
                failures += 1
                self._set("reconnecting", 0)
                if lost_at is None:
                    lost_at = datetime.now(UTC)
                    logger.warning("run: lost the Docker event stream (%s); retrying with backoff "
                                   "(logged once until it is back)", exc)
                else:
                    logger.debug("run: Docker event stream still unavailable: %s", exc)
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1))
                delay *= (0.5 + 0.5 * self._rng.random()) * scale()
                self._stop.wait(max(delay, MIN_RETRY))  # never a busy loop, even with scale 0
            finally:
                self._stream = None
                if stream is not None:
                    stream.close()
        self._set(None, 0)

    def _on_start(self, event: DockerEvent) -> None:
        sites = sites_of_container(self.daemon.cfg, event)
        if sites:
            from tlsbridge.sidecar.loop import Request

            logger.info("run: container %s started; verifying site(s) %s", event.name or event.id[:12],
                        ", ".join(sites))
            self.daemon.enqueue(Request("verify", frozenset(sites), f"container {event.name} started"))


def sites_of_container(cfg: Config, event: DockerEvent) -> list[str]:
    """The sites whose reload targets include the container an event is about."""
    from tlsbridge.targets import ContainerInfo, resolve

    labels = {k: v for k, v in event.attributes.items() if k != "name"}
    c = ContainerInfo(id=event.id, name=event.name, state="running", labels=labels)
    return [s.name for s in cfg.sites.values() if resolve(s, [c]).targets]


def verify_sites(daemon: Daemon, names: list[str]) -> None:
    """Probe each site's running targets; reload and re-verify those serving something else."""
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.adapters.publish import Publisher
    from tlsbridge.certinfo import parse_pem

    cfg = daemon.cfg
    publisher = Publisher(cfg.publish.dir)
    adapter = DockerAdapter(cfg.docker)
    try:
        for name in names:
            site = cfg.sites[name]
            pem = publisher.read(name, "fullchain.pem")
            if pem is None:
                continue  # nothing published yet: the next pass bootstraps and issues
            want = parse_pem(pem)
            try:
                stale = _stale_targets(adapter, site, want.fingerprint)
            except TlsbridgeError as exc:
                logger.warning("site=%s cannot verify after a container start: %s", name, exc)
                continue
            if not stale:
                continue
            daemon.metrics.verify_failures.labels(name).inc()
            logger.warning("site=%s %s; reloading", name, "; ".join(stale))
            _redeliver(daemon, adapter, site, want)
    finally:
        adapter.close()


def _stale_targets(adapter: DockerAdapter, site: Site, want: str) -> list[str]:
    """Messages for the site's targets that do not serve `want` (sha256 of the published leaf)."""
    from tlsbridge.adapters.tlsprobe import served_leaf
    from tlsbridge.delivery.verify import fingerprint
    from tlsbridge.targets import probe_address, resolve, sni_for

    addrs: list[tuple[str, str, int]] = []
    if site.verify is not None:
        addrs.append((f"{site.verify[0]}:{site.verify[1]}", *site.verify))
    else:
        own = adapter.own_networks()
        for c in resolve(site, adapter.containers()).targets:
            addr = probe_address(c, own) if c.running else None
            if addr is not None:
                addrs.append((f"container {c.name}", addr, 443))
    out = []
    for label, host, port in addrs:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # a container that just started may not listen yet
            try:
                der = served_leaf(host, port, sni_for(site), timeout=2.0)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    out.append(f"{label} does not answer TLS on {host}:{port} ({exc})")
                    der = None
                    break
                time.sleep(0.1)
        if der is not None and fingerprint(der) != want:
            out.append(f"{label} serves a certificate other than the published one")
        elif der is not None:
            logger.info("site=%s verified: %s serves the published certificate", site.name, label)
    return out


def _redeliver(daemon: Daemon, adapter: DockerAdapter, site: Site, want: ObservedCert) -> None:
    from tlsbridge.delivery.containers import DockerDeliverer

    errors = DockerDeliverer(daemon.cfg, adapter).deliver([(site, want)])
    daemon.metrics.reloads.labels(site.name).inc()
    if site.name in errors:
        daemon.metrics.verify_failures.labels(site.name).inc()
        logger.error("site=%s reload after a container start failed: %s", site.name, errors[site.name])


class CountingDeliverer:
    """Wraps the reconciler's deliverer to count reloads per site for the metrics.

    After a delivery, each site that did not fail counts its running target containers (what
    was reloaded, or started, and verified); one extra container listing per delivery, and
    deliveries only follow a publication.
    """

    def __init__(self, inner: Any, daemon: Daemon) -> None:
        self.inner = inner
        self.daemon = daemon

    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        result: Mapping[str, TlsbridgeError] = self.inner.bootstrap(sites)
        return result

    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> Mapping[str, TlsbridgeError]:
        errors: Mapping[str, TlsbridgeError] = self.inner.deliver(items)
        from tlsbridge.targets import resolve

        try:
            real = getattr(self.inner, "real", self.inner)  # wiring.LazyDeliverer holds the real one
            containers = real.docker.containers()
        except (TlsbridgeError, AttributeError) as exc:
            logger.debug("run: cannot count reloads: %s", exc)
            return errors
        for site, _ in items:
            if site.name not in errors:
                n = sum(1 for c in resolve(site, containers).targets if c.running)
                if n:
                    self.daemon.metrics.reloads.labels(site.name).inc(n)
        return errors
