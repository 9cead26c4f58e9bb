"""12.8: the sidecar's HTTP endpoint under attack.

Attacks: clients that open connections and trickle a header byte now and then (slowloris: each
read succeeds, so a per-read timeout alone never fires), more connections than the endpoint
should serve at once, and anyone on the network reading the status page and the metrics. The
real server (tlsbridge.sidecar.endpoint) on loopback, real sockets.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsbridge import cli
from tlsbridge.commands.run import DEFAULT_LISTEN
from tlsbridge.sidecar.endpoint import HttpApi

CAP = 6
DEADLINE = 1.5  # seconds; the default is 10


class FakeApp:
    def health(self) -> tuple[bool, dict[str, object]]:
        return True, {"ok": True}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return True, {"ready": True}

    def metrics(self) -> tuple[bytes, str]:
        return b"tlsbridge_up 1\n", "text/plain; version=0.0.4"

    def status_page(self, page: int = 1) -> str:
        return "<html>site secret.example.com</html>"


@pytest.fixture
def api() -> Iterator[HttpApi]:
    server = HttpApi(FakeApp(), "127.0.0.1", 0, token="s3cret-token", max_connections=CAP,
                     deadline=DEADLINE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(api: HttpApi, path: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{api.port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Slowloris:
    """`n` connections that send a request line, then one header byte at a time."""

    def __init__(self, port: int, n: int) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
        self.stop = threading.Event()
        self.dropped = [threading.Event() for _ in range(n)]
        for s in self.socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        self.threads = [threading.Thread(target=self._trickle, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _trickle(self, i: int) -> None:
        s = self.socks[i]
        try:
            while not self.stop.wait(0.2):
                s.sendall(b"X")  # each read gets a byte: a per-read timeout never fires
        except OSError:
            pass
        self.dropped[i].set()

    def close(self) -> None:
        self.stop.set()
        for s in self.socks:
            s.close()


def test_slow_clients_do_not_starve_others_and_are_dropped(api: HttpApi) -> None:
    loris = Slowloris(api.port, CAP - 2)
    try:
        # While they hold their connections, other clients are served.
        for _ in range(5):
            assert get(api, "/healthz") == (200, b'{"ok": true}\n')
        # And every slow connection is closed by the server (the trickle's send then fails).
        for ev in loris.dropped:
            assert ev.wait(30), "a slow client was never dropped"
        for s in loris.socks:
            s.settimeout(30)
            try:
                data = s.recv(1024)
            except OSError:
                data = b""
            assert b"200" not in data
    finally:
        loris.close()
    wait_until_served(api)


def wait_until_served(api: HttpApi) -> None:
    """The server frees a slot just after the client sees its connection end: poll for it."""
    for _ in range(300):
        if get(api, "/healthz")[0] == 200:
            return
        threading.Event().wait(0.1)
    raise AssertionError("the endpoint never served again")


def test_excess_connections_get_a_503_not_a_hang(api: HttpApi) -> None:
    loris = Slowloris(api.port, CAP)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=30) as extra:
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := extra.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.0 503 ")
    finally:
        loris.close()
    wait_until_served(api)  # closed by us now; the server frees their slots


def test_status_page_and_metrics_need_the_token_probes_do_not(api: HttpApi) -> None:
    for path in ("/", "/index.html", "/metrics", "/metrics?x=1"):
        code, body = get(api, path)
        assert code == 401 and b"secret" not in body and b"tlsbridge_up" not in body
        assert get(api, path, "wrong")[0] == 401
        assert get(api, path, "s3cret-token")[0] == 200
    assert get(api, "/", "s3cret-token")[1] == b"<html>site secret.example.com</html>"
    assert get(api, "/healthz")[0] == 200 and get(api, "/readyz")[0] == 200


def test_without_a_token_everything_is_open_as_before() -> None:
    server = HttpApi(FakeApp(), "127.0.0.1", 0)
    server.start()
    try:
        assert get(server, "/")[0] == 200 and get(server, "/metrics")[0] == 200
    finally:
        server.stop()


def test_run_listens_on_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TLSBRIDGE_LISTEN", raising=False)
    assert DEFAULT_LISTEN == "127.0.0.1:8400"
    assert cli.build_parser().parse_args(["run"]).listen == "127.0.0.1:8400"


@pytest.mark.parametrize("content", [None, "", "two words\n", "a\x00b"])
def test_a_bad_token_file_is_a_usage_error(content: str | None, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text("sites: {}\n")
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    code = cli.main(["-c", str(cfg), "run", "--listen", "127.0.0.1:8400", "--token-file", str(token)])
    err = capsys.readouterr().err
    assert code == 2 and "--token-file" in err and len(err.strip().splitlines()) == 1
