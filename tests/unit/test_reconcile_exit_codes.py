"""`renew` exits 1 while a site is backing off after a failed attempt (monitoring must see it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsbridge import config, policy
from tlsbridge.adapters.statestore import StateStore
from tlsbridge.cli import main
from tlsbridge.model import SiteState


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(f"acme: {{directory: https://ca.invalid/dir}}\n"
                    f"certbot: {{config_dir: {tmp_path}/le}}\npublish: {{dir: {tmp_path}/certs}}\n"
                    f"state: {{dir: {tmp_path}/state}}\ndocker: {{host: unix://{tmp_path}/none.sock}}\n"
                    "sites: {a: {domains: [a.example.com]}}\n")
    return path


def fail(path: Path, until: datetime) -> None:
    cfg = config.load(path)
    state = SiteState(failures=2, next_attempt=until, last_error="site=a: the CA said no", last_reason="Ca",
                      config_hash=policy.site_hash(cfg, cfg.sites["a"]))
    store = StateStore(cfg.state.dir)
    store.save("a", state)
    store.close()


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_a_site_backing_off_makes_renew_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                extra: list[str]) -> None:
    path = write_config(tmp_path)
    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    fail(path, until)
    assert main(["-c", str(path), "renew", *extra]) == 1
    err = capsys.readouterr().err
    assert f"site=a backing off until {until:%Y-%m-%dT%H:%M:%SZ}: site=a: the CA said no" in err
    assert not (tmp_path / "certs").exists()  # waiting: nothing done


def test_once_the_backoff_is_over_the_site_is_tried_again(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    fail(path, datetime.now(UTC) - timedelta(seconds=1))
    assert main(["-c", str(path), "renew", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "a: issue: NoCertificate" in out.out and "backing off" not in out.err
