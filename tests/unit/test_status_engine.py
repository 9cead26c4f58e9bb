"""`status`: the state of each site from its observation; the Docker engine's TLS server
certificate when daemon_tls is configured."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import T0

from tlsbridge import config
from tlsbridge.cli import main
from tlsbridge.model import Observation, ObservedCert, SiteState
from tlsbridge.status import site_status


def test_status_shows_the_engine_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "engine"
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"sites: {{}}\nstate: {{dir: {tmp_path}/state}}\npublish: {{dir: {tmp_path}/certs}}\n"
                   f"certbot: {{config_dir: {tmp_path}/le}}\n"
                   f"daemon_tls: {{out: {out}, hostnames: [docker.example.com]}}\n")
    assert main(["-c", str(cfg), "status"]) == 0
    assert "no server certificate yet" in capsys.readouterr().out
    assert main(["-q", "-c", str(cfg), "daemon-tls", "--dockerd", "/usr/bin/dockerd"]) == 0
    capsys.readouterr()
    assert main(["-c", str(cfg), "status"]) == 0
    text = capsys.readouterr().out
    assert f"docker engine TLS ({out}): server certificate expires" in text and "days)" in text


# -- the state column, decided from one Observation (pure) ---------------------------------------

def test_site_status_from_an_observation() -> None:
    cfg = config.parse("renewal: {before_expiry: 30d}\nsites: {a: {domains: [a.example]}}\n")
    site = cfg.sites["a"]

    def cert(fp: str, placeholder: bool = False) -> ObservedCert:
        return ObservedCert(serial=1, not_before=T0, not_after=T0 + timedelta(days=90), domains=("a.example",),
                            key_type="ecdsa", issuer="CN=x", fingerprint=fp, placeholder=placeholder)

    failing = SiteState(failures=1, last_error="boom")
    served = SiteState(delivered="f")
    cases = [
        (Observation(None, None, None, SiteState()), T0, "missing"),
        (Observation(None, None, None, failing), T0, "failing"),
        (Observation(None, cert("p", placeholder=True), None, failing), T0, "placeholder"),
        (Observation(cert("f"), None, True, SiteState()), T0, "unpublished"),
        (Observation(cert("f"), cert("f"), None, served), T0, "valid"),
        (Observation(cert("f"), cert("f"), None, served), T0 + timedelta(days=61), "due"),
        (Observation(cert("f"), cert("f"), None, served), T0 + timedelta(days=91), "expired"),
        (Observation(cert("f"), cert("f"), None, replace(failing, delivered="f")), T0, "failing"),
        # Published but not verified as served (a refused reload, the engine away): its own
        # state, before `failing`, until a pass delivers it.
        (Observation(cert("f"), cert("f"), None, SiteState()), T0, "undelivered"),
        (Observation(cert("f"), cert("f"), None, replace(failing, delivered="old")), T0, "undelivered"),
        (Observation(cert("f"), cert("old"), None, served), T0, "unpublished"),
    ]
    for obs, now, state in cases:
        row = site_status(site, obs, cfg, now)
        assert row.state == state, (obs, now)
    row = site_status(site, cases[4][0], cfg, T0)
    assert row.renew_after == T0 + timedelta(days=60) and row.cert == cert("f")
