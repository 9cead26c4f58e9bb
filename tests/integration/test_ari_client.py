"""The RFC 9773 client against a real HTTP server on loopback: retries only what can get better."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tlsbridge.adapters.ari import AriClient
from tlsbridge.errors import AriError

NOW = datetime(2026, 6, 1, tzinfo=UTC)


class Ca:
    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[str] = []
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server = server
        self.base = f"http://127.0.0.1:{server.server_address[1]}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        ca = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                ca.requests.append(self.path)
                if self.path == "/dir":
                    body = json.dumps({"renewalInfo": f"{ca.base}/ri"}).encode()
                    code = 200
                else:
                    code = ca.answers.pop(0) if ca.answers else 200
                    body = json.dumps({"suggestedWindow": {"start": "2026-07-01T00:00:00Z",
                                                           "end": "2026-07-02T00:00:00.123456789Z"}}).encode()
                self.send_response(code)
                self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ca]:
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "0")
    c = Ca()
    t = threading.Thread(target=c.server.serve_forever, daemon=True)
    t.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_window_and_retry_after(ca: Ca) -> None:
    w = AriClient(f"{ca.base}/dir", timeout=5).window("aki.serial", NOW)
    assert w is not None
    assert w.start == datetime(2026, 7, 1, tzinfo=UTC)
    assert w.retry_after == NOW + timedelta(hours=1)
    assert ca.requests == ["/dir", "/ri/aki.serial"]


def test_a_4xx_is_not_retried(ca: Ca) -> None:
    ca.answers = [404, 404, 404]
    with pytest.raises(AriError, match="HTTP 404"):
        AriClient(f"{ca.base}/dir", timeout=5).window("aki.serial", NOW)
    assert ca.requests.count("/ri/aki.serial") == 1


def test_a_5xx_is_retried(ca: Ca) -> None:
    ca.answers = [503, 500]
    assert AriClient(f"{ca.base}/dir", timeout=5).window("aki.serial", NOW) is not None
    assert ca.requests.count("/ri/aki.serial") == 3


def test_unreachable_is_an_ari_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSBRIDGE_RETRY_SCALE", "0")
    with pytest.raises(AriError):
        AriClient("http://127.0.0.1:9/dir", timeout=2).window("x.y", NOW)
