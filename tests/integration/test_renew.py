"""`tlsbridge renew`, `status` and `validate` end to end: real Pebble (with ARI), real certbot."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from servers import PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.certinfo import key_matches_cert, parse_pem


def tbenv(*args: Any, **kwargs: Any) -> TbEnv:
    """A deployment without a Docker engine: these are the foundation's tests (no delivery)."""
    return TbEnv(*args, docker_engine=False, **kwargs)


def two_sites() -> dict[str, dict[str, object]]:
    return {"one": {"domains": ["one.example.com", "www.one.example.com"]},
            "two": {"domains": ["two.example.com"]}}


def certbot_logs(env: TbEnv) -> int:
    return len(list((env.root / "logs").glob("letsencrypt.log*")))


def test_issue_publish_status_then_nothing_to_do(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, two_sites())
    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    assert "one: issued (NoCertificate)" in first.stdout
    for site in ("one", "two"):
        for name in ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem"):
            assert env.published(site, name) == env.lineage(site, name)
        assert key_matches_cert(env.published(site, "privkey.pem"), env.published(site))
        assert oct((env.publish_dir / site / "privkey.pem").stat().st_mode & 0o777) == "0o600"

    status = env.status()
    one = status["one"]
    cert = parse_pem(env.published("one"))
    assert one["state"] == "valid"
    assert one["serial"] == cert.serial_hex
    assert one["domains"] == ["one.example.com", "www.one.example.com"]
    assert one["issuer"].startswith("CN=Pebble Intermediate CA")
    assert one["published"] == str(env.publish_dir / "one")
    assert datetime.fromisoformat(one["not_after"]) == cert.not_after
    # ARI: Pebble's window lies in the last third; the chosen moment is inside it
    info = pebble.renewal_info(env.published("one"))
    renew_after = datetime.fromisoformat(one["renew_after"])
    start = datetime.fromisoformat(info["suggestedWindow"]["start"][:19] + "+00:00")
    assert start - timedelta(seconds=1) <= renew_after

    table = env.run("status")
    assert table.returncode == 0 and "one" in table.stdout and "valid" in table.stdout

    # idempotent: nothing due -> no certbot run, no CA contact, no file changed
    before, logs = env.snapshot(), certbot_logs(env)
    second = env.run("renew")
    assert second.returncode == 0, second.stderr
    assert "NotDue" in second.stdout
    assert certbot_logs(env) == logs
    assert env.snapshot() == before


