"""Notifications end to end: real Pebble, real certbot, Apprise's generic JSON webhook
(`json://127.0.0.1:PORT/path`) into a local HTTP receiver; `renew` runs and the `run` sidecar.

The CA is made to go away with runkit's TcpProxy (down: connections refused), so failures are
real certbot failures.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from runkit import Daemon, TcpProxy, wait_for
from servers import PebbleServer, free_port
from tbenv import TbEnv

HOUR = 3600


class Receiver:
    """A JSON webhook target: records every POSTed message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.messages.append(json.loads(body))
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"json://127.0.0.1:{self.port}/hook/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]


class Hanging:
    """A target that accepts connections (the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"json://127.0.0.1:{self.sock.getsockname()[1]}/hangs"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def ca() -> Iterator[PebbleServer]:
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


def notify_env(tmp_path: Path, ca: PebbleServer, proxy: TcpProxy, urls: list[str], **notify: Any) -> TbEnv:
    return TbEnv(tmp_path, ca, {"shop": {"domains": ["shop.example.com", "www.shop.example.com"]}},
                 acme={"directory": f"https://127.0.0.1:{proxy.port}/dir"}, docker_engine=False,
                 extra={"notify": {"urls": urls, **notify}})


def test_renew_one_failure_message_one_recovery_and_silence_while_healthy(tmp_path: Path, ca: PebbleServer) -> None:
    proxy = TcpProxy(("127.0.0.1", ca.acme_port))  # down: the CA is unreachable
    with Receiver() as rx:
        env = notify_env(tmp_path, ca, proxy, [rx.url])
        try:
            r = env.run("renew")
            assert r.returncode == 1 and rx.messages == [], r.stderr  # one failure: silent
            r = env.run("renew", "--force")  # the second consecutive failure (past the backoff)
            assert r.returncode == 1
            assert rx.titles() == ["tlsbridge: shop: renewal failing"], r.stderr
            body = rx.messages[0]["message"]
            for part in ("Site shop (shop.example.com, www.shop.example.com)", "failed 2 times in a row",
                         "CAUnreachable", "Next: tlsbridge tries again at", "Check: that this host reaches"):
                assert part in body, body
            assert rx.messages[0]["type"] == "failure"
            r = env.run("renew", "--force")  # still failing: no second message the same day
            assert len(rx.messages) == 1
            # the next day it is repeated, once
            tomorrow = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
            env.run("renew", "--force", env={"TLSBRIDGE_FAKE_NOW": tomorrow})
            assert len(rx.messages) == 2 and "(still, since" in rx.messages[1]["title"]
            proxy.up()
            r = env.run("renew", "--force")  # (backing off until the day after tomorrow)
            assert r.returncode == 0, r.stderr
            assert len(rx.messages) == 3 and rx.messages[2]["title"] == "tlsbridge: shop: recovered"
            assert "renewal works again" in rx.messages[2]["message"]
            for _ in range(2):  # healthy: nothing more
                assert env.run("renew").returncode == 0
            assert len(rx.messages) == 3
        finally:
            proxy.down()
        # the URL (it holds a token) is nowhere: not in the logs, not in status --json
        r = env.run("status", "--json")
        assert "s3cr3t" not in r.stdout + r.stderr
        assert all("s3cr3t" not in p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*")
                   if p.is_file())


def test_renew_warns_before_a_short_lived_certificate_expires(tmp_path: Path) -> None:
    with PebbleServer(http_01_port=free_port(), validity_period=24 * HOUR) as short, Receiver() as rx:
        proxy = TcpProxy(("127.0.0.1", short.acme_port))
        env = notify_env(tmp_path, short, proxy, [rx.url])  # expiry_warning: min(24h/4, 7d) = 6h
        try:
            proxy.up()
            assert env.run("renew").returncode == 0
            assert rx.messages == []
            proxy.down()  # renewals fail from now on
            later = (datetime.now(UTC) + timedelta(hours=20)).isoformat()  # 4 h left
            r = env.run("renew", env={"TLSBRIDGE_FAKE_NOW": later})
            print(r.stdout, r.stderr)  # (renewing or not, no renewal can succeed: the CA is down)
            assert rx.titles() == ["tlsbridge: shop: certificate expires soon"], r.stderr
            body = rx.messages[0]["message"]
            assert "expires in 4." in body and "has not been renewed" in body, body
            assert rx.messages[0]["type"] == "warning"
        finally:
            proxy.down()


def test_a_hanging_target_costs_renew_at_most_its_timeout(tmp_path: Path, ca: PebbleServer) -> None:
    hang = Hanging()
    proxy = TcpProxy(("127.0.0.1", ca.acme_port))
    try:
        with Receiver() as rx:
            env = notify_env(tmp_path, ca, proxy, [hang.url, rx.url], timeout="2s", after_failures=1)
            t0 = time.monotonic()
            r = env.run("renew", timeout=120)
            took = time.monotonic() - t0
            print(f"renew with a hanging target (timeout 2s): {took:.1f} s")
            assert r.returncode == 1
            assert rx.titles() == ["tlsbridge: shop: renewal failing"]  # the working target got it
            assert "notify: target #1 (json): no answer within 2s" in r.stderr, r.stderr
            assert "s3cr3t" not in r.stderr and str(hang.sock.getsockname()[1]) not in r.stderr
    finally:
        hang.close()
        proxy.down()


def test_notify_test_reports_each_target(tmp_path: Path, ca: PebbleServer) -> None:
    proxy = TcpProxy(("127.0.0.1", ca.acme_port))
    dead = f"json://127.0.0.1:{free_port()}/nobody"
    with Receiver() as rx:
        env = notify_env(tmp_path, ca, proxy, [rx.url, dead, "nosuchscheme://x/y"])
        r = env.run("notify", "--test")
        assert r.returncode == 1
        lines = r.stdout.splitlines()
        assert lines[0] == "target #1 (json): ok"
        assert lines[1].startswith("target #2 (json): FAILED")
        assert lines[2].startswith("target #3 (nosuchscheme): FAILED: Apprise does not understand")
        assert rx.titles() == ["tlsbridge: test notification"]
        assert "s3cr3t" not in r.stdout + r.stderr
        env.extra["notify"]["urls"] = [rx.url]
        assert env.run("notify", "--test").returncode == 0


def test_run_failure_recovery_and_a_hanging_target(tmp_path: Path, ca: PebbleServer) -> None:
    """The sidecar: one failure message after two failed passes, one recovery, silence while
    healthy; a hanging target (sent to from the background) never holds a pass up."""
    hang = Hanging()
    proxy = TcpProxy(("127.0.0.1", ca.acme_port))
    try:
        with Receiver() as rx:
            env = notify_env(tmp_path, ca, proxy, [rx.url, hang.url], timeout="2s")
            env.extra["renewal"] = {"check_interval": "1h", "jitter": "1m"}
            with Daemon(env, extra_env={"TLSBRIDGE_FAKE_RATE": "3000"}) as d:
                d.wait_ready(120)
                wait_for("the failure message", lambda: rx.messages, 60, on_timeout=d.tail)
                assert rx.titles() == ["tlsbridge: shop: renewal failing"]
                proxy.up()
                wait_for("the recovery message", lambda: len(rx.messages) >= 2, 90, on_timeout=d.tail)
                assert rx.titles()[1] == "tlsbridge: shop: recovered"
                # healthy for three more periodic passes: nothing more
                key = 'tlsbridge_passes_total{scope="all"}'
                seen = d.metric(key) or 0
                wait_for("three more passes", lambda: (d.metric(key) or 0) >= seen + 3, 60, on_timeout=d.tail)
                assert len(rx.messages) == 2, rx.titles()
                assert d.stop()[0] == 0
        passes = [r for r in d.logs() if r["msg"].startswith("run: pass")]
        gave_up = [r for r in d.logs() if "no answer within 2s" in r["msg"]]
        assert gave_up, d.tail()
        # the pass that found the second failure was logged before the hanging target gave up
        first_gave_up = gave_up[0]["ts"]
        assert any(p["ts"] <= first_gave_up and "1 (shop) failed" in p["msg"] for p in passes), d.tail()
        assert "s3cr3t" not in d.text()
    finally:
        hang.close()
        proxy.down()
