"""Helpers for `tlsbridge run` tests: the daemon as a real subprocess, its endpoint, its JSON
logs, and a TCP proxy that can make a server (the CA, the Docker engine) go away and come back.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from servers import free_port
from tbenv import TLSBRIDGE, TbEnv

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, every: float = 0.1,
             on_timeout: Callable[[], str] | None = None) -> T:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{extra}")
        time.sleep(every)


class Daemon:
    """`tlsbridge -c CONFIG run --listen 127.0.0.1:PORT --log-format json` in the background."""

    def __init__(self, env: TbEnv, extra_env: dict[str, str] | None = None,
                 log_format: str = "json") -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = env.root / "run.log"
        self.extra_env = extra_env or {}
        self.log_format = log_format
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Daemon:
        self.env.write()
        full_env = {**os.environ, "TLSBRIDGE_RETRY_SCALE": "0", **self.extra_env}
        self.started = time.monotonic()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [TLSBRIDGE, "-c", str(self.env.config_path), "run", "--listen",
                 f"127.0.0.1:{self.port}", "--log-format", self.log_format],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env)
        return self

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    # -- endpoint ----------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)
        except OSError:
            return 0, b"", {}

    def metrics(self) -> dict[str, float]:
        status, body, _ = self.get("/metrics")
        assert status == 200, body
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, key: str) -> float | None:
        return self.metrics().get(key)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for("/readyz", lambda: self.get("/readyz")[0] == 200, timeout, on_timeout=self.tail)

    # -- logs --------------------------------------------------------------------------------
    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        """Every line as a JSON object (fails on a line that is not one)."""
        out = []
        for line in self.text().splitlines():
            out.append(json.loads(line))
        return out

    def logged(self, needle: str) -> list[dict[str, Any]]:
        return [rec for rec in self.logs() if needle in rec["msg"]]

    def tail(self, lines: int = 40) -> str:
        return "--- run.log ---\n" + "\n".join(self.text().splitlines()[-lines:])

    # -- signals -----------------------------------------------------------------------------
    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        """Send `sig` and wait: (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0


class TcpProxy:
    """Forward 127.0.0.1:port to a TCP address or a unix socket; `down()` refuses and cuts
    every connection (the server "goes away"), `up()` brings it back on the same port."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def up(self) -> TcpProxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def down(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.target)
        else:
            up = socket.create_connection(self.target, timeout=5)
            up.settimeout(None)
        return up

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
