"""The reconciler under local faults: a damaged store, a planted symlink, leaked connections."""

from __future__ import annotations

import os
from pathlib import Path

from test_reconcile_delivery import setup

from tlsbridge.model import Action
from tlsbridge.status import collect


def _open_state_fds(state: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += str(state) in os.readlink(fd)
        except OSError:
            continue
    return count


def test_no_state_connection_outlives_a_pass_or_a_status(tmp_path: Path) -> None:
    rec, _ = setup(tmp_path)
    for _ in range(20):
        rec.run_pass()
        collect(rec.cfg, rec.ports, rec.clock.now())
        assert _open_state_fds(tmp_path / "state") == 0


def test_a_garbage_store_is_set_aside_and_nothing_is_ordered_again(tmp_path: Path) -> None:
    rec, log = setup(tmp_path)
    rec.run_pass()
    db = tmp_path / "state" / "state.sqlite3"
    db.write_bytes(b"\x00garbage" * 1000)
    log.clear()
    outcomes = rec.run_pass()
    assert all(o.ok for o in outcomes)
    assert not any(entry.startswith("obtain") for entry in log)  # re-delivered, never re-ordered
    assert [o.plan.decision.reason for o in outcomes] == ["NotDelivered", "NotDelivered"]
    assert len(list((tmp_path / "state").glob("state.sqlite3.corrupt-*"))) >= 1
    log.clear()
    assert all(o.plan.decision.action is Action.NONE for o in rec.run_pass())  # rebuilt
    assert log == []


def test_a_symlinked_site_folder_fails_the_site_before_the_ca(tmp_path: Path) -> None:
    rec, log = setup(tmp_path)
    (tmp_path / "certs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "certs" / "one").symlink_to(tmp_path / "elsewhere")
    outcomes = {o.site: o for o in rec.run_pass()}
    assert not outcomes["one"].ok and "symbolic link" in (outcomes["one"].error or "")
    assert outcomes["two"].ok
    assert "obtain one" not in log and list((tmp_path / "elsewhere").iterdir()) == []
