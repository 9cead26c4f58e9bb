"""The sidecar's HTTP endpoint (standard library http.server in a background thread).

    GET /healthz   200 while the process and its scheduler are alive, else 503 (JSON body)
    GET /readyz    200 once the first pass has finished, else 503
    GET /metrics   Prometheus text format
    GET /          the status page (HTML, no JavaScript)

Read-only: nothing here changes state, so it needs no authentication beyond where it listens.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from tlsbridge.errors import UsageError

logger = logging.getLogger(__name__)


class App(Protocol):
    def health(self) -> tuple[bool, dict[str, object]]: ...
    def readiness(self) -> tuple[bool, dict[str, object]]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def status_page(self, page: int = 1) -> str: ...


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port). Raises UsageError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text}: expected HOST:PORT, e.g. 0.0.0.0:8400 or [::]:8400")
    return host, int(port)


class HttpApi:
    def __init__(self, app: App, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"app": app})
        server_cls = _Server6 if ":" in host else _Server
        try:
            self.server = server_cls((host, port), handler)
        except OSError as exc:
            raise UsageError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self.server.serve_forever, name="http",
                                        kwargs={"poll_interval": 0.5}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    app: App
    timeout = 10
    server_version = "tlsbridge"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                ok, body = self.app.health()
                self._send(200 if ok else 503, "application/json", _json(body), send_body)
            elif path == "/readyz":
                ok, body = self.app.readiness()
                self._send(200 if ok else 503, "application/json", _json(body), send_body)
            elif path == "/metrics":
                data, ctype = self.app.metrics()
                self._send(200, ctype, data, send_body)
            elif path in ("/", "/index.html"):
                page = self.app.status_page(_page_number(self.path)).encode()
                self._send(200, "text/html; charset=utf-8", page, send_body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", send_body)
        except Exception as exc:  # a broken page must not take the endpoint down
            logger.warning("http %s failed: %s: %s", path, exc.__class__.__name__, exc)
            logger.debug("http %s traceback", path, exc_info=True)
            self._send(500, "text/plain; charset=utf-8", b"internal error\n", send_body)

    def _send(self, code: int, ctype: str, data: bytes, send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature
        logger.debug("http %s " + format, self.address_string(), *args)


def _page_number(path: str) -> int:
    """`?page=N` of the status page (1 when absent or not a number)."""
    from urllib.parse import parse_qs, urlsplit

    value = parse_qs(urlsplit(path).query).get("page", ["1"])[0]
    return int(value) if value.isdigit() and len(value) < 7 else 1


def _json(body: dict[str, object]) -> bytes:
    return (json.dumps(body, sort_keys=True, default=str) + "\n").encode()
