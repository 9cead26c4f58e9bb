"""`status` reports the Docker engine's TLS server certificate when daemon_tls is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsbridge.cli import main


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
