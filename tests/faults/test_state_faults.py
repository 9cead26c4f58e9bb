"""A damaged state store never stops tlsbridge: it is set aside and rebuilt, nothing reordered."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from faultkit import deployment, orders
from servers import PebbleServer

DAMAGES = ("truncated", "garbage", "bad JSON row", "zeroed header")


def damage(db: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(db, max(db.stat().st_size // 2, 1024))
    elif how == "garbage":
        db.write_bytes(os.urandom(16384))
    elif how == "zeroed header":
        with db.open("r+b") as fh:
            fh.write(b"\0" * 100)
    else:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE site_state SET data = '{\"failures\": '")  # every row
        conn.close()


def aside(state: Path) -> list[Path]:
    return sorted(p for p in state.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm")))


def test_a_damaged_state_store_is_set_aside_and_rebuilt(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": ["one.state.example"]},
                                              "two": {"domains": ["two.state.example"]}})
    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    state, db = tmp_path / "state", tmp_path / "state" / "state.sqlite3"
    published = {s: env.published(s) for s in ("one", "two")}
    injected = 0
    for how in DAMAGES:
        for command in (("status",), ("status", "--json"), ("renew",), ("renew", "--force", "--site", "two")):
            assert db.exists()
            damage(db, how)
            injected += 1
            r = env.run(*command)
            assert r.returncode == 0, (how, command, r.stderr)
            assert len(aside(state)) == injected, (how, command)
            warnings = [line for line in r.stderr.splitlines() if "WARNING state store" in line]
            assert len(warnings) == 1, r.stderr
            assert "moved it aside to" in warnings[0] and any(str(p) in warnings[0] for p in aside(state))
            if command[0] == "status":
                assert env.run("renew").returncode == 0  # rebuilds the store for the next damage
    # nothing lost: site one was never re-ordered (a lost ARI moment or backoff is no reason to),
    # site two once per forced renew; both still published and valid
    assert orders(env, "one") == 1
    assert orders(env, "two") == 1 + len(DAMAGES)
    assert env.published("one") == published["one"]
    # a rebuilt store no longer knows that site one was delivered: the next pass finds out again
    # (without an order)
    assert env.run("renew").returncode == 0
    assert orders(env, "one") == 1
    assert {row["state"] for row in env.status().values()} == {"valid"}
