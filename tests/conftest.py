"""The whole suite leaves the host as it found it (checked when TLSBRIDGE_HOSTCHECK=1, as
`make test` sets it; a developer's partial runs beside other work skip it).

At the start of the session: the engine's containers, networks and volumes, its Swarm state, and
the processes of the programs the tests start. At the end: nothing new of any of these remains,
and a container on the default bridge still starts (a test that broke docker0 breaks every user
container on the host). A leftover fails the session, naming what was left.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# Programs the tests start (by /proc/<pid>/comm, 15 characters at most).
WATCHED = ("pebble", "pebble-challtes", "certbot", "tlsbridge", "named", "dockerd", "containerd",
           "nginx", "docker-compose", "chromium")
_SNAPSHOT = pytest.StashKey[dict[str, set[str]]]()


def _enabled() -> bool:
    return os.environ.get("TLSBRIDGE_HOSTCHECK") == "1"


def _docker(*args: str) -> list[str] | None:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


def _processes() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if comm in WATCHED or any(f"/{w}" in cmdline.split(" ", 2)[0] for w in WATCHED) \
                or " tlsbridge" in cmdline[:200]:
            found.add(f"{entry.name} {cmdline[:120].strip()}")
    return found


def _snapshot() -> dict[str, set[str]]:
    snap: dict[str, set[str]] = {"processes": _processes()}
    if _docker("info", "-f", "{{.ID}}") is not None:
        snap["containers"] = set(_docker("ps", "-aq", "--no-trunc") or ())
        snap["networks"] = set(_docker("network", "ls", "-q", "--no-trunc") or ())
        snap["volumes"] = set(_docker("volume", "ls", "-q") or ())
        snap["swarm"] = set(_docker("info", "-f", "{{.Swarm.LocalNodeState}}") or ())
    return snap


def pytest_sessionstart(session: pytest.Session) -> None:
    if _enabled():
        session.stash[_SNAPSHOT] = _snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _enabled() or _SNAPSHOT not in session.stash:
        return
    before = session.stash[_SNAPSHOT]
    after = _snapshot()
    problems = []
    for kind, items in after.items():
        if kind == "swarm":
            if items != before.get("swarm", items):
                problems.append(f"Swarm state changed: {before.get('swarm')} -> {items}")
            continue
        left = items - before.get(kind, set())
        if kind == "processes":  # a pid reused by an unrelated program is not ours to judge
            left = {p for p in left if not p.startswith(f"{os.getpid()} ")}
        if left:
            problems.append(f"{len(left)} {kind} left behind: " + "; ".join(sorted(left)[:5]))
    if "containers" in after and _docker("image", "inspect", "tlsbridge-test/nginx:latest") is not None:
        started = _docker("run", "--rm", "--network", "bridge", "tlsbridge-test/nginx:latest", "true")
        if started is None:
            problems.append("a container on the default bridge no longer starts (docker0 broken?)")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for line in problems:
            if reporter is not None:
                reporter.write_line(f"HOSTCHECK: {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
