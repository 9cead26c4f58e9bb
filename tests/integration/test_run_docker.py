"""`tlsbridge run` and the Docker engine: container starts are verified within seconds, and a
lost engine connection is retried and logged once. The engine is reached through a TCP proxy
(docker.host: tcp://...) so the test can cut it without touching dockerd."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nginxbox import NginxBox, https_server, site_dirs
from runkit import Daemon, TcpProxy, wait_for
from servers import PebbleServer, free_port, make_tls_material
from tbenv import TbEnv

from tlsbridge.certinfo import parse_pem

SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def ca() -> Iterator[PebbleServer]:
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


@pytest.fixture
def box(docker_engine: Any, nginx_image: str) -> Iterator[NginxBox]:
    b = NginxBox(docker_engine, nginx_image)
    try:
        yield b
    finally:
        b.close()


def test_started_containers_are_verified_across_a_docker_outage(
        tmp_path: Path, ca: PebbleServer, box: NginxBox) -> None:
    conf, certs, webroot = site_dirs(tmp_path)  # certs is TbEnv's publish dir
    web = f"tbrun-web-{secrets.token_hex(2)}"  # containers labelled with it are this test's only
    (conf / "web.conf").write_text(https_server(web, "web.example.com"))
    engine = TcpProxy(SOCKET).up()
    env = TbEnv(tmp_path, ca, {web: {"domains": ["web.example.com"]}},
                extra={"docker": {"host": f"tcp://127.0.0.1:{engine.port}"}})
    try:
        with Daemon(env) as d:
            d.wait_ready(120)
            published = env.published(web, "fullchain.pem")
            assert not parse_pem(published).placeholder
            wait_for("the event stream", lambda: d.metric("tlsbridge_docker_events_connected") == 1, 10)

            # the engine goes away: logged once, retried with backoff, the status says so
            engine.down()
            wait_for("the lost stream", lambda: d.metric("tlsbridge_docker_events_connected") == 0, 10,
                     on_timeout=d.tail)
            time.sleep(2)  # several reconnection attempts
            assert len(d.logged("lost the Docker event stream")) == 1
            assert b'"docker_events": "reconnecting"' in d.get("/healthz")[1]
            assert d.get("/healthz")[0] == 200

            # a target starts while the engine is unreachable for tlsbridge...
            web1 = box.nginx("web1", conf, certs, webroot, labels={"tlsbridge.site": web})
            box.wait_state(web1, "running")
            # ...and is verified once the engine is back (the missed event is replayed)
            engine.up()
            wait_for("reconnection", lambda: d.logged("Docker event stream reconnected"), 30,
                     on_timeout=d.tail)
            verified = f"verified: container {web1.name} ("  # ... serves the published certificate
            wait_for("web1 verified", lambda: d.logged(verified), 15, on_timeout=d.tail)
            assert box.serves(web1, "web.example.com", env.published(web))

            # a new name for the site (SIGHUP): re-issued, published, web1 reloaded and verified
            env.sites[web]["domains"].append("www.web.example.com")
            env.write()
            d.send(signal.SIGHUP)
            wait_for("the re-issue", lambda: d.metric(f'tlsbridge_issuances_total{{site="{web}"}}') == 2, 60,
                     on_timeout=d.tail)
            assert parse_pem(env.published(web)).domains == ("web.example.com", "www.web.example.com")
            assert d.metric(f'tlsbridge_reloads_total{{site="{web}"}}') == 1
            assert box.serves(web1, "web.example.com", env.published(web))

            # a target that serves something else when it starts: reloaded, then reported
            stale = tmp_path / "stale"
            ca_pem, cert_pem, key_pem = make_tls_material(stale / "tls", hostnames=("web.example.com",),
                                                          ips=())
            (stale / "certs" / web).mkdir(parents=True)
            (stale / "certs" / web / "fullchain.pem").write_bytes(cert_pem.read_bytes())
            (stale / "certs" / web / "privkey.pem").write_bytes(key_pem.read_bytes())
            for p in (stale, stale / "certs", stale / "certs" / web):
                p.chmod(0o755)
            (stale / "certs" / web / "privkey.pem").chmod(0o644)
            t0 = time.monotonic()
            # (it mounts this tlsbridge's folder too, elsewhere: ours, see delivery.scope)
            odd = box.nginx("odd", conf, stale / "certs", webroot, labels={"tlsbridge.site": web},
                            extra={str(certs): "/srv/tlsbridge-certs"})
            wait_for("the mismatch", lambda: d.metric(f'tlsbridge_verification_failures_total{{site="{web}"}}'),
                     30, on_timeout=d.tail)
            print(f"mismatch found {time.monotonic() - t0:.2f} s after `docker run`")
            assert [r for r in d.logged(f"container {odd.name} (")
                    if "instead of the published certificate" in r["msg"]]
            wait_for("the reload attempt", lambda: d.logged("reload after a container start failed"), 30,
                     on_timeout=d.tail)
            assert (d.metric(f'tlsbridge_reloads_total{{site="{web}"}}') or 0) >= 2
            assert NginxBox.reloads(odd) >= 1  # it was really reloaded (SIGHUP in nginx's log)
            assert box.serves(web1, "web.example.com", env.published(web))  # unaffected
            rc, took = d.stop()
            assert rc == 0 and took < 10
    finally:
        engine.down()
