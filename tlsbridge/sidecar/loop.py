"""`tlsbridge run`: the long-running loop. APScheduler wiring, signals, one pass at a time.

Threads and who does what:

- the main thread runs every pass, one at a time, from a queue of requests (so passes never
  overlap, and SIGTERM can interrupt a running certbot: the certbot adapter kills its child
  when the wait is interrupted);
- APScheduler's BackgroundScheduler only times things: the periodic check (check_interval plus
  jitter after each full pass) and one job per site at its chosen renewal moment or backoff
  retry. Its jobs just enqueue a request;
- the HTTP endpoint (sidecar.endpoint, showing sidecar.view) and the Docker event watcher
  (sidecar.watch) run in their own threads and never touch certificates; the watcher only
  enqueues requests (sidecar.requests), which are merged into one batch per step.

Signals: SIGTERM/SIGINT stop after the current step (a pass still running after GRACE seconds
is abandoned; publication is atomic, so nothing is half-published); SIGHUP reloads the config
(an invalid one is logged and the old one kept). The config file is also watched
(sidecar.configwatch: polled every 2 s), so an edited config is picked up without a signal.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from tlsbridge.adapters.certmemo import CertMemo, memo_file
from tlsbridge.adapters.lock import LockBusy, PassLock
from tlsbridge.clock import Clock
from tlsbridge.config import Config
from tlsbridge.durations import format_duration
from tlsbridge.errors import TlsbridgeError
from tlsbridge.sidecar import timetable
from tlsbridge.sidecar.configwatch import ConfigWatch
from tlsbridge.sidecar.jobs import Jobs
from tlsbridge.sidecar.metrics import Metrics
from tlsbridge.sidecar.requests import STOP, Batch, Kind, PassAbandoned, Request, merge, work
from tlsbridge.sidecar.timetable import Wakeup
from tlsbridge.sidecar.view import SidecarView
from tlsbridge.sidecar.watch import CONNECTED, DockerWatcher

if TYPE_CHECKING:
    from tlsbridge.adapters.docker import DockerEvent
    from tlsbridge.discovery.apply import Discovery
    from tlsbridge.model import DeliveryReport
    from tlsbridge.notify.dispatch import Notifier
    from tlsbridge.reconcile import Reconciler
    from tlsbridge.sidecar.endpoint import HttpApi
    from tlsbridge.status import SiteStatus

logger = logging.getLogger(__name__)

GRACE = 4.0  # seconds a running pass gets to finish after SIGTERM before it is abandoned
SIGNAL_POLL = 0.5  # seconds: the longest an idle loop takes to run a signal caught by another thread
LOCK_WAIT = 600.0  # seconds a pass waits for another one (a `renew`) holding the pass lock
UNHEALTHY_AFTER = 3  # whole passes failed in a row before /healthz answers 503

BuildReconciler = Callable[[Config, Clock, CertMemo, "Callable[[DeliveryReport], None]"], "Reconciler"]


def _build_reconciler(cfg: Config, clock: Clock, memo: CertMemo,
                      on_delivered: Callable[[DeliveryReport], None]) -> Reconciler:
    from tlsbridge.sidecar.worker import build_reconciler  # work to do: in a child process

    return build_reconciler(cfg, clock, memo, on_delivered)


class Sidecar:
    """`tlsbridge run`: the main loop, its timers, signals, endpoint and Docker watcher."""

    def __init__(self, cfg: Config, load_config: Callable[[], Config], clock: Clock, *,
                 host: str, port: int, rng: random.Random | None = None,
                 watch_docker: bool = True, token: str | None = None,
                 build: BuildReconciler = _build_reconciler, watch_config: bool = True) -> None:
        self.cfg = cfg
        self._yaml = cfg  # the config file's own sites; self.cfg adds the discovered ones
        self.discovery = _discovery(cfg)
        self._load_config = load_config
        self._build = build
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = Metrics()
        self.memo = CertMemo()  # the process's parsed certificates, across config reloads
        self.reconciler = self._reconciler(cfg)
        self.queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.stopping = False
        self.busy_since: float | None = None
        self._abandoning = False
        self._failed_passes = 0
        self.wakeups: dict[str, Wakeup] = {}
        self.view = SidecarView(self, self.metrics)
        self._listen = (host, port)
        self._token = token
        self.http: HttpApi | None = None
        self.jobs = Jobs(clock, self.enqueue)
        self.scheduler = self.jobs.scheduler
        self.watcher: DockerWatcher | None = None
        self._watch_docker = watch_docker
        self.notifier: Notifier | None = None  # made at the first pass with notify.urls set
        self.config_watch = ConfigWatch(lambda: Path(self.cfg.source), self.enqueue) if watch_config else None

    def now(self) -> datetime:
        return self.clock.now()

    # -- life cycle ----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT. Returns the exit code (0)."""
        from tlsbridge.sidecar.endpoint import HttpApi

        self.http = HttpApi(self.view, *self._listen, token=self._token)
        self._install_signals()
        self.memo.load(self._memo_file())
        self.http.start()
        self.scheduler.start()
        c = self.cfg
        logger.info("run: serving http://%s:%d/ (healthz, readyz, metrics, status page); %d site(s), "
                    "check every %s + up to %s jitter", *self.http.server.server_address[:2],
                    len(c.sites), format_duration(c.renewal.check_interval),
                    format_duration(c.renewal.jitter))
        if self._watch_docker:
            self._start_watcher()
        if self.config_watch is not None:
            self.config_watch.start()
        self.queue.put(Request(Kind.PASS, None, "start"))
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                try:
                    self._handle(batch)
                except PassAbandoned:
                    logger.warning("run: stop requested: abandoned the pass underway (what was "
                                   "published stays intact; the next start finishes the work)")
                    break
                except Exception as exc:  # noqa: BLE001 - keep serving; the next pass retries
                    logger.error("run: unexpected error: %s: %s (run with -v for the traceback)",
                                 exc.__class__.__name__, exc)
                    logger.debug("run: traceback", exc_info=True)
        finally:
            self._shutdown()
        return 0

    def _next_batch(self) -> Batch | None:
        """Every request queued now, merged; None when it is time to stop."""
        while True:
            try:
                requests = [self.queue.get(timeout=SIGNAL_POLL)]
                break
            except queue.Empty:
                # The kernel may hand a signal to any thread; Python then runs its handler only
                # when this thread next runs Python code, which a get() without timeout would
                # postpone until some other request came (measured: a lost SIGHUP).
                continue
        while True:
            try:
                requests.append(self.queue.get_nowait())
            except queue.Empty:
                break
        batch = merge(requests)
        if self.stopping or batch.stop:
            logger.info("run: stopping")
            return None
        return batch

    def _shutdown(self) -> None:
        self.stopping = True
        if self.watcher is not None:
            self.watcher.stop()
        if self.config_watch is not None:
            self.config_watch.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            self.http.stop()
        if self.notifier is not None:  # the last pass's messages: at most GRACE seconds more
            self.notifier.close(wait=GRACE)
        logger.info("run: stopped")

    # -- signals (handlers run in the main thread, between bytecodes: keep them tiny) ------------
    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            self.queue.put(STOP)  # SimpleQueue.put is reentrant: safe in a signal handler
            if self.busy_since is not None:
                t = threading.Timer(GRACE, self._abandon)
                t.daemon = True
                t.start()
            return
        if self.busy_since is not None and not self._abandoning:
            self._abandoning = True
            raise PassAbandoned()

    def _abandon(self) -> None:
        if self.busy_since is not None and not self._abandoning:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.queue.put(Request(Kind.RELOAD, None, "SIGHUP"))

    # -- requests --------------------------------------------------------------------------------
    def _handle(self, batch: Batch) -> None:
        changed = self._reload_config() if batch.reload_config else False
        found = self._discover() if batch.discover or batch.full_pass or changed else frozenset()
        todo = work(batch, set(self.cfg.sites), changed)
        if found and todo.pass_sites is not None:  # new apps: a pass over them right away
            todo = replace(todo, pass_sites=tuple(sorted({*todo.pass_sites, *found})), run_pass=True)
        if todo.run_pass:
            self._pass(list(todo.pass_sites) if todo.pass_sites is not None else None, todo.why)
        if todo.verify_sites:
            self._verify(list(todo.verify_sites))

    def enqueue(self, request: Request) -> None:
        """From any thread (APScheduler jobs, the Docker watcher)."""
        self.queue.put(request)

    # -- passes ----------------------------------------------------------------------------------
    def _pass(self, names: list[str] | None, why: str) -> None:
        start = time.perf_counter()
        started = self.clock.now()
        self.busy_since = time.monotonic()
        lock = PassLock(self.cfg.state.dir)  # one pass at a time per config, also with `renew`
        try:
            lock.acquire(LOCK_WAIT, stop=lambda: self.stopping, on_wait=lambda pid: logger.info(
                "run: waiting for the pass of PID %s to finish", pid or "?"))
            outcomes = self.reconciler.run_pass(names)
        except Exception as exc:  # noqa: BLE001 - the daemon outlives any one failed pass
            if self.stopping and isinstance(exc, LockBusy):
                return
            self._failed_passes += 1
            self.metrics.pass_errors.inc()
            retry = timetable.pass_retry(self.clock.now(), self.cfg.renewal.check_interval,
                                         self._failed_passes)
            what = str(exc) if isinstance(exc, TlsbridgeError) else (
                f"unexpected error: {exc.__class__.__name__}: {exc} (run with -v for the traceback)")
            logger.error("run: the pass could not run (%s): %s; retrying at %s", why, what, _ts(retry))
            logger.debug("run: pass traceback", exc_info=True)
            self._schedule_check(retry)
            if not self.view.ready:
                self.view.ready = True  # the first pass did finish, if badly: /readyz must say so
            return
        finally:
            lock.release()
            self.busy_since = None
        elapsed = time.perf_counter() - start
        self._failed_passes = 0
        now = self.clock.now()
        self.metrics.passes.labels("all" if names is None else "sites").inc()
        self.metrics.pass_duration.set(elapsed)
        self.metrics.last_pass.set(now.timestamp())
        if names is None:
            if self.cfg.daemon_tls is not None:
                self._daemon_tls(now)
            self._schedule_check(timetable.next_check(now, self.cfg.renewal.check_interval,
                                                      self.cfg.renewal.jitter, self.rng))
        self._refresh(now)
        self.view.record(outcomes, now)  # after the gauges: a counter that moved means all is current
        self.memo.save(self._memo_file())
        failed = [o.site for o in outcomes if not o.ok]
        issued = [o.site for o in outcomes if o.issued]
        nxt = min(self.wakeups.values(), key=lambda w: w.at, default=None)
        logger.log(logging.WARNING if failed else logging.INFO,
                   "run: pass (%s) started %s over %d site(s) in %.0f ms: %s issued, %s failed; "
                   "next check %s, next site wake-up %s", why or "scheduled", _ts(started),
                   len(outcomes), elapsed * 1000, _count(issued), _count(failed),
                   _ts(self.view.next_check), nxt or "none")
        if not self.view.ready:
            self.view.ready = True
            logger.info("run: first pass done; ready")

    @property
    def passes_failing(self) -> bool:
        """Passes cannot run at all (several in a row failed as a whole): /healthz says 503 so
        that an orchestrator restarts the sidecar."""
        return self._failed_passes >= UNHEALTHY_AFTER

    def _discover(self) -> frozenset[str]:
        """Discovery: the labelled apps' sites join self.cfg; returns the new or changed ones."""
        if self.discovery is None:
            return frozenset()
        synced = self.discovery.follow(self._yaml, self.clock.now())
        if synced is None:
            return frozenset()
        self.view.discovery = synced
        self.metrics.set_discovered({n: s.discovered for n, s in synced.cfg.sites.items() if s.discovered},
                                    [(k.container, k.label) for k in synced.skips])
        if synced.cfg.sites != self.cfg.sites:
            self.cfg = synced.cfg
            self.reconciler = self._reconciler(self.cfg)
            self.metrics.forget_sites(self.cfg.sites)
        if synced.wake_at is not None:
            self._add_job("discovery", synced.wake_at, Request(Kind.DISCOVER, None, "discovery grace"))
        return synced.changed

    def _on_app(self, event: DockerEvent | None) -> None:
        """From the watcher's thread: a container event, or None after (re)connecting."""
        from tlsbridge.discovery.rules import DOMAINS

        if self.discovery is not None and (event is None or DOMAINS in event.attributes):
            if event is not None:
                self.discovery.seen(event.id, event.action)
            why = "docker connected" if event is None else f"container {event.name} {event.action}"
            self.enqueue(Request(Kind.DISCOVER, None, why))

    def _reconciler(self, cfg: Config) -> Reconciler:
        return self._build(cfg, self.clock, self.memo, self._delivered)

    def _delivered(self, report: DeliveryReport) -> None:
        self.metrics.count_reloads(report.reloaded)

    def _memo_file(self) -> Path:
        return memo_file(self.cfg.state.dir)

    def _refresh(self, now: datetime) -> None:
        """Re-read every site's status; update metrics and the per-site wake-up jobs."""
        from tlsbridge.status import collect

        rows = collect(self.cfg, self.reconciler.ports, now)
        timings = [timetable.SiteTiming(r.name, r.renew_after, r.site_state) for r in rows]
        wakeups = timetable.site_wakeups(timings, now)
        self.view.update_metrics(rows, wakeups)
        self._notify(rows, now)
        for name in set(self.wakeups) - set(wakeups):
            self._remove_job(f"due:{name}")
        for name, w in wakeups.items():
            old = self.wakeups.get(name)
            if old is None or old.at != w.at:
                self._add_job(f"due:{name}", w.at, Request(Kind.PASS, frozenset({name}), f"due: {name}"))
        self.wakeups = wakeups

    def _notify(self, rows: list[SiteStatus], now: datetime) -> None:
        """notify.urls: announce what changed (sent from a background thread: no pass waits)."""
        if self.cfg.notify.enabled:
            from tlsbridge.notify.dispatch import Notifier

            if self.notifier is None or self.notifier.cfg != self.cfg.notify:
                self.notifier = Notifier(self.cfg.notify, self.cfg.state.dir, background=True)
            self.notifier.after_pass(rows, now, self.view.next_check)

    def _verify(self, names: list[str]) -> None:
        """Check that the sites' containers serve what is published (after a container start)."""
        from tlsbridge.sidecar.reverify import verify_sites

        self.busy_since = time.monotonic()
        try:
            verify_sites(self.cfg, self.metrics, names)
        finally:
            self.busy_since = None

    def _daemon_tls(self, now: datetime) -> None:
        """Keep the Docker engine's TLS server certificate fresh (config `daemon_tls`)."""
        from tlsbridge.daemon_tls.apply import ensure_daemon_tls, server_cert_expiry
        from tlsbridge.daemon_tls.settings import resolve_settings

        try:
            settings = resolve_settings(self.cfg)  # no flags: the config's section decides
            result = ensure_daemon_tls(settings, now)
        except TlsbridgeError as exc:
            self.metrics.failures.labels("daemon_tls", type(exc).__name__).inc()
            logger.error("run: daemon_tls: %s", exc)
            return
        if result.restart_needed:
            logger.warning("run: daemon_tls: the engine's TLS files in %s changed; dockerd reads "
                           "them only when it starts: restart it", settings.out)
        expiry = server_cert_expiry(settings.out)
        if expiry is not None:
            self.metrics.daemon_tls_not_after.labels("server").set(expiry.timestamp())

    # -- config reload ---------------------------------------------------------------------------
    def _reload_config(self) -> bool:
        """SIGHUP or a changed file: load the config again; True when it changed (a full pass follows)."""
        try:
            cfg = self._load_config()
        except TlsbridgeError as exc:
            self.metrics.config_reloads.labels("error").inc()
            logger.error("run: config reload: the config is invalid, keeping the running one: %s", exc)
            return False
        self.metrics.config_reloads.labels("ok").inc()
        if cfg == self._yaml:
            logger.info("run: config reload: the config is unchanged")
            return False
        docker_changed = cfg.docker != self.cfg.docker
        if cfg.discovery != self._yaml.discovery:
            self.discovery = _discovery(cfg)
        self.cfg = self._yaml = cfg
        self.reconciler = self._reconciler(cfg)
        if docker_changed and self.watcher is not None:
            self.watcher.reconnect()
        for name in set(self.wakeups) - set(cfg.sites):
            self._remove_job(f"due:{name}")
        self.wakeups = {k: w for k, w in self.wakeups.items() if k in cfg.sites}
        self.metrics.forget_sites(cfg.sites)
        logger.info("run: config reloaded from %s (%d site(s)); running a pass",
                    cfg.source, len(cfg.sites))
        return True

    def _schedule_check(self, at: datetime) -> None:
        self.view.next_check = at
        self._add_job("check", at, Request(Kind.PASS, None, "check_interval"))

    def _add_job(self, job_id: str, at: datetime, request: Request) -> None:
        self.jobs.add(job_id, at, request)

    def _remove_job(self, job_id: str) -> None:
        self.jobs.remove(job_id)

    def scheduler_alive(self) -> bool:
        return self.jobs.alive()

    def _start_watcher(self) -> None:
        self.watcher = DockerWatcher(lambda: self.cfg, self.enqueue, self._docker_state,
                                     on_app=self._on_app)
        self.watcher.start()

    def _docker_state(self, state: str | None) -> None:
        """From the watcher's thread: "connected", "reconnecting", or None (not watching)."""
        self.view.docker_state = state
        self.metrics.docker_up.set(1 if state == CONNECTED else 0)


def _discovery(cfg: Config) -> Discovery | None:
    from tlsbridge.discovery.apply import Discovery

    return Discovery() if cfg.discovery.enabled else None


def _count(names: list[str]) -> str:
    return f"{len(names)} ({', '.join(names)})" if names else "0"


def _ts(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"

