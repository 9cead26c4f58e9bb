"""One pass at a time per config: concurrent renews make one order and both succeed."""

from __future__ import annotations

import time
from pathlib import Path

from faultkit import deployment, finish, orders, start, wait_until
from servers import PebbleServer

from tlsbridge.adapters.lock import PassLock

ROUNDS = 3


def test_two_renews_of_a_new_site_make_one_order(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    for i in range(ROUNDS):
        env = deployment(tmp_path / f"r{i}", fault_pebble, {"new": {"domains": [f"new{i}.lock.example"]}})
        a, b = start(env, "renew"), start(env, "renew")
        ra, rb = finish(a), finish(b)
        assert (ra.returncode, rb.returncode) == (0, 0), (ra.stderr, rb.stderr)
        assert orders(env, "new") == 1
        assert "waiting for the pass of PID" in ra.stderr + rb.stderr
        assert env.published("new") == env.lineage("new")


def test_two_forced_renews_at_once_make_one_order(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": ["one.force.example"]},
                                              "two": {"domains": ["two.force.example"]}})
    assert env.run("renew").returncode == 0
    for i in range(ROUNDS):
        before = orders(env, "one"), orders(env, "two")
        a = start(env, "renew", "--force")
        if i % 2:  # staggered (the issue saw 3 orders for 2 sites with a 2.6 s stagger)
            wait_until("the first pass to hold the lock", lambda: PassLock(env.root / "state").holder())
            time.sleep(0.5 * i)
        b = start(env, "renew", "--force")
        ra, rb = finish(a), finish(b)
        assert (ra.returncode, rb.returncode) == (0, 0), (ra.stderr, rb.stderr)
        assert (orders(env, "one"), orders(env, "two")) == (before[0] + 1, before[1] + 1)
        assert "not forcing another order" in ra.stderr + rb.stderr
        assert "Another instance of Certbot" not in ra.stderr + rb.stderr
        for site in ("one", "two"):
            assert env.published(site) == env.lineage(site)


def test_no_wait_fails_fast_and_a_waiting_renew_goes_on_after_the_holder(
        tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": ["one.nowait.example"]}})
    assert env.run("renew").returncode == 0
    lock = PassLock(env.root / "state")  # this test process plays a running pass (e.g. `run`)
    assert lock.try_acquire()
    try:
        r = env.run("renew", "--no-wait")
        assert r.returncode == 1
        assert "another pass of this config is running" in r.stderr and "--no-wait" in r.stderr
        waiting = start(env, "renew", "--force")
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert "waiting for the pass of PID" in line and "--no-wait" in line
        assert waiting.poll() is None and orders(env, "one") == 1
    finally:
        lock.release()
    r = finish(waiting)
    assert r.returncode == 0, r.stderr
    assert orders(env, "one") == 2
