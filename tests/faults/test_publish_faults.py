"""Publication under faults: kill -9, a read-only or full filesystem, a planted symlink."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from faultkit import Reader, deployment, fill, finish, orders, processes_under, reap, start, tmpfs, wait_until
from servers import PebbleServer

from tlsbridge.adapters.publish import Publisher
from tlsbridge.certinfo import key_matches_cert

KILLS = 8
TRIGGERS = ("site=one issued", "site=one published", "site=two running certbot", "site=two issued")


def test_kill_9_during_publication_never_shows_a_broken_pair_and_the_next_run_repairs(
        tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": ["one.kill.example"]},
                                              "two": {"domains": ["two.kill.example"]}})
    assert env.run("renew").returncode == 0
    rng = random.Random(11)
    readers = [Reader(env.publish_dir / s) for s in ("one", "two")]
    killed = 0
    with readers[0], readers[1]:
        for k in range(KILLS):
            proc = start(env, "renew", "--force")
            # kill right at a step of the pass, read from its own log as it goes (a fixed sleep
            # missed more and more passes as they got faster), give or take 50 ms
            trigger = TRIGGERS[k % len(TRIGGERS)]
            assert proc.stderr is not None
            for line in proc.stderr:
                if trigger in line:
                    break
            time.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:  # not reaped yet: the PID is still this process's
                killed += 1
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            reap(env.root)  # certbot may outlive it (issue 11.3): let it end before the repair
            repair = env.run("renew")
            assert repair.returncode == 0, repair.stderr
            for site in ("one", "two"):
                assert env.published(site) == env.lineage(site)
                assert key_matches_cert(env.published(site, "privkey.pem"), env.published(site))
                folder = env.publish_dir / site
                assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    print(f"kill -9: {killed} of {KILLS} mid-pass; reads {[r.reads for r in readers]}, mismatched "
          f"{[r.mismatched for r in readers]}, missing {[r.missing for r in readers]}")
    assert killed > KILLS // 2
    for r in readers:
        assert r.reads > 0
        assert (r.mismatched, r.missing) == (0, 0), r.errors[:5]


def test_a_read_only_publish_dir_fails_before_the_ca_is_asked(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"ro": {"domains": ["ro.fs.example"]}})
    with tmpfs(env.publish_dir, "256k", read_only=True):
        r = env.run("renew")
        assert r.returncode == 1
        assert str(env.publish_dir) in r.stderr and "read-only" in r.stderr.lower()
        assert orders(env, "ro") == 0 and not (env.config_dir / "archive").exists()
    backing_off = env.run("renew")  # the failure backs off like any other, and says so
    assert backing_off.returncode == 1 and "site=ro backing off until" in backing_off.stderr
    assert env.run("renew", "--force").returncode == 0  # writable again
    assert orders(env, "ro") == 1


def test_a_full_disk_during_publication_keeps_the_old_certificate(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"full": {"domains": ["full.fs.example"]}})
    with tmpfs(env.publish_dir, "256k"):
        assert env.run("renew").returncode == 0
        old = {n: env.published("full", n) for n in ("cert.pem", "privkey.pem", "fullchain.pem")}
        # full before the pass: refused before the CA is asked
        filler = env.publish_dir / "filler-dir"
        filler.mkdir()
        fill(filler)
        r = env.run("renew", "--force")
        assert r.returncode == 1 and "full filesystem" in r.stderr, r.stderr
        assert orders(env, "full") == 1
        for f in filler.iterdir():
            f.unlink()
        # full while certbot runs: the publication fails, the old files stay
        proc = start(env, "renew", "--force")
        wait_until("certbot to start", lambda: any(b"certbot" in Path(f"/proc/{p}/cmdline").read_bytes()
                                                   for p in processes_under(env.root)))
        fill(filler)
        r = finish(proc)
        assert r.returncode == 1, r.stderr
        assert "No space left on device" in r.stderr and str(env.publish_dir / "full") in r.stderr
        assert orders(env, "full") == 2  # certbot holds the new one; it is published once there is room
        assert {n: env.published("full", n) for n in old} == old
        assert not [p for p in (env.publish_dir / "full").iterdir() if p.name.endswith(".tmp")]
        for f in filler.iterdir():
            f.unlink()
        r = env.run("renew")
        assert r.returncode == 0, r.stderr
        assert env.published("full") == env.lineage("full") != old["cert.pem"]
        assert orders(env, "full") == 2


def test_a_symlink_planted_at_the_site_folder_is_never_followed(tmp_path: Path, fault_pebble: PebbleServer) -> None:
    env = deployment(tmp_path, fault_pebble, {"new": {"domains": ["new.link.example"]},
                                              "old": {"domains": ["old.link.example"]}})
    assert env.run("renew", "--site", "old").returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    env.publish_dir.mkdir(exist_ok=True)
    (env.publish_dir / "new").symlink_to(victim)
    old_site = env.publish_dir / "old"
    moved = tmp_path / "old-real"
    old_site.rename(moved)
    old_site.symlink_to(moved)  # an existing site's folder swapped for a link to it
    before = {p.name: p.lstat() for p in moved.iterdir()}
    for args in (("renew",), ("renew", "--force")):
        r = env.run(*args)
        assert r.returncode == 1
        assert f"{env.publish_dir / 'new'}: is a symbolic link" in r.stderr
        assert f"{old_site}: is a symbolic link" in r.stderr
        summary = [line for line in r.stderr.splitlines() if line.startswith("tlsbridge: site")]
        assert len(summary) == 2 and all("symbolic link" in line for line in summary), r.stderr
    assert list(victim.iterdir()) == []
    assert stat.S_IMODE(victim.stat().st_mode) == 0o700 and victim.stat().st_uid == os.getuid()
    assert {p.name: p.lstat() for p in moved.iterdir()} == before
    assert orders(env, "new") == 0 and orders(env, "old") == 1


_PUBLISHER = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from helpers import cert_files
from tlsbridge.adapters.publish import Publisher
from tlsbridge.errors import PublishError
pub, batch, failed = Publisher(Path(sys.argv[1])), [cert_files() for _ in range(6)], 0
for i in range(int(sys.argv[3])):
    try:
        pub.publish("ex", batch[i % len(batch)])
    except PublishError as exc:
        failed += 1
        print(exc, file=sys.stderr)
print(failed)
"""
PUBLICATIONS = 150


def test_two_publishers_of_one_site_never_fail_nor_expose_a_missing_generation(tmp_path: Path) -> None:
    """Two processes publishing one site (what a renew beside run was before the pass lock)."""
    unit = str(Path(__file__).resolve().parents[1] / "unit")
    procs = [subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(tmp_path), unit, str(PUBLICATIONS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    wait_until("a first publication", lambda: (tmp_path / "ex" / "current").is_symlink())
    with Reader(tmp_path / "ex") as reader:
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    failed = sum(int(out.strip()) for out, _ in outs)
    print(f"publishers: {2 * PUBLICATIONS} publications, {failed} failed; reader: {reader.reads} reads, "
          f"{reader.mismatched} mismatched, {reader.missing} missing")
    assert failed == 0 and reader.reads > 0
    assert (reader.mismatched, reader.missing) == (0, 0), reader.errors[:5]
    Publisher(tmp_path, grace=0).prune("ex")
    assert not [p for p in (tmp_path / "ex").iterdir() if p.name.endswith(".tmp")]
