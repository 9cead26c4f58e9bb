"""The pass lock: one holder per state.dir, across processes; waiters are bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tlsbridge.adapters.lock import LockBusy, PassLock

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tlsbridge.adapters.lock import PassLock
    lock = PassLock(Path(sys.argv[1]))
    assert lock.try_acquire()
    print("held", flush=True)
    sys.stdin.read()
""")


def test_a_second_holder_waits_names_the_pid_and_gives_up_in_time(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        lock = PassLock(tmp_path)
        assert not lock.try_acquire()
        assert lock.holder() == proc.pid
        seen: list[int | None] = []
        with pytest.raises(LockBusy, match=f"PID {proc.pid}"):
            lock.acquire(0.2, on_wait=seen.append)
        assert seen == [proc.pid]
        with pytest.raises(LockBusy, match="stopped"):
            lock.acquire(60, stop=lambda: True)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    with PassLock(tmp_path) as lock:
        lock.acquire(5)
        assert lock.held and lock.holder() == os.getpid()
    assert not lock.held


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    lock = PassLock(tmp_path)
    lock.acquire(5)
    lock.release()
