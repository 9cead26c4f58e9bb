"""What the sidecar shows (health, readiness, metrics, the status page), read from a stand-in of
the loop through the view's LoopState protocol: no threads, no docker, a fixed clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from helpers import T0
from sidecarkit import make_config, outcome

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.config import Config
from tlsbridge.model import Action
from tlsbridge.sidecar.metrics import Metrics
from tlsbridge.sidecar.timetable import Wakeup
from tlsbridge.sidecar.view import LoopState, SidecarView


@dataclass
class Loop:
    cfg: Config
    wakeups: Mapping[str, Wakeup] = field(default_factory=dict)
    stopping: bool = False
    busy_since: float | None = None
    alive: bool = True
    memo: CertMemo = field(default_factory=CertMemo)
    passes_failing: bool = False

    def now(self) -> datetime:
        return T0

    def scheduler_alive(self) -> bool:
        return self.alive


def view_of(tmp_path: Path) -> tuple[SidecarView, Loop, Metrics]:
    loop = Loop(make_config(tmp_path))
    metrics = Metrics()
    state: LoopState = loop  # the stand-in is what the protocol asks for
    return SidecarView(state, metrics), loop, metrics


def test_health_says_why_it_is_unhealthy(tmp_path: Path) -> None:
    view, loop, _ = view_of(tmp_path)
    ok, body = view.health()
    assert ok and body["status"] == "ok" and body["ready"] is False and body["busy_seconds"] is None
    assert "docker_events" not in body
    view.docker_state = "reconnecting"
    loop.busy_since = 0.0
    ok, body = view.health()
    assert ok and body["docker_events"] == "reconnecting" and isinstance(body["busy_seconds"], float)
    loop.stopping = True
    assert view.health() == (False, view.health()[1]) and view.health()[1]["status"] == "stopping"
    loop.stopping, loop.alive = False, False
    assert view.health()[1]["status"] == "scheduler stopped" and not view.health()[0]


def test_readiness_follows_the_first_pass(tmp_path: Path) -> None:
    view, _, _ = view_of(tmp_path)
    assert view.readiness() == (False, {"ready": False, "last_pass": None})
    view.record([outcome("shop")], T0)
    view.ready = True
    assert view.readiness() == (True, {"ready": True, "last_pass": T0})


def test_a_pass_is_counted_and_each_site_remembers_its_outcome(tmp_path: Path) -> None:
    view, _, metrics = view_of(tmp_path)
    view.record([outcome("shop", Action.ISSUE, "NoCertificate", issued=True),
                 outcome("blog", Action.PUBLISH, "NotDelivered", ok=False, failure="VerifyFailed")], T0)
    assert view.outcomes == {"shop": "issued (NoCertificate), serial abcdef0123456789",
                             "blog": "failed (VerifyFailed)"}
    view.record([outcome("shop", Action.WAIT, "BackingOff")], T0 + timedelta(hours=1))
    assert view.outcomes["shop"] == "waiting (BackingOff)" and view.outcomes["blog"] == "failed (VerifyFailed)"
    assert view.last_pass == T0 + timedelta(hours=1)
    text, ctype = view.metrics()
    assert ctype.startswith("text/plain")
    lines = text.decode().splitlines()
    assert 'tlsbridge_issuances_total{site="shop"} 1.0' in lines
    assert 'tlsbridge_failures_total{reason="VerifyFailed",site="blog"} 1.0' in lines
    assert 'tlsbridge_verification_failures_total{site="blog"} 1.0' in lines
    assert metrics.render() == text


def test_the_status_page_shows_every_site_with_its_wake_up(tmp_path: Path) -> None:
    view, loop, _ = view_of(tmp_path)
    loop.wakeups = {"shop": Wakeup("shop", T0 + timedelta(days=2), "Backoff")}
    view.record([outcome("blog", ok=False, failure="CAUnreachable")], T0)
    page = view.status_page()
    assert "shop" in page and "blog" in page
    assert "retry 2026-06-03" in page
    assert "failed (CAUnreachable)" in page
