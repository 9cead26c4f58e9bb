"""The CA's bad days, with real Pebbles and real certbot: a fallback CA when the primary is away or
rate-limits a site, back to the primary at the next renewal, and the CA's retry-after shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from acmeproxy import AcmeProxy
from cryptography import x509
from servers import PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.adapters.certstore import renewal_params
from tlsbridge.certinfo import parse_pem
from tlsbridge.config import load
from tlsbridge.render.status_page import PageMeta, render
from tlsbridge.sidecar.view import page_row
from tlsbridge.status import collect
from tlsbridge.wiring import build_ports

EAB_KID, EAB_KEY = "fallback-kid", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def tbenv(*args: Any, **kwargs: Any) -> TbEnv:
    return TbEnv(*args, docker_engine=False, **kwargs)


def issuer_of(pebble: PebbleServer) -> str:
    return x509.load_pem_x509_certificate(pebble.intermediate_pem()).subject.rfc4514_string()


def accounts(config_dir: Path, pebble: PebbleServer) -> list[str]:
    folder = config_dir / "accounts" / f"127.0.0.1:{pebble.acme_port}" / "dir"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def two_pebbles() -> Iterator[tuple[PebbleServer, PebbleServer]]:
    """A primary and a fallback that wants EAB, both validating HTTP-01 on the same port."""
    port = free_port()
    with PebbleServer(http_01_port=port) as primary, \
            PebbleServer(http_01_port=port, eab_keys={EAB_KID: EAB_KEY}) as fallback:
        yield primary, fallback


def test_fallback_when_the_primary_is_away_then_back_to_the_primary(
        tmp_path: Path, two_pebbles: tuple[PebbleServer, PebbleServer]) -> None:
    primary, fallback = two_pebbles
    bundle = tmp_path / "cas.pem"

    def trust_both() -> None:  # a restarted Pebble serves a new TLS certificate
        bundle.write_bytes(primary.ca_bundle.read_bytes() + fallback.ca_bundle.read_bytes())

    trust_both()
    env = tbenv(tmp_path, primary, {"one": {"domains": ["one.example.com"]}},
                acme={"ca_bundle": str(bundle),
                      "fallback": [{"directory": fallback.directory_url,
                                    "eab": {"kid": EAB_KID, "hmac_key": EAB_KEY}}]})

    primary.stop(keep_workdir=True)
    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    assert "trying the fallback CA " + fallback.directory_url in first.stderr
    assert "issued by the fallback CA" in first.stderr
    cert = parse_pem(env.lineage("one"))
    assert cert.issuer == issuer_of(fallback)
    assert env.published("one", "fullchain.pem") == env.lineage("one", "fullchain.pem")
    row = env.status()["one"]
    assert (row["ca"], row["ca_fallback"], row["state"]) == (fallback.directory_url, True, "valid")
    table = env.run("status").stdout
    assert f"127.0.0.1:{fallback.acme_port} (fallback)" in table
    assert renewal_params(env.config_dir, "one")["server"] == fallback.directory_url
    assert len(accounts(env.config_dir, fallback)) == 1  # registered there with its EAB
    assert accounts(env.config_dir, primary) == []
    # Its ARI window is asked of the CA that issued it (certbot's certonly asks none itself).
    assert "/renewalInfo/" in fallback.pebble_log.read_text()

    # The primary is back: nothing is re-issued for that (a site never flips CAs on its own).
    primary.start()
    trust_both()
    before = env.snapshot()
    quiet = env.run("renew")
    assert quiet.returncode == 0 and "NotDue" in quiet.stdout, quiet.stderr
    assert env.snapshot() == before

    # The next renewal tries the primary first again, and gets it there.
    renewed = env.run("renew", "--force")
    assert renewed.returncode == 0, renewed.stderr
    assert "the fallback CA" not in renewed.stderr
    assert "(replaces " not in renewed.stderr  # the primary never issued the old certificate
    cert = parse_pem(env.lineage("one"))
    assert cert.issuer == issuer_of(primary)
    assert env.published("one") == env.lineage("one")
    row = env.status()["one"]
    assert (row["ca"], row["ca_fallback"], row["serial"]) == (primary.directory_url, False, cert.serial_hex)
    params = renewal_params(env.config_dir, "one")
    assert params["server"] == primary.directory_url  # certbot's lineage now renews at the primary
    assert [params["account"]] == accounts(env.config_dir, primary)
    assert len(accounts(env.config_dir, fallback)) == 1


def test_rate_limited_site_shows_retry_after_then_falls_back(tmp_path: Path, pebble: PebbleServer) -> None:
    until = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    with AcmeProxy(pebble, rate_limit=until) as proxy:
        env = tbenv(tmp_path, pebble, {"one": {"domains": ["limited.example.com"]}},
                    acme={"directory": proxy.directory_url})
        failed = env.run("renew")
        assert failed.returncode == 1
        assert proxy.refused_orders == 1  # a rate limit is not retried
        assert f"retry after {until:%Y-%m-%dT%H:%M}Z" in failed.stderr
        row = env.status()["one"]
        assert row["state"] == "placeholder" and "rate-limited" in row["last_error"]  # nothing real yet
        assert datetime.fromisoformat(row["retry_after"]) == until
        table = env.run("status").stdout
        assert f"rate-limited by the CA, which asks to retry after {until:%Y-%m-%dT%H:%M:%SZ}" in table

        # The status page (what the sidecar serves) from the same files and state.
        cfg = load(env.config_path)
        rows = collect(cfg, build_ports(cfg), datetime.now(UTC))
        page = render([page_row(r, None, None) for r in rows], datetime.now(UTC), PageMeta("test", True))
        assert f"the CA asks to retry after {until:%Y-%m-%d %H:%M} UTC" in page

        # With a fallback CA (the same Pebble under its own URL: another CA to certbot) the site is
        # issued there at once; the rate limit is no longer shown.
        env.acme["fallback"] = [{"directory": pebble.directory_url}]
        issued = env.run("renew", "--force")
        assert issued.returncode == 0, issued.stderr
        assert proxy.refused_orders == 2
        row = env.status()["one"]
        assert (row["state"], row["ca"], row["ca_fallback"], row["retry_after"]) == (
            "valid", pebble.directory_url, True, None)
        assert "rate-limited" not in env.run("status").stdout
