"""Delivery end to end: real dockerd, the local nginx image, Pebble, certbot (webroot through nginx).

Every site's HTTP-01 challenge is answered by an nginx container serving the shared webroot
read-only: the container publishes its port 80 on the port where this module's Pebble validates.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from nginxbox import HTTP_SERVER, NginxBox, https_server, site_dirs
from servers import PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge import config
from tlsbridge.adapters.docker import DockerAdapter
from tlsbridge.certinfo import PLACEHOLDER_ORG, parse_pem
from tlsbridge.clock import SystemClock
from tlsbridge.delivery.containers import DockerDeliverer
from tlsbridge.delivery.verify import fingerprint
from tlsbridge.wiring import build_reconciler


@pytest.fixture(scope="module")
def acme() -> Iterator[PebbleServer]:
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


@pytest.fixture
def box(docker_engine: Any, nginx_image: str) -> Iterator[NginxBox]:
    b = NginxBox(docker_engine, nginx_image)
    try:
        yield b
    finally:
        b.close()


def webroot_env(tmp_path: Path, acme: PebbleServer, sites: dict[str, dict[str, Any]]) -> TbEnv:
    _, _, webroot = site_dirs(tmp_path)
    return TbEnv(tmp_path, acme, sites, challenge={"method": "webroot", "webroot": str(webroot)})


def test_bootstrap_from_an_exited_container_then_renewals_are_served(
        tmp_path: Path, acme: PebbleServer, box: NginxBox) -> None:
    conf, certs, webroot = site_dirs(tmp_path)
    (conf / "site.conf").write_text(HTTP_SERVER + https_server("boot", "boot.example.com"))
    nginx = box.nginx("boot", conf, certs, webroot, http_port=acme.http_01_port)
    box.wait_state(nginx, "exited")  # its ssl_certificate does not exist yet
    env = webroot_env(tmp_path, acme, {"boot": {"domains": ["boot.example.com"],
                                                 "reload": [{"container": nginx.name}]}})

    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    assert "published a self-signed placeholder" in first.stderr
    assert f"started container {nginx.name}" in first.stderr
    assert "verified" in first.stderr
    nginx.reload()
    assert nginx.status == "running"
    issued = env.published("boot")
    assert issued == env.lineage("boot") and not parse_pem(issued).placeholder
    assert box.serves(nginx, "boot.example.com", issued)
    assert b"GET /.well-known/acme-challenge/" in nginx.logs()  # HTTP-01 answered by this nginx
    assert not any(PLACEHOLDER_ORG.encode() in p.read_bytes()
                   for p in env.config_dir.rglob("*.pem"))  # never in certbot's tree
    assert env.status()["boot"]["state"] == "valid"

    # Nothing due: no CA, no file change, and the docker SDK is not even imported.
    before = env.snapshot()
    probe = ("import sys; from tlsbridge.cli import main; rc = main(['-c', sys.argv[1], 'renew']); "
             "print('docker' in sys.modules); sys.exit(rc)")
    quiet = subprocess.run([sys.executable, "-c", probe, str(env.config_path)], capture_output=True,
                           text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip().endswith("False")
    assert env.snapshot() == before

    hups = box.reloads(nginx)
    forced = env.run("renew", "--force")
    assert forced.returncode == 0, forced.stderr
    renewed = env.published("boot")
    assert parse_pem(renewed).serial != parse_pem(issued).serial
    assert box.serves(nginx, "boot.example.com", renewed)
    assert box.reloads(nginx) == hups + 1


def test_a_failed_config_test_is_not_reloaded_and_the_old_certificate_stays_served(
        tmp_path: Path, acme: PebbleServer, box: NginxBox) -> None:
    conf, certs, webroot = site_dirs(tmp_path)
    (conf / "site.conf").write_text(HTTP_SERVER + https_server("guard", "guard.example.com"))
    nginx = box.nginx("guard", conf, certs, webroot, http_port=acme.http_01_port)
    env = webroot_env(tmp_path, acme, {"guard": {"domains": ["guard.example.com"],
                                                  "reload": [{"container": nginx.name}]}})
    assert env.run("renew").returncode == 0
    old = env.published("guard")
    assert box.serves(nginx, "guard.example.com", old)

    (conf / "broken.conf").write_text("server { bogus_directive on; }\n")
    hups = box.reloads(nginx)
    r = env.run("renew", "--force")
    assert r.returncode == 1
    assert f"nginx's config test failed in container {nginx.name}" in r.stderr
    assert 'unknown directive "bogus_directive"' in r.stderr  # nginx's own output
    assert box.reloads(nginx) == hups
    new = env.published("guard")
    assert new != old and box.serves(nginx, "guard.example.com", old)
    assert env.status()["guard"]["state"] == "undelivered"  # published, not served

    # Level-triggered repair: once the config is fixed, a plain renew delivers what is published.
    (conf / "broken.conf").unlink()
    fixed = env.run("renew")
    assert fixed.returncode == 0, fixed.stderr
    assert "NotDelivered" in fixed.stdout
    assert box.serves(nginx, "guard.example.com", new)
    assert box.reloads(nginx) == hups + 1
    assert env.status()["guard"]["state"] == "valid"


class _VanishingAdapter(DockerAdapter):
    """Lists the containers, then removes one: it disappears between listing and reload."""

    def __init__(self, cfg: config.DockerConfig, victim: Any) -> None:
        super().__init__(cfg)
        self.victim = victim

    def exec(self, ref: str, argv: Sequence[str], name: str) -> tuple[int, str]:
        # removed after every listing (the pre-check before the CA lists too), before its nginx -t
        if self.victim is not None and ref == self.victim.id:
            self.victim.remove(force=True)
            self.victim = None
        return super().exec(ref, argv, name)


def test_a_target_that_disappears_mid_run_fails_only_its_site(
        tmp_path: Path, acme: PebbleServer, box: NginxBox, caplog: pytest.LogCaptureFixture) -> None:
    conf_a, certs, webroot = site_dirs(tmp_path)
    conf_b = tmp_path / "conf-b"
    conf_b.mkdir(mode=0o755)
    (conf_a / "a.conf").write_text(HTTP_SERVER + https_server("a", "a.example.com"))
    (conf_b / "b.conf").write_text(https_server("b", "b.example.com"))
    nginx_a = box.nginx("a", conf_a, certs, webroot, http_port=acme.http_01_port)
    nginx_b = box.nginx("b", conf_b, certs, webroot)
    box.wait_state(nginx_b, "exited")
    env = webroot_env(tmp_path, acme, {"a": {"domains": ["a.example.com"], "reload": [{"container": nginx_a.name}]},
                                       "b": {"domains": ["b.example.com"], "reload": [{"container": nginx_b.name}]}})
    cfg = config.load(env.write())
    deliverer = DockerDeliverer(cfg)
    build_reconciler(cfg, SystemClock(), deliverer=deliverer).run_pass()  # both issued and served
    assert box.serves(nginx_b, "b.example.com", env.published("b"))

    # The next pass publishes both renewals, then nginx_b vanishes before it is reloaded.
    deliverer = DockerDeliverer(cfg, _VanishingAdapter(cfg.docker, nginx_b))
    caplog.set_level(logging.INFO, logger="tlsbridge")
    outcomes = {o.site: o for o in build_reconciler(cfg, SystemClock(), deliverer=deliverer).run_pass(force=True)}
    assert outcomes["a"].ok, outcomes["a"].error
    assert box.serves(nginx_a, "a.example.com", env.published("a"))
    assert not outcomes["b"].ok and outcomes["b"].published
    assert outcomes["b"].error is not None and f"container {nginx_b.name} does not exist any more" in outcomes["b"].error
    assert outcomes["b"].reason == "Reload"


def test_label_targets_and_a_shared_container_reloaded_once_per_pass(
        tmp_path: Path, acme: PebbleServer, box: NginxBox) -> None:
    conf, certs, webroot = site_dirs(tmp_path)
    (conf / "sites.conf").write_text(HTTP_SERVER + https_server("one", "one.example.com")
                                     + https_server("two", "two.example.com"))
    role = f"{box.prefix}-front"
    nginx = box.nginx("shared", conf, certs, webroot, http_port=acme.http_01_port,
                      labels={"tbdeliver.role": role, "tlsbridge.site": "two, other"})
    box.wait_state(nginx, "exited")
    env = webroot_env(tmp_path, acme, {
        "one": {"domains": ["one.example.com"],
                "reload": [{"label": f"tbdeliver.role={role}"}, {"label": "tbdeliver.role=nothing-here"}]},
        "two": {"domains": ["two.example.com"]},  # found through its tlsbridge.site label
    })
    first = env.run("renew")
    assert first.returncode == 0, first.stderr
    assert "no container has the label tbdeliver.role=nothing-here" in first.stderr
    for site in ("one", "two"):
        assert box.serves(nginx, f"{site}.example.com", env.published(site))
    hups = box.reloads(nginx)

    again = env.run("renew", "--force")
    assert again.returncode == 0, again.stderr
    for site in ("one", "two"):
        assert box.serves(nginx, f"{site}.example.com", env.published(site))
    assert box.reloads(nginx) == hups + 1  # two sites renewed, one reload


def test_verification_fails_when_the_target_serves_something_else(
        tmp_path: Path, acme: PebbleServer, box: NginxBox) -> None:
    """nginx pointed at another certificate folder: reload works, the served leaf is not ours."""
    conf, certs, webroot = site_dirs(tmp_path)
    (conf / "site.conf").write_text(HTTP_SERVER + https_server("elsewhere", "wrong.example.com"))
    nginx = box.nginx("wrong", conf, certs, webroot, http_port=acme.http_01_port)
    env = webroot_env(tmp_path, acme, {
        "elsewhere": {"domains": ["elsewhere.example.com"]},
        "wrong": {"domains": ["wrong.example.com"], "reload": [{"container": nginx.name}]},
    })
    cfg = config.load(env.write())
    deliverer = DockerDeliverer(cfg, verify_timeout=2.0)  # the CLI waits VERIFY_TIMEOUT (10 s)
    outcomes = {o.site: o for o in build_reconciler(cfg, SystemClock(), deliverer=deliverer).run_pass()}
    assert outcomes["elsewhere"].ok and not outcomes["wrong"].ok and outcomes["wrong"].reason == "Verify"
    served = parse_pem(env.published("elsewhere"))
    error = outcomes["wrong"].error or ""
    assert error.startswith(f"site=wrong: container {nginx.name} (")
    assert f"serves serial {served.serial_hex} (names elsewhere.example.com, issuer CN=Pebble" in error
    assert "instead of the published certificate 2s after the reload (SNI wrong.example.com)" in error
    assert fingerprint(box.served(nginx, "wrong.example.com")) == served.fingerprint
