"""`tlsbridge run` under faults: SIGHUP with broken configs, SIGTERM while certbot runs, and
memory and descriptors over many passes under an accelerated clock. The daemon is a real
process; Pebble and certbot are real."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from faultkit import ROUNDS, certbot_running, deployment, orders, processes_under, wait_until
from runkit import Daemon
from servers import PebbleServer

from tlsbridge.certinfo import key_matches_cert, parse_pem

ERR = 'tlsbridge_config_reloads_total{result="error"}'
OK = 'tlsbridge_config_reloads_total{result="ok"}'


def test_sighup_with_a_bad_config_keeps_the_running_one_and_a_fixed_one_is_taken(
        tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": ["one.hup.example"]}})
    good = env.config_path.read_text()
    path = str(env.config_path)
    # broken config -> what its one error line must name
    bad = {
        "an unknown key": (good + "\nbogus_key: 1\n", "bogus_key"),
        "a YAML syntax error": (good + "\nsites: [unclosed\n", path),
        "a wrong value": (good + "\nrenewal:\n  jitter: -3600\n", "renewal.jitter"),
        "a duplicate key": (good + "\nsites: {}\n", "sites"),
        "a mode not quoted": (good.replace("publish:\n", "publish:\n  cert_mode: 0644\n"), "publish.cert_mode"),
        "the file deleted": (None, path),
    }
    with Daemon(env) as d:
        d.wait_ready()
        assert orders(env, "one") == 1
        published = env.published("one")
        rejected = 0
        for what, (text, names) in bad.items():
            if text is None:
                env.config_path.unlink()
            else:
                env.config_path.write_text(text)
            before = d.metric(ERR) or 0
            errors_before = len([r for r in d.logs() if r["level"] == "ERROR"])
            d.send(signal.SIGHUP)
            wait_until(f"the reload of {what} to be rejected", lambda b=before: (d.metric(ERR) or 0) > b, timeout=15)
            # the SIGHUP's reload, and the config watcher's when it saw the change apart from it:
            # one ERROR line per rejected reload
            delta = int((d.metric(ERR) or 0) - before)
            wait_until("its error line", lambda b=errors_before, n=delta: len(
                [r for r in d.logs() if r["level"] == "ERROR"]) - b >= n, timeout=5)
            errors = [r for r in d.logs() if r["level"] == "ERROR"][errors_before:]
            rejected += 1
            print(f"SIGHUP with {what}: {delta} rejected reload(s): {errors[0]['msg']}")
            assert 1 <= len(errors) <= 2 and len(errors) >= delta, errors
            for e in errors:
                assert "keeping the running one" in e["msg"] and names in e["msg"] and path in e["msg"], e
            assert d.proc is not None and d.proc.poll() is None
            assert d.get("/healthz")[0] == 200 and d.get("/readyz")[0] == 200
            assert d.metric('tlsbridge_site_consecutive_failures{site="one"}') == 0  # still known
        assert d.metric(OK) in (None, 0)
        assert env.published("one") == published and orders(env, "one") == 1
        # fixed, with one more site: taken
        env.sites["two"] = {"domains": ["two.hup.example"]}
        env.write()
        d.send(signal.SIGHUP)
        wait_until("the fixed config's new site", lambda: d.metric('tlsbridge_issuances_total{site="two"}') == 1,
                   timeout=90)
        assert (d.metric(OK) or 0) >= 1 and (d.metric(ERR) or 0) >= rejected == len(bad)
        assert env.published("two") == env.lineage("two")
        assert env.published("one") == published and orders(env, "one") == 1
        rc, _ = d.stop()
        assert rc == 0




def test_sigterm_while_certbot_runs_ends_run_and_certbot_and_half_publishes_nothing(
        tmp_path: Path, fault_pebble: PebbleServer) -> None:
    """A published site, and per round a new site whose certbot waits on a CA that never
    answers (a black-holed port): SIGTERM to run in the middle of it."""
    env = deployment(tmp_path, fault_pebble, {"old": {"domains": ["old.term.example"]}})
    assert env.run("renew").returncode == 0
    good = dict(env.acme)
    old = {n: env.published("old", n) for n in ("cert.pem", "fullchain.pem", "privkey.pem")}
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    took = []
    try:
        for i in range(ROUNDS):
            env.acme["directory"] = f"https://127.0.0.1:{hole.getsockname()[1]}/dir"
            env.sites[f"new{i}"] = {"domains": [f"new{i}.term.example"]}
            with Daemon(env) as d:
                wait_until("certbot to start", lambda: certbot_running(env.root), timeout=60)
                rc, seconds = d.stop(signal.SIGTERM, timeout=30)
                took.append(round(seconds, 2))
                assert rc == 0, d.tail()
                assert d.logged("abandoned the pass underway"), d.tail()
            wait_until("certbot to be gone", lambda: not processes_under(env.root), timeout=15)
            for site in env.sites:
                folder = env.publish_dir / site
                assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], site
                assert key_matches_cert(env.published(site, "privkey.pem"), env.published(site, "fullchain.pem"))
            assert {n: env.published("old", n) for n in old} == old
            assert parse_pem(env.published(f"new{i}")).placeholder
            assert orders(env, f"new{i}") == 0
    finally:
        hole.close()
    print(f"SIGTERM during certbot x{ROUNDS}: run exited 0 after {took} s; certbot gone each time")
    env.acme.clear()
    env.acme.update(good)
    r = env.run("renew")  # the next pass issues what was abandoned
    assert r.returncode == 0, r.stderr
    for i in range(ROUNDS):
        assert env.published(f"new{i}") == env.lineage(f"new{i}")
    assert {n: env.published("old", n) for n in old} == old


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


WARMUP, PASSES = 20, 200
RSS_BOUND_KIB = 2048


def test_memory_and_descriptors_stay_flat_over_many_passes(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    """Nothing-due passes every virtual minute at 3000x (one per 20 ms): measured, not timed."""
    env = deployment(tmp_path, fault_pebble, {f"s{i}": {"domains": [f"s{i}.mem.example"]} for i in range(3)})
    assert env.run("renew").returncode == 0
    env.extra["renewal"] = {"check_interval": "1m", "jitter": "0s"}
    key = 'tlsbridge_passes_total{scope="all"}'
    with Daemon(env, extra_env={"TLSBRIDGE_FAKE_RATE": "3000"}) as d:
        assert d.proc is not None
        pid = d.proc.pid
        d.wait_ready()
        wait_until(f"{WARMUP} passes", lambda: (d.metric(key) or 0) >= WARMUP, timeout=120, interval=0.2)
        at0 = d.metric(key) or 0
        samples = []  # (passes, VmRSS KiB, open fds), between and during passes
        while (n := d.metric(key) or 0) < at0 + PASSES:
            samples.append((n, _rss_kib(pid), _fds(pid)))
            wait_until("more passes", lambda n=n: (d.metric(key) or 0) > n, timeout=60, interval=0.1)
        samples.append((d.metric(key) or 0, _rss_kib(pid), _fds(pid)))
        assert d.metric("tlsbridge_pass_errors_total") == 0
        assert d.stop()[0] == 0
    # a pass may hold a descriptor or two while it runs: compare the fewest seen at the start
    # (first tenth of the samples) and at the end (last tenth)
    tenth = max(3, len(samples) // 10)
    first, last = samples[:tenth], samples[-tenth:]
    rss0, rss1 = first[0][1], last[-1][1]
    fds0, fds1 = min(s[2] for s in first), min(s[2] for s in last)
    at1 = samples[-1][0]
    print(f"memory over {at1 - at0:.0f} nothing-due passes (after {at0:.0f} warm-up), {len(samples)} samples: "
          f"VmRSS {rss0} -> {rss1} KiB ({rss1 - rss0:+d}, max {max(s[1] for s in samples)}), "
          f"fds {fds0} -> {fds1} (fewest at start -> at end; max {max(s[2] for s in samples)})")
    assert at1 - at0 >= PASSES
    assert rss1 - rss0 < RSS_BOUND_KIB
    assert fds1 <= fds0
    assert orders(env, "s0") == 1
