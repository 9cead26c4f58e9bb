"""An HTTPS proxy in front of a Pebble, to play a CA's bad days that Pebble cannot play itself.

Pebble has no rate limits and always offers ARI. `AcmeProxy` forwards every request to Pebble
unchanged (the Host header included: Pebble builds its URLs and checks the JWS `url` from it, so
the directory and every link point back at the proxy), except:

- `rate_limit`: newOrder answers 429 with an RFC 8555 `rateLimited` problem and a Retry-After
  header (an HTTP-date), as Let's Encrypt does;
- `hide_ari`: the directory loses `renewalInfo` (a CA without ARI).

It serves Pebble's own TLS certificate (valid for 127.0.0.1), so Pebble's CA bundle trusts it.
"""

from __future__ import annotations

import email.utils
import http.client
import http.server
import json
import ssl
import threading
from datetime import datetime
from urllib.parse import urlsplit

from servers import PebbleServer, free_port

_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


class AcmeProxy:
    def __init__(self, pebble: PebbleServer, *, rate_limit: datetime | None = None,
                 hide_ari: bool = False) -> None:
        self.pebble = pebble
        self.rate_limit = rate_limit  # newOrder is refused until this moment (the Retry-After)
        self.hide_ari = hide_ari
        self.port = free_port()
        self.refused_orders = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def __enter__(self) -> AcmeProxy:
        proxy = self
        upstream = ("127.0.0.1", self.pebble.acme_port)
        client_ctx = ssl.create_default_context(cafile=str(self.pebble.ca_bundle))
        new_order = urlsplit(self.pebble.directory()["newOrder"]).path

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.rate_limit is not None and self.command == "POST" and self.path == new_order:
                    proxy.refused_orders += 1
                    problem = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited", "status": 429,
                                          "detail": "too many new orders recently"}).encode()
                    self.send_response(429)
                    self.send_header("Content-Type", "application/problem+json")
                    self.send_header("Retry-After", email.utils.format_datetime(proxy.rate_limit, usegmt=True))
                    self.send_header("Content-Length", str(len(problem)))
                    self.end_headers()
                    self.wfile.write(problem)
                    return
                conn = http.client.HTTPSConnection(*upstream, context=client_ctx, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if proxy.hide_ari and self.path == "/dir" and resp.status == 200:
                        doc = json.loads(data)
                        doc.pop("renewalInfo", None)
                        data = json.dumps(doc).encode()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_HEAD = _forward

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls = self.pebble.workdir / "tls"
        server_ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")
        server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
