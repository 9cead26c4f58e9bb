"""The sidecar's main loop, one step at a time: requests in, passes, timers and metrics out.

A stand-in reconciler (the real one is tested on its own), a fixed clock, the real APScheduler
(it only times; nothing fires within a test), no HTTP listener, no docker watcher.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import T0
from sidecarkit import make_config, outcome

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.clock import Clock, FixedClock
from tlsbridge.config import Config
from tlsbridge.errors import ConfigError, StateError, TlsbridgeError
from tlsbridge.model import DeliveryReport
from tlsbridge.reconcile import SiteOutcome
from tlsbridge.sidecar.loop import Sidecar
from tlsbridge.sidecar.requests import STOP, Kind, Request, merge
from tlsbridge.sidecar.timetable import Wakeup
from tlsbridge.wiring import build_ports


class Reconciler:
    """Records the passes asked for; answers with `outcomes` or raises `error`."""

    def __init__(self, cfg: Config, memo: CertMemo,
                 on_delivered: Callable[[DeliveryReport], None]) -> None:
        self.cfg = cfg
        self.ports = build_ports(cfg, memo)
        self.on_delivered = on_delivered
        self.passes: list[list[str] | None] = []
        self.error: TlsbridgeError | None = None

    def run_pass(self, names: Iterable[str] | None = None) -> list[SiteOutcome]:
        self.passes.append(list(names) if names is not None else None)
        if self.error is not None:
            raise self.error
        return [outcome(n) for n in (names or self.cfg.sites)]


class Kit:
    def __init__(self, tmp_path: Path) -> None:
        self.cfg = make_config(tmp_path)
        self.next_config: Config | TlsbridgeError = self.cfg
        self.clock = FixedClock(T0)
        self.built: list[Reconciler] = []
        self.sidecar = Sidecar(self.cfg, self.load, self.clock, host="127.0.0.1", port=0,
                               rng=random.Random(7), watch_docker=False, build=self.build)
        self.sidecar.scheduler.start(paused=True)  # jobs are kept, never run

    def load(self) -> Config:
        if isinstance(self.next_config, TlsbridgeError):
            raise self.next_config
        return self.next_config

    def build(self, cfg: Config, clock: Clock, memo: CertMemo,
              on_delivered: Callable[[DeliveryReport], None]) -> Reconciler:
        assert clock is self.clock
        self.built.append(Reconciler(cfg, memo, on_delivered))
        return self.built[-1]  # type: ignore[return-value]

    @property
    def reconciler(self) -> Reconciler:
        return self.built[-1]

    def step(self, *requests: Request) -> None:
        self.sidecar._handle(merge(requests))

    def jobs(self) -> dict[str, object]:
        return {j.id: j for j in self.sidecar.scheduler.get_jobs()}

    def metric(self, line: str) -> bool:
        return line in self.sidecar.metrics.render().decode().splitlines()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    try:
        yield k
    finally:
        k.sidecar.scheduler.shutdown(wait=False)


def test_a_full_pass_makes_it_ready_and_sets_the_next_check(kit: Kit) -> None:
    kit.step(Request(Kind.PASS, None, "start"))
    assert kit.reconciler.passes == [None]
    view = kit.sidecar.view
    assert view.ready and view.last_pass == T0
    assert view.next_check is not None
    assert T0 + timedelta(hours=12) <= view.next_check <= T0 + timedelta(hours=13)  # check_interval + jitter
    assert "check" in kit.jobs()
    assert kit.metric('tlsbridge_passes_total{scope="all"} 1.0')
    assert set(view.outcomes) == {"shop", "blog"}


def test_site_passes_are_merged_and_unknown_sites_dropped(kit: Kit) -> None:
    kit.step(Request(Kind.PASS, frozenset({"shop"}), "due: shop"),
             Request(Kind.PASS, frozenset({"gone"}), "due: gone"),
             Request(Kind.VERIFY, frozenset({"gone"}), "container x started"))
    assert kit.reconciler.passes == [["shop"]]
    assert kit.metric('tlsbridge_passes_total{scope="sites"} 1.0')
    assert kit.sidecar.view.next_check is None  # only a full pass sets the periodic check


def test_a_pass_that_cannot_run_is_retried_and_still_makes_it_ready(kit: Kit) -> None:
    kit.reconciler.error = StateError("state.dir: cannot write")
    kit.step(Request(Kind.PASS, None, "start"))
    assert kit.sidecar.view.ready
    assert kit.metric("tlsbridge_pass_errors_total 1.0")
    first = kit.sidecar.view.next_check
    assert first is not None and T0 < first < T0 + timedelta(hours=12)
    kit.step(Request(Kind.PASS, None, "check_interval"))
    second = kit.sidecar.view.next_check
    assert second is not None and second > first  # backs off, up to check_interval


def test_sighup_with_a_changed_config_rebuilds_and_runs_a_full_pass(kit: Kit, tmp_path: Path) -> None:
    kit.sidecar.wakeups = {"blog": Wakeup("blog", T0 + timedelta(days=1), "Renewal")}
    kit.next_config = make_config(tmp_path, sites="shop: {domains: [shop.example.com]}")
    kit.step(Request(Kind.RELOAD, None, "SIGHUP"))
    assert len(kit.built) == 2 and kit.reconciler.passes == [None]
    assert kit.sidecar.cfg is kit.next_config and "blog" not in kit.sidecar.wakeups
    assert kit.metric('tlsbridge_config_reloads_total{result="ok"} 1.0')


def test_sighup_with_an_invalid_or_unchanged_config_keeps_the_running_one(kit: Kit) -> None:
    kit.next_config = ConfigError("tlsbridge.yaml", "sites.shop.domains", "required")
    kit.step(Request(Kind.RELOAD, None, "SIGHUP"))
    kit.next_config = kit.cfg
    kit.step(Request(Kind.RELOAD, None, "SIGHUP"))
    assert len(kit.built) == 1 and kit.reconciler.passes == []
    assert kit.sidecar.cfg is kit.cfg
    assert kit.metric('tlsbridge_config_reloads_total{result="error"} 1.0')
    assert kit.metric('tlsbridge_config_reloads_total{result="ok"} 1.0')


def test_deliveries_count_the_reloaded_containers(kit: Kit) -> None:
    kit.reconciler.on_delivered(DeliveryReport(reloaded={"shop": ("web1", "web2")}))
    assert kit.metric('tlsbridge_reloads_total{site="shop"} 2.0')


def test_the_docker_state_reaches_the_view_and_the_metrics(kit: Kit) -> None:
    kit.sidecar._docker_state("connected")
    assert kit.sidecar.view.docker_state == "connected" and kit.metric("tlsbridge_docker_events_connected 1.0")
    kit.sidecar._docker_state("reconnecting")
    assert kit.metric("tlsbridge_docker_events_connected 0.0")


def test_a_stop_ends_the_batch_loop(kit: Kit) -> None:
    kit.sidecar.queue.put(Request(Kind.PASS, None, "check_interval"))
    kit.sidecar.queue.put(STOP)
    assert kit.sidecar._next_batch() is None
    kit.sidecar.queue.put(Request(Kind.PASS, None, "check_interval"))
    batch = kit.sidecar._next_batch()
    assert batch is not None and batch.full_pass


def test_a_full_pass_keeps_the_engines_tls_files_from_the_config_alone(tmp_path: Path) -> None:
    """daemon_tls: resolved from the config's section (no command-line flags), files written,
    the server certificate's notAfter exported."""
    cfg = make_config(tmp_path, extra=f"daemon_tls: {{out: {tmp_path}/engine, ips: [192.0.2.10]}}\n")
    kit = Kit(tmp_path)
    kit.sidecar.cfg = cfg
    try:
        kit.step(Request(Kind.PASS, None, "start"))
    finally:
        kit.sidecar.scheduler.shutdown(wait=False)
    assert (tmp_path / "engine" / "daemon.json").exists()
    assert "tlsbridge_daemon_tls_not_after_seconds{cert=\"server\"}" in kit.sidecar.metrics.render().decode()
