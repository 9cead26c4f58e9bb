"""Helpers of the fault suite: deployments, counting orders, readers, mounts, processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tbenv import TLSBRIDGE, Run, TbEnv

from tlsbridge.certinfo import key_matches_cert


def deployment(root: Path, pebble: object, sites: dict[str, dict[str, object]]) -> TbEnv:
    """No Docker engine: these faults are about the CA, the state and the filesystem."""
    root.mkdir(parents=True, exist_ok=True)
    env = TbEnv(root, pebble, sites, docker_engine=False)  # type: ignore[arg-type]
    env.write()
    return env


def orders(env: TbEnv, site: str) -> int:
    """Certificates certbot obtained for a site: the newest version N of archive/<lineage>/certN.pem,
    in every lineage of it (a second lineage `site-0001` would be a double issuance too). Not the
    number of files: certbot 5 keeps only the newest 6 versions (RenewableCert.truncate)."""
    archive = env.config_dir / "archive"
    if not archive.is_dir():
        return 0
    return sum(max((int(p.name[4:-4]) for p in d.glob("cert*.pem") if p.name[4:-4].isdigit()), default=0)
               for d in archive.iterdir() if d.name == site or d.name.startswith(f"{site}-"))


def start(env: TbEnv, *args: str) -> subprocess.Popen[str]:
    """The tlsbridge CLI as a background process (its own session, like cron would start it)."""
    env.write()
    return subprocess.Popen([TLSBRIDGE, "-c", str(env.config_path), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TLSBRIDGE_RETRY_SCALE": "0"})


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> Run:
    out, err = proc.communicate(timeout=timeout)
    return Run(proc.returncode, out, err)


def processes_under(root: Path) -> list[int]:
    """PIDs of processes whose command line mentions `root` (certbot children of a killed renew)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(root).encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
    return found


def wait_until(what: str, check: object, timeout: float = 60, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def reap(root: Path, timeout: float = 60) -> None:
    """Wait for orphans (certbot) of killed processes to end; kill them if they do not."""
    deadline = time.monotonic() + timeout
    while (pids := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Reader:
    """A reader of one site's published folder, as a careful consumer reads it: resolve
    `current` once, open both files in that generation. Counts what it saw."""

    site: Path
    reads: int = 0
    mismatched: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read_once(self) -> None:
        try:
            gen = self.site / os.readlink(self.site / "current")
        except FileNotFoundError:
            return  # nothing published yet
        try:
            cert = (gen / "cert.pem").read_bytes()
            key = (gen / "privkey.pem").read_bytes()
        except FileNotFoundError as exc:
            self.missing += 1
            self.errors.append(f"missing generation: {exc.filename}")
            return
        self.reads += 1
        if not key_matches_cert(key, cert):
            self.mismatched += 1
            self.errors.append(f"mismatched pair in {gen}")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.read_once()

    def __enter__(self) -> Reader:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at `where` (root only), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> int:
    """Write a file until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with contextlib.suppress(OSError), (folder / "filler").open("wb", buffering=0) as fh:
        while True:
            written += fh.write(chunk)
    with contextlib.suppress(OSError), (folder / "filler2").open("wb", buffering=0) as fh:
        while True:  # the last partial block
            written += fh.write(b"\0" * 512)
    return written


def certbot_running(root: Path) -> bool:
    """Whether a certbot child (tlsbridge's certbot_main) works on this deployment's tree."""
    for pid in processes_under(root):
        with contextlib.suppress(OSError):
            if b"certbot_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
    return False


# How many times each of the CA, delivery and sidecar faults is injected: 1 in `make test` (time),
# more for a soak: TLSBRIDGE_FAULT_ROUNDS=5 .venv/bin/python -m pytest tests/faults -q -s
ROUNDS = max(1, int(os.environ.get("TLSBRIDGE_FAULT_ROUNDS", "1")))
