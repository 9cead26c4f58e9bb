"""One pass at a time per config: flock(2) on `<state.dir>/pass.lock`.

Every pass of `renew` and of `run` holds it, so two passes never order the same certificate,
never run certbot against the same tree at once, and never publish over each other. A waiter
finds the holder's PID in /proc/locks (the lock file itself is never written). The lock belongs to the open
file: it is released when the holder closes it or dies (also by SIGKILL), and the descriptor is
close-on-exec, so certbot children never hold it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from tlsbridge.errors import TlsbridgeError

LOCK_NAME = "pass.lock"
WAIT = 600.0  # seconds a second `renew` waits for a running pass by default
_POLL_MAX = 0.5


class LockBusy(TlsbridgeError):
    """Another pass of this config holds the lock (and we do not, or no longer, wait)."""


class PassLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free. Raises TlsbridgeError when the lock file cannot be opened."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise TlsbridgeError(f"cannot open the pass lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise TlsbridgeError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The PID holding the lock, from /proc/locks (the file is never written: a pass with
        nothing to do changes no file); None if unknown."""
        try:
            st = os.stat(self.path)
            with open("/proc/locks", encoding="ascii") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in lines:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a blocked waiter)
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == ident and parts[4].isdigit():
                return int(parts[4]) or None
        return None

    def acquire(self, timeout: float, *, on_wait: Callable[[int | None], None] | None = None,
                stop: Callable[[], bool] | None = None) -> None:
        """Take the lock, waiting up to `timeout` seconds; `on_wait(holder_pid)` is called once
        if it has to wait. Raises LockBusy when the time is up or `stop()` turns true."""
        if self.try_acquire():
            return
        pid = self.holder()
        if on_wait is not None:
            on_wait(pid)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if stop is not None and stop():
                raise LockBusy(f"stopped while waiting for the pass of PID {pid or '?'} ({self.path})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockBusy(f"the pass of PID {self.holder() or '?'} still holds {self.path} after "
                               f"{timeout:.0f} s; try again later")
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, _POLL_MAX)
            if self.try_acquire():
                return

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> PassLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
