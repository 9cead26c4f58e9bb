"""ARI `replaces` (RFC 9773 section 5) in renewals, against real Pebble 2.6 and real certbot.

certbot 5.8 never sends it; tlsbridge's certbot entry point adds it (certbot_main.py). Pebble
proves the field arrives: it logs `ARI: order "X" is a replacement of "Y"` for an accepted one,
and refuses one naming a certificate that another account ordered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from acmeproxy import AcmeProxy
from servers import PebbleServer
from tbenv import TbEnv

from tlsbridge.certinfo import parse_pem

REPLACEMENT = re.compile(r'ARI: order "[^"]+" is a replacement of "[^"]+"')


def tbenv(*args: Any, **kwargs: Any) -> TbEnv:
    return TbEnv(*args, docker_engine=False, **kwargs)


def replacements(pebble: PebbleServer) -> int:
    return len(REPLACEMENT.findall(pebble.pebble_log.read_text(errors="replace")))


def order_payloads(env: TbEnv) -> list[dict[str, Any]]:
    """The newOrder payloads certbot sent (its debug log prints every JWS payload)."""
    out = []
    # certbot rotates its log per run: letsencrypt.log is the newest, .1 the one before...
    for log in sorted((env.root / "logs").glob("letsencrypt.log*"), key=lambda p: p.stat().st_mtime_ns):
        for m in re.finditer(r"JWS payload:\nb'(\{.*?\})'\n", log.read_text(errors="replace"), re.S):
            doc = json.loads(m.group(1).encode().decode("unicode_escape"))
            if "identifiers" in doc:
                out.append(doc)
    return out


def test_renewal_sends_replaces_and_pebble_records_it(tmp_path: Path, pebble: PebbleServer) -> None:
    env = tbenv(tmp_path, pebble, {"one": {"domains": ["one.example.com", "www.one.example.com"]}})
    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    old = parse_pem(env.lineage("one"))
    assert old.ari_cert_id
    assert "replaces" not in order_payloads(env)[-1]  # a first issuance replaces nothing

    before = replacements(pebble)
    renewed = env.run("renew", "--force")
    assert renewed.returncode == 0, renewed.stderr
    assert f"(replaces {old.ari_cert_id})" in renewed.stderr
    assert order_payloads(env)[-1]["replaces"] == old.ari_cert_id
    assert replacements(pebble) == before + 1  # Pebble accepted it as the renewal of the old order
    assert parse_pem(env.lineage("one")).serial != old.serial

    # Changed names: a new set of identifiers is no replacement (the CA would refuse it).
    env.sites["one"]["domains"] = ["one.example.com"]
    changed = env.run("renew")
    assert changed.returncode == 0, changed.stderr
    assert "DomainsChanged" in changed.stdout
    assert "replaces" not in order_payloads(env)[-1]
    assert replacements(pebble) == before + 1


def test_no_replaces_to_a_ca_without_renewal_info(tmp_path: Path, pebble: PebbleServer) -> None:
    with AcmeProxy(pebble, hide_ari=True) as proxy:
        env = tbenv(tmp_path, pebble, {"one": {"domains": ["noari.example.com"]}},
                    acme={"directory": proxy.directory_url})
        assert env.run("renew").returncode == 0
        old = parse_pem(env.lineage("one"))
        before = replacements(pebble)
        renewed = env.run("renew", "--force")
        assert renewed.returncode == 0, renewed.stderr
        # tlsbridge offered the id; the entry point saw no renewalInfo in the directory and left it out
        assert f"(replaces {old.ari_cert_id})" in renewed.stderr
        assert "replaces" not in order_payloads(env)[-1]
        assert replacements(pebble) == before


def test_pebble_refuses_replaces_of_another_accounts_certificate(tmp_path: Path, pebble: PebbleServer) -> None:
    """The field really reaches the CA: Pebble refuses it for a certificate another account
    ordered; the entry point then orders again without it, so the renewal still succeeds."""
    (tmp_path / "owner").mkdir()
    owner = tbenv(tmp_path / "owner", pebble, {"one": {"domains": ["theirs.example.com"]}})
    assert owner.run("renew").returncode == 0
    theirs = parse_pem(owner.lineage("one"))
    assert theirs.ari_cert_id

    other = tmp_path / "other"
    argv = [sys.executable, "-m", "tlsbridge.adapters.certbot_main", "certonly", "--non-interactive",
            "--agree-tos", "--no-eff-email", "--register-unsafely-without-email",
            "--config-dir", str(other / "config"), "--work-dir", str(other / "work"),
            "--logs-dir", str(other / "logs"), "--server", pebble.directory_url, "--cert-name", "mine",
            "-d", "theirs.example.com", "--standalone", "--http-01-port", str(pebble.http_01_port)]
    env = {**os.environ, **pebble.env, "TLSBRIDGE_ARI_REPLACES": theirs.ari_cert_id}
    before = replacements(pebble)
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    log = (other / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert f"refused the order's ARI replaces {theirs.ari_cert_id}" in log
    assert "did not request the certificate being replaced" in log
    assert replacements(pebble) == before
    assert (other / "config" / "live" / "mine" / "cert.pem").is_file()
