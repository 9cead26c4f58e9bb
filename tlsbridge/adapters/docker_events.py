"""The Docker engine's event stream over plain HTTP, with the standard library only.

`run` follows container events all the time. Reading them with http.client keeps the docker SDK
(with requests and urllib3, ~7 MiB of the sidecar's memory) out of an idle sidecar: the SDK is
loaded only when a delivery or a verification actually needs the engine.

Where: `docker.host`, else DOCKER_HOST, else the local socket, as the SDK adapter does; unix://
and tcp:// (TLS with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, like docker-py's kwargs_from_env).
Other schemes (ssh://) go through the SDK adapter's `events()`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from tlsbridge.adapters.docker import DockerAdapter, EventStream
from tlsbridge.config import DockerConfig
from tlsbridge.errors import DockerError

if TYPE_CHECKING:
    import ssl


def events(cfg: DockerConfig, filters: Mapping[str, str | Sequence[str]],
           since: datetime | None = None, environ: Mapping[str, str] | None = None) -> EventStream:
    """Open the event stream. Raises DockerError when the engine cannot be reached."""
    env = dict(os.environ if environ is None else environ)
    adapter = DockerAdapter(cfg, env)
    where = adapter.where
    scheme = urlsplit(where).scheme
    if scheme not in ("unix", "tcp", "http", "https"):
        return adapter.events(filters, since=since)
    query = "filters=" + quote(json.dumps({k: [v] if isinstance(v, str) else list(v)
                                           for k, v in filters.items()}))
    if since is not None:
        query += f"&since={since.timestamp():.3f}"
    raw = _RawEvents(where, env, cfg.timeout.total_seconds())
    try:
        raw.open(f"/events?{query}")
    except (OSError, http.client.HTTPException) as exc:
        raw.close()
        raise DockerError(f"the Docker engine at {where} is not reachable (stream events): "
                          f"{exc}") from exc
    return EventStream(raw, where)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class _RawEvents:
    """Newline-delimited JSON objects from GET /events; `close()` from any thread ends them."""

    def __init__(self, where: str, env: Mapping[str, str], timeout: float) -> None:
        self.where = where
        self.env = env
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.resp: http.client.HTTPResponse | None = None

    def open(self, path: str) -> None:
        url = urlsplit(self.where)
        if url.scheme == "unix":
            self.conn = _UnixConnection(url.path or "/var/run/docker.sock", self.timeout)
        else:
            host, port = url.hostname or "localhost", url.port or 2375
            tls = _tls_context(self.env, url.scheme)
            if tls is not None:
                self.conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=tls)
            else:
                self.conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self.conn.request("GET", path, headers={"Accept": "application/json"})
        resp = self.conn.getresponse()
        if resp.status != 200:
            body = resp.read(300).decode("utf-8", "replace").strip()
            raise http.client.HTTPException(f"GET /events answered {resp.status}: {body}")
        sock = self.conn.sock
        if sock is not None:
            sock.settimeout(None)  # an idle stream is normal: wait for events as long as it takes
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.resp = resp

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert self.resp is not None
        while True:
            line = self.resp.readline()
            if not line:
                return
            if line.strip():
                obj = json.loads(line)
                if isinstance(obj, dict):
                    yield obj

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        sock = conn.sock
        if sock is not None:  # shutdown wakes a reader blocked in recv(); close() alone may not
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        conn.close()


def _tls_context(env: Mapping[str, str], scheme: str) -> ssl.SSLContext | None:
    """TLS settings the way docker-py reads them from the environment (None: plain HTTP)."""
    import ssl

    verify = env.get("DOCKER_TLS_VERIFY") or ""
    cert_path = env.get("DOCKER_CERT_PATH") or ""
    if not (verify or cert_path or scheme == "https"):
        return None
    base = Path(cert_path or Path.home() / ".docker")
    ca = base / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca) if verify and ca.exists() else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if (base / "cert.pem").exists() and (base / "key.pem").exists():
        ctx.load_cert_chain(str(base / "cert.pem"), str(base / "key.pem"))
    return ctx
