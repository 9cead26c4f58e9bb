"""The Docker watcher: which sites a container start concerns (the event's name and labels
against the config), and its loop over a scripted event stream (no engine, a fixed clock)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime

import pytest
from helpers import T0

from tlsbridge.adapters.docker import DockerEvent
from tlsbridge.clock import FixedClock
from tlsbridge.config import Config, DockerConfig, parse
from tlsbridge.errors import DockerError
from tlsbridge.sidecar.requests import Kind, Request
from tlsbridge.sidecar.watch import (
    CONNECTED,
    MIN_RETRY,
    RECONNECTING,
    REPLAY,
    DockerWatcher,
    backoff,
    sites_of_container,
)

CONFIG = """
sites:
  shop:
    domains: [shop.example.com]
    reload:
      - container: web
  blog:
    domains: [blog.example.com]
    reload:
      - label: com.example.role=frontend
  api:
    domains: [api.example.com]
"""


def event(name: str, **labels: str) -> DockerEvent:
    return DockerEvent(type="container", action="start", id="f" * 64, name=name,
                       attributes={"name": name, **labels})


# labelled for a site, but another tlsbridge's (delivery.scope): no request
THEIRS = DockerEvent(type="container", action="start", id="0" * 64, name="theirs",
                     attributes={"name": "theirs", "tlsbridge.site": "shop"})


def test_a_container_start_concerns_the_sites_it_serves() -> None:
    cfg = parse(CONFIG)
    assert sites_of_container(cfg, event("web")) == ["shop"]
    assert sites_of_container(cfg, event("x", **{"com.example.role": "frontend"})) == ["blog"]
    assert sites_of_container(cfg, event("x", **{"tlsbridge.site": "api, shop"})) == ["shop", "api"]
    assert sites_of_container(cfg, event("web", **{"tlsbridge.site": "blog"})) == ["shop", "blog"]
    assert sites_of_container(cfg, event("other")) == []
    assert sites_of_container(cfg, event("x", **{"com.example.role": "backend"})) == []


# -- the watcher's loop, with a scripted event stream instead of an engine -----------------------

class Stream:
    """Yields its events; closing it (from another thread, or reconnect()) breaks the iteration."""

    def __init__(self, events: list[DockerEvent], on_end: Callable[[], None] = lambda: None) -> None:
        self.events = events
        self.on_end = on_end
        self.closed = False

    def __iter__(self) -> Iterator[DockerEvent]:
        for e in self.events:
            if self.closed:
                raise DockerError("the stream was closed")
            yield e
        if self.closed:
            raise DockerError("the stream was closed")
        self.on_end()

    def close(self) -> None:
        self.closed = True


class Script:
    """The watcher's collaborators: what each connection attempt gives, and what it was told."""

    def __init__(self, cfg: Config, attempts: list[Stream | DockerError],
                 on_request: Callable[[DockerWatcher], None] = lambda w: None) -> None:
        self.cfg = cfg
        self.attempts = attempts
        self.since: list[datetime | None] = []
        self.states: list[str | None] = []
        self.requests: list[Request] = []
        self.on_request = on_request
        self.watcher = DockerWatcher(lambda: self.cfg, self.enqueue, self.states.append,
                                     open_events=self.open, now=FixedClock(T0).now,
                                     rng=random.Random(1), owns=lambda cfg, cid: cid != THEIRS.id)

    def enqueue(self, request: Request) -> None:
        self.requests.append(request)
        self.on_request(self.watcher)

    def open(self, docker: DockerConfig, filters: Mapping[str, str | Sequence[str]],
             since: datetime | None) -> Stream:
        assert docker == self.cfg.docker and filters == {"type": "container", "event": ["start", "die", "destroy"]}
        self.since.append(since)
        got = self.attempts.pop(0)
        if not self.attempts:
            self.watcher.stop()  # the last attempt: the loop ends after it
        if isinstance(got, DockerError):
            raise got
        return got


def test_the_watcher_queues_a_verify_per_start_and_replays_after_a_loss(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "0")
    script = Script(parse(CONFIG), [
        Stream([event("web"), event("other"), THEIRS]),  # then the engine ends the stream
        DockerError("connection refused"),
        DockerError("connection refused"),
        Stream([event("x", **{"tlsbridge.site": "api"})]),
    ])
    caplog.set_level(logging.INFO, logger="tlsbridge")
    script.watcher.run()
    assert script.requests == [Request(Kind.VERIFY, frozenset({"shop"}), "container web started"),
                               Request(Kind.VERIFY, frozenset({"api"}), "container x started")]
    # lost at T0: every reconnection replays from a little before
    assert script.since == [None, T0 - REPLAY, T0 - REPLAY, T0 - REPLAY]
    assert script.states == [CONNECTED, RECONNECTING, RECONNECTING, RECONNECTING, CONNECTED, None]
    assert [r.message for r in caplog.records if "lost the Docker event stream" in r.message] == [
        "run: lost the Docker event stream (the engine closed the event stream); retrying with "
        "backoff (logged once until it is back)"]
    assert any(r.message == "run: Docker event stream reconnected" for r in caplog.records)


def test_an_asked_reconnection_is_no_loss(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "0")
    first = Stream([event("web"), event("web")])
    script = Script(parse(CONFIG), [first, Stream([])], on_request=DockerWatcher.reconnect)
    script.watcher.run()
    assert first.closed and len(script.requests) == 1  # the second event came after the switch
    assert script.since == [None, T0 - REPLAY]  # what the switch might miss is replayed
    assert script.states == [CONNECTED, CONNECTED, None]
    assert not [r for r in caplog.records if "lost the Docker event stream" in r.message]


@pytest.mark.parametrize(("failures", "jitter", "expected"), [
    (1, 0.0, 0.5), (1, 0.999999, 1.0), (2, 0.0, 1.0), (3, 0.0, 2.0), (7, 0.0, 30.0), (8, 0.0, 30.0),
    (30, 0.999999, 60.0)])
def test_backoff_doubles_up_to_the_cap(monkeypatch: pytest.MonkeyPatch, failures: int, jitter: float,
                                       expected: float) -> None:
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "1")
    assert backoff(failures, jitter) == pytest.approx(expected, rel=1e-5)
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "0")
    assert backoff(failures, jitter) == MIN_RETRY  # tests: no waiting, yet never a busy loop