def test_force_renews_only_the_named_site(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, two_sites())
    assert env.run("renew").returncode == 0
    one, two = env.published("one"), env.published("two")
    r = env.run("renew", "--force", "--site", "one")
    assert r.returncode == 0, r.stderr
    assert "one: renewed (Forced)" in r.stdout
    assert env.published("one") != one and env.published("two") == two
    assert not (env.config_dir / "live" / "one-0001").exists()


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, two_sites())
    r = env.run("renew", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "one: issue: NoCertificate" in r.stdout and "certbot: issue" in r.stdout
    assert not env.publish_dir.exists() and not env.config_dir.exists()


def test_changed_domains_reissue_under_the_same_name(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, {"one": {"domains": ["a.example.com"]}})
    assert env.run("renew").returncode == 0
    env.sites["one"]["domains"] = ["a.example.com", "b.example.com"]
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert "re-issued (DomainsChanged)" in r.stdout
    assert parse_pem(env.published("one")).domains == ("a.example.com", "b.example.com")
    assert sorted(p.name for p in (env.config_dir / "live").iterdir() if p.is_dir()) == ["one"]


def test_changed_key_type_reissues(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, {"one": {"domains": ["k.example.com"]}})
    assert env.run("renew").returncode == 0
    env.acme["key_type"] = "rsa2048"
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert "KeyTypeChanged" in r.stdout
    assert parse_pem(env.published("one")).key_type == "rsa2048"


def test_an_existing_certbot_lineage_is_adopted_not_reissued(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, {"legacy": {"domains": ["legacy.example.com"]}})
    subprocess.run(
        [str(Path(sys.executable).with_name("certbot")), "certonly", "--standalone", "--non-interactive",
         "--agree-tos", "-m", "a@example.com", "--server", pebble.directory_url,
         "--http-01-port", str(pebble.http_01_port), "--cert-name", "legacy", "-d", "legacy.example.com",
         "--config-dir", str(env.config_dir), "--work-dir", str(tmp_path / "work"),
         "--logs-dir", str(tmp_path / "logs")],
        check=True, capture_output=True, env={**os.environ, **pebble.env}, timeout=120)
    lineage = env.lineage("legacy")
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert "published" in r.stdout and "NotPublished" in r.stdout
    assert env.lineage("legacy") == lineage == env.published("legacy")


@pytest.fixture
def webroot_server(tmp_path: Path, pebble: PebbleServer) -> Iterator[Path]:
    """A plain HTTP server on Pebble's HTTP-01 port serving the webroot folder."""
    root = tmp_path / "webroot"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http_01_port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()


def test_webroot_method(tmp_path: Path, pebble: PebbleServer, webroot_server: Path) -> None:
    env = tbenv(tmp_path, pebble, {"web": {"domains": ["web.example.com"]}},
                challenge={"method": "webroot", "webroot": str(webroot_server)})
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert parse_pem(env.published("web")).domains == ("web.example.com",)


def test_ari_revocation_triggers_renewal(tmp_path: Path, pebble: PebbleServer) -> None:
    """Revoking moves Pebble's ARI window into the past: the next check after Retry-After renews."""
    env = tbenv(tmp_path, pebble, {"ari": {"domains": ["ari.example.com"]}})
    assert env.run("renew").returncode == 0
    old = env.published("ari")
    subprocess.run(
        [str(Path(sys.executable).with_name("certbot")), "revoke", "--non-interactive",
         "--no-delete-after-revoke", "--cert-path", str(env.config_dir / "live/ari/cert.pem"),
         "--server", pebble.directory_url, "--config-dir", str(env.config_dir),
         "--work-dir", str(tmp_path / "work"), "--logs-dir", str(tmp_path / "logs")],
        check=True, capture_output=True, env={**os.environ, **pebble.env}, timeout=120)
    # Before Retry-After (6 h) the cached window stands: nothing to do, no CA contact.
    r = env.run("renew")
    assert r.returncode == 0 and "NotDue" in r.stdout
    later = (datetime.now(UTC) + timedelta(hours=7)).isoformat()
    r = env.run("renew", env={"TLSBRIDGE_FAKE_NOW": later})
    assert r.returncode == 0, r.stderr
    assert "ari: renewed (Due)" in r.stdout, r.stdout
    assert env.published("ari") != old
    # the new certificate gets its own, future window: not due again
    r = env.run("renew", env={"TLSBRIDGE_FAKE_NOW": later})
    assert "NotDue" in r.stdout


def test_ca_down_fails_the_run_and_leaves_published_files_alone(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, two_sites())
    assert env.run("renew").returncode == 0
    before = {s: env.published(s, "fullchain.pem") for s in ("one", "two")}
    snapshot = {k: v for k, v in env.snapshot().items() if "/certs/" in k}
    env.acme["directory"] = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens there
    r = env.run("renew", "--force")
    assert r.returncode == 1
    assert "site one failed (CAUnreachable)" in r.stderr and "site two failed (CAUnreachable)" in r.stderr
    assert {s: env.published(s, "fullchain.pem") for s in ("one", "two")} == before
    assert {k: v for k, v in env.snapshot().items() if "/certs/" in k} == snapshot
    status = env.status()
    assert status["one"]["state"] == "failing" and "could not be reached" in status["one"]["last_error"]


def test_one_failing_site_does_not_stop_the_others(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, {"bad": {"domains": ["blocked-domain.example"]},
                                   "good": {"domains": ["good.example.com"]}})
    r = env.run("renew")
    assert r.returncode == 1
    assert "site bad failed" in r.stderr
    assert "good: issued" in r.stdout


def test_a_site_backing_off_fails_renew_until_it_succeeds(tmp_path: Path, pebble: PebbleServer) -> None:
    """Monitoring must see a failing site: while it backs off (no CA contact), renew exits 1."""
    env = tbenv(tmp_path, pebble, {"bad": {"domains": ["blocked-domain.example"]},
                                   "good": {"domains": ["good.example.com"]}})
    assert env.run("renew").returncode == 1
    status = env.status()
    assert status["bad"]["state"] == "placeholder"  # all it has: the bootstrap placeholder
    error = status["bad"]["last_error"]
    before, logs = env.snapshot(), certbot_logs(env)
    r = env.run("renew")
    assert r.returncode == 1, r.stdout + r.stderr
    m = re.search(r"^tlsbridge: site=bad backing off until (\S+): (.*)$", r.stderr, re.MULTILINE)
    assert m is not None, r.stderr
    assert m.group(2) == error
    until = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    assert datetime.now(UTC) < until < datetime.now(UTC) + timedelta(minutes=2)  # the first step: ~1 min
    assert "good: NotDue" in r.stdout and "bad" not in r.stdout
    assert certbot_logs(env) == logs and env.snapshot() == before  # no CA contact, nothing written
    # once the backoff is over the site is tried again: it fails again, and says so
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    r = env.run("renew", env={"TLSBRIDGE_FAKE_NOW": later})
    assert r.returncode == 1 and "site bad failed" in r.stderr and certbot_logs(env) > logs
    # the site fixed: renew succeeds and exits 0
    env.sites["bad"]["domains"] = ["bad.example.com"]
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert "bad: issued" in r.stdout and "backing off" not in r.stderr


def test_pebble_rejecting_30_percent_of_nonces_still_succeeds(tmp_path: Path) -> None:
    with PebbleServer(http_01_port=free_port(), nonce_reject=30) as flaky:
        env = tbenv(tmp_path, flaky, two_sites())
        r = env.run("renew")
        assert r.returncode == 0, r.stderr + flaky.logs()
        assert env.published("one") and env.published("two")
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("letsencrypt.log*"))
        assert "badNonce, retrying with a fresh nonce" in logs  # the rejections really happened


def test_validate_and_bad_config(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, two_sites())
    ok = env.run("validate")
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == ""
    env.sites["two"]["domains"] = ["*.two.example.com"]
    bad = env.run("renew")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert f"{env.config_path}: sites.two.domains[0]" in bad.stderr and "wildcard" in bad.stderr
    assert not env.publish_dir.exists() and not (tmp_path / "state").exists()
    env.sites["two"]["domains"] = ["two.example.com"]
    unknown = env.run("renew", "--site", "nope")
    assert unknown.returncode == 2 and "--site nope" in unknown.stderr
