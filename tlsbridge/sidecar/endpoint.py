"""The sidecar's HTTP endpoint (standard library http.server in a background thread).

    GET /healthz   200 while the process and its scheduler are alive, else 503 (JSON body)
    GET /readyz    200 once the first pass has finished, else 503
    GET /metrics   Prometheus text format
    GET /          the status page (HTML, no JavaScript)

Read-only: nothing here changes state. It listens on loopback unless told otherwise; with a
token (`run --token-file`), / and /metrics need `Authorization: Bearer <token>` (the probes
/healthz and /readyz never do: they reveal nothing and orchestrators cannot send one).

Bounded: at most MAX_CONNECTIONS connections are served at once (the next ones get a 503 and
are closed at once), and a connection is closed after CONNECTION_DEADLINE seconds whatever the
client does, so slow or idle clients (slowloris) cannot hold the endpoint.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from tlsbridge.errors import UsageError
from tlsbridge.names import host_port

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
CONNECTION_DEADLINE = 10.0  # seconds from accept to close, whatever the client sends
READ_TIMEOUT = 5.0  # seconds a single read may wait
PUBLIC_PATHS = ("/healthz", "/readyz")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


class App(Protocol):
    def health(self) -> tuple[bool, dict[str, object]]: ...
    def readiness(self) -> tuple[bool, dict[str, object]]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def status_page(self, page: int = 1) -> str: ...


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets, port 1..65535) -> (host, port). Raises UsageError."""
    try:
        return host_port(text)
    except ValueError as exc:
        raise UsageError(f"--listen {text}: {exc}") from None


class HttpApi:
    def __init__(self, app: App, host: str, port: int, *, token: str | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 deadline: float = CONNECTION_DEADLINE) -> None:
        handler = type("Handler", (_Handler,), {"app": app, "token": token or None})
        server_cls = _Server6 if ":" in host else _Server
        try:
            self.server = server_cls((host, port), handler, max_connections=max_connections,
                                     deadline=deadline)
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
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int, deadline: float) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadline = deadline
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be closed
        self._lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Full: answer at once instead of queueing behind clients that may never finish.
            try:
                request.settimeout(0.5)
                request.sendall(_BUSY)
                request.shutdown(socket.SHUT_WR)
                request.setblocking(False)
                request.recv(65536)  # what the client sent: closing over unread data resets
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._lock:
            self._open[request] = time.monotonic() + self._deadline
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            known = self._open.pop(request, None) is not None
        if known:
            self._slots.release()

    def service_actions(self) -> None:
        """Called by serve_forever between polls: close connections past their deadline."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, until in self._open.items() if until <= now]
        for conn in late:
            with contextlib.suppress(OSError):  # the handler's read or write fails and it ends
                conn.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    app: App
    token: str | None = None
    timeout = READ_TIMEOUT
    server_version = "tlsbridge"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if self.token is not None and path not in PUBLIC_PATHS and not self._authorized():
            self._send(401, "text/plain; charset=utf-8", b"a bearer token is needed\n", send_body,
                       {"WWW-Authenticate": 'Bearer realm="tlsbridge"'})
            return
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
                try:
                    page = self.app.status_page(_page_number(self.path)).encode()
                except Exception as exc:  # noqa: BLE001 - never a 500: say it is unavailable
                    logger.warning("http %s: status page unavailable: %s: %s", path,
                                   exc.__class__.__name__, exc)
                    self._send(503, "text/plain; charset=utf-8",
                               b"status page unavailable; see the sidecar's log\n", send_body)
                    return
                self._send(200, "text/html; charset=utf-8", page, send_body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", send_body)
        except Exception as exc:  # a broken page must not take the endpoint down
            logger.warning("http %s failed: %s: %s", path, exc.__class__.__name__, exc)
            logger.debug("http %s traceback", path, exc_info=True)
            self._send(500, "text/plain; charset=utf-8", b"internal error\n", send_body)

    def _authorized(self) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self.token.encode())

    def _send(self, code: int, ctype: str, data: bytes, send_body: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
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
