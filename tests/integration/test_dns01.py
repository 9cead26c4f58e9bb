"""DNS-01 for real: certbot-dns-rfc2136 updating a real bind9, Pebble validating against it.

A wildcard site (`example.test` + `*.example.test`) on DNS-01 beside an HTTP-01 site in one
config; renewal; and the three ways the DNS side fails (a wrong TSIG secret, the DNS server
down, a name no zone covers), each one line naming the site, the DNS server and the cause, with
the published files untouched and a backoff recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bindserver import BindServer
from runkit import wait_for
from servers import PROJECT_ROOT, PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.adapters.statestore import StateStore
from tlsbridge.certinfo import parse_pem

WILD = ("example.test", "*.example.test")


def dns_challenge(creds: Path, propagation: str | None = "1s") -> dict[str, Any]:
    ch: dict[str, Any] = {"method": "dns", "dns_plugin": "rfc2136", "dns_credentials": str(creds)}
    if propagation is not None:
        ch["dns_propagation"] = propagation  # the plugin's default is 60 s; bind9 here answers at once
    return ch


def tbenv(root: Path, pebble: PebbleServer, sites: dict[str, Any], **kw: Any) -> TbEnv:
    return TbEnv(root, pebble, sites, docker_engine=False, **kw)


def names(pem: bytes) -> set[str]:
    return set(parse_pem(pem).domains)


def test_a_wildcard_by_dns01_beside_an_http01_site_issues_renews_and_shows(
        tmp_path: Path, bind9: BindServer, dns_pebble: PebbleServer) -> None:
    creds = bind9.credentials(tmp_path / "rfc2136.ini")
    env = tbenv(tmp_path, dns_pebble, {
        "wild": {"domains": list(WILD), "challenge": dns_challenge(creds)},
        "web": {"domains": ["www.web.test"]},  # the top-level challenge: HTTP-01 (standalone)
    })
    assert env.run("validate").returncode == 0

    t0 = time.monotonic()
    first = env.run("renew")
    print(f"wildcard (DNS-01) + HTTP-01 site issued in {time.monotonic() - t0:.2f} s")
    assert first.returncode == 0, first.stderr
    assert "wild: issued" in first.stdout and "web: issued" in first.stdout
    wild = env.published("wild")
    assert names(wild) == set(WILD) and names(env.published("web")) == {"www.web.test"}
    assert env.published("wild", "fullchain.pem") == env.lineage("wild", "fullchain.pem")
    # certbot removed its TXT records from the zone afterwards
    assert bind9.txt("_acme-challenge.example.test") == []
    # certbot remembered the authenticator per lineage
    conf = (env.config_dir / "renewal" / "wild.conf").read_text()
    assert "authenticator = dns-rfc2136" in conf and "authenticator = standalone" in (
        env.config_dir / "renewal" / "web.conf").read_text()

    status = env.status()
    assert status["wild"]["domains"] == list(WILD) and status["wild"]["state"] == "valid"
    assert status["wild"]["serial"] == parse_pem(wild).serial_hex
    assert status["web"]["state"] == "valid"
    table = env.run("status")
    assert table.returncode == 0 and "example.test,*.example.test" in table.stdout, table.stdout

    # renewal of the wildcard, by DNS-01 again; the HTTP-01 site is left alone
    web = env.published("web")
    again = env.run("renew", "--force", "--site", "wild")
    assert again.returncode == 0, again.stderr
    renewed = env.published("wild")
    assert names(renewed) == set(WILD)
    assert parse_pem(renewed).serial_hex != parse_pem(wild).serial_hex
    assert env.published("web") == web
    assert (env.config_dir / "live" / "wild").is_dir() and not (env.config_dir / "live" / "wild-0001").exists()

    quiet = env.run("renew")
    assert quiet.returncode == 0 and "NotDue" in quiet.stdout


def _break_secret(bind9: BindServer, creds: Path, env: TbEnv) -> str:
    bad = bind9.secret[:-8] + ("A" if bind9.secret[-8] != "A" else "B") + bind9.secret[-7:]
    bind9.credentials(creds, secret=bad)
    return "rejected the TSIG signature"


def _stop_server(bind9: BindServer, creds: Path, env: TbEnv) -> str:
    # a second named, credentials pointing at it, then stopped: the DNS server is down
    other = BindServer(("example.test",)).start()
    other.stop()
    bind9.credentials(creds, port=other.port)
    return "did not answer"


def _uncovered_name(bind9: BindServer, creds: Path, env: TbEnv) -> str:
    env.sites["f"]["domains"].append("app.elsewhere.test")
    return "no zone that covers app.elsewhere.test"


@pytest.mark.parametrize("breakage", [_break_secret, _stop_server, _uncovered_name],
                         ids=["wrong-tsig-secret", "dns-server-down", "zone-does-not-cover"])
def test_dns_failures_are_one_line_leave_published_files_and_back_off(
        tmp_path: Path, bind9: BindServer, dns_pebble: PebbleServer, breakage: Any) -> None:
    creds = bind9.credentials(tmp_path / "rfc2136.ini")
    name = f"f{secrets.token_hex(3)}.example.test"
    env = tbenv(tmp_path, dns_pebble, {"f": {"domains": [name], "challenge": dns_challenge(creds)}},
                extra={"certbot": {"config_dir": str(tmp_path / "letsencrypt"), "work_dir": str(tmp_path / "work"),
                                   "logs_dir": str(tmp_path / "logs"), "timeout": "3m"}})
    assert env.run("renew").returncode == 0
    published = {n: env.published("f", n) for n in ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem")}

    cause = breakage(bind9, creds, env)
    t0 = time.monotonic()
    r = env.run("renew", "--force")
    print(f"{breakage.__name__}: renew exited {r.returncode} after {time.monotonic() - t0:.1f} s\n{r.stderr}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "community.letsencrypt" not in r.stderr
    summary = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site f failed")]
    assert len(summary) == 1, r.stderr
    line = summary[0]
    assert "(DnsChallengeFailed)" in line and "site=f" in line and cause in line, line
    assert "DNS server 127.0.0.1:" in line
    # nothing published changed
    assert {n: env.published("f", n) for n in published} == published
    # backoff recorded: the next attempt lies in the future, the status says failing
    state = StateStore(tmp_path / "state").load_all()["f"]
    assert state.failures == 1 and state.next_attempt is not None and state.next_attempt > datetime.now(UTC)
    assert state.last_reason == "DnsChallengeFailed"
    st = env.status()["f"]
    assert st["state"] == "failing" and cause in (st["last_error"] or "")


# ---- the sidecar image with the rfc2136 plugin -----------------------------------------------------

BUILD = PROJECT_ROOT / "scripts" / "build-sidecar-image.sh"
DNS_IMAGE = os.environ.get("TLSBRIDGE_SIDECAR_DNS_IMAGE", "tlsbridge-test/sidecar-dns:latest")
UID = 10001


@pytest.fixture(scope="module")
def sidecar_dns_image(docker_engine: Any) -> str:
    t0 = time.monotonic()
    proc = subprocess.run([str(BUILD), "--dns-plugins", "rfc2136", DNS_IMAGE], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"{proc.stdout.strip()}\n(build script: {time.monotonic() - t0:.1f} s)")
    return DNS_IMAGE


def test_the_sidecar_image_with_rfc2136_issues_the_wildcard(
        tmp_path: Path, docker_engine: Any, sidecar_dns_image: str, bind9: BindServer,
        dns_pebble: PebbleServer) -> None:
    root = tmp_path / "sidecar"
    root.mkdir()
    shutil.copy(dns_pebble.ca_bundle, root / "pebble-ca.pem")
    creds = bind9.credentials(root / "rfc2136.ini")
    env = TbEnv(root, dns_pebble, {"wild": {"domains": list(WILD), "challenge": dns_challenge(creds)}},
                acme={"ca_bundle": str(root / "pebble-ca.pem")})
    env.write()
    os.chown(root, UID, UID)
    os.chown(creds, UID, UID)  # still 0600: only the image's user reads it
    port = free_port()
    container = docker_engine.containers.run(
        sidecar_dns_image, ["-c", str(env.config_path), "run"], detach=True,
        name=f"tbrun-dns-{secrets.token_hex(3)}", network_mode="host",  # bind9 and Pebble are on 127.0.0.1
        environment={"TLSBRIDGE_LISTEN": f"127.0.0.1:{port}", "TLSBRIDGE_LOG_FORMAT": "json"},
        volumes={str(root): {"bind": str(root), "mode": "rw"}})
    try:
        check = container.client.containers.run(sidecar_dns_image, ["-c", str(env.config_path), "validate"],
                                                remove=True, network_mode="none",
                                                volumes={str(root): {"bind": str(root), "mode": "ro"}})
        assert check == b""  # the plugin is installed in the image, the credentials are private

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the first pass", ready, 120, on_timeout=lambda: container.logs().decode()[-3000:])
        cert = parse_pem(env.published("wild"))
        assert set(cert.domains) == set(WILD) and not cert.placeholder
        logs = [json.loads(line) for line in container.logs(stderr=False).decode().splitlines()]
        assert any("issued serial=" in rec["msg"] for rec in logs)
        container.stop(timeout=10)
        assert container.wait(timeout=10)["StatusCode"] == 0
    finally:
        container.remove(force=True)
