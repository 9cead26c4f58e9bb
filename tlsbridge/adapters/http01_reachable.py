"""Whether ACME HTTP-01 requests reach this process through nginx: checked before asking a CA.

With the standalone method behind nginx (Swarm: nginx passes /.well-known/acme-challenge/ to
the tlsbridge service), the path only works once nginx runs *and* resolves tlsbridge's name,
which in a freshly deployed stack takes a moment after both tasks started. A CA tried too early
answers with a failed validation (Let's Encrypt allows 5 per name and hour). So: answer a
random token on challenge.http_port ourselves and fetch it through nginx until it comes back.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

PREFIX = "/.well-known/acme-challenge/"


@contextlib.contextmanager
def token_server(port: int) -> Iterator[tuple[str, str]]:
    """Answer GET <PREFIX><token> with the token on 0.0.0.0:`port` meanwhile; yields (path,
    token). Raises OSError when the port cannot be bound."""
    token = "tlsbridge-preflight-" + secrets.token_urlsafe(16)
    body = token.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            ok = self.path == PREFIX + token
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            logger.debug("preflight server: " + fmt, *args)

    server = http.server.ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield PREFIX + token, token
    finally:
        server.shutdown()
        server.server_close()


def fetch(host: str, port: int, path: str, server_name: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One plain HTTP GET with the given Host header: (status, body). Raises OSError."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": server_name, "User-Agent": "tlsbridge-preflight"})
        resp = conn.getresponse()
        return resp.status, resp.read(256)
    finally:
        conn.close()


def wait_for_path(port: int, targets: Sequence[tuple[str, int, str, str]], timeout: float) -> list[str]:
    """Serve a token on `port` and fetch it through each target (host, port, Host header,
    label) until every one returns it, at most `timeout` seconds. Returns what did not work
    (empty: all good), one message per target."""
    try:
        server = token_server(port)
        path, token = server.__enter__()
    except OSError as exc:
        return [f"cannot listen on port {port} to check the ACME path ({exc})"]
    try:
        pending = {t: "not tried" for t in targets}
        deadline = time.monotonic() + timeout
        while pending:
            for target in list(pending):
                host, tport, name, label = target
                try:
                    status, body = fetch(host, tport, path, name)
                except OSError as exc:
                    pending[target] = f"{label}: {type(exc).__name__}: {exc}"
                    continue
                if status == 200 and body == token.encode():
                    del pending[target]
                else:
                    pending[target] = f"{label}: HTTP {status} for {PREFIX}..."
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        return list(pending.values())
    finally:
        server.__exit__(None, None, None)
