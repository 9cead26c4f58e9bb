"""Delivery to Docker Swarm services, for real: a single-node Swarm on the local engine, the
local nginx image as a service, Pebble, certbot, and `tlsbridge renew` as a subprocess.

The nginx service gets its certificates as Swarm secrets only (no host folder); its snippets
are the ones `tlsbridge compose --swarm` renders, as Swarm configs. Ports are published in host
mode (this kernel has no IPVS for the routing mesh), so updates are stop-first.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.types import ConfigReference, EndpointSpec, RestartPolicy, RollbackConfig, UpdateConfig
from servers import PebbleServer, free_port
from swarmkit import (
    config_refs,
    create_config,
    gateway_ip,
    remove_all,
    serves,
    service_secret_names,
    site_secrets,
    swarm_node,
    version,
    wait_converged,
)
from tbenv import TbEnv

from tlsbridge.adapters.statestore import StateStore
from tlsbridge.certinfo import parse_pem
from tlsbridge.config import Site
from tlsbridge.delivery.swarm_plan import FINGERPRINT_LABEL, STABLE_LABEL, secret_name
from tlsbridge.render.nginx import NginxOptions, render_all
from tlsbridge.targets import SITE_LABEL

SECOND = 1_000_000_000  # the engine counts durations in nanoseconds


@pytest.fixture(scope="module")
def swarm(docker_engine: Any) -> Iterator[str]:
    with swarm_node(docker_engine) as node:
        yield node


@pytest.fixture(scope="module")
def acme() -> Iterator[PebbleServer]:
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


class Made:
    """What a test creates in the engine, removed at the end."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.services: list[str] = []
        self.configs: list[str] = []
        self.sites: list[str] = []
        self.networks: list[str] = []

    def close(self) -> None:
        remove_all(self.client, self.services, self.configs, self.sites, self.networks)


@pytest.fixture
def made(docker_engine: Any, swarm: str) -> Iterator[Made]:
    m = Made(docker_engine)
    try:
        yield m
    finally:
        m.close()


def nginx_service(client: Any, made: Made, image: str, site: str, snippets: dict[str, str],
                  ports: dict[int, tuple[int, str, str]], restart: str = "any",
                  container_labels: dict[str, str] | None = None) -> Any:
    # No overlay network: it is not needed here, and detaching a task from one costs ~2 s
    # per update.
    name = f"{site}-nginx"
    refs = config_refs(client, snippets, f"{site}-conf", made.configs)
    svc = client.services.create(
        image, name=name, labels={SITE_LABEL: site}, configs=refs, container_labels=container_labels,
        endpoint_spec=EndpointSpec(ports=ports),
        update_config=UpdateConfig(parallelism=1, order="stop-first", failure_action="rollback",
                                   monitor=SECOND),
        rollback_config=RollbackConfig(parallelism=1, order="stop-first", monitor=SECOND),
        restart_policy=RestartPolicy(condition=restart, delay=5 * SECOND))
    made.services.append(name)
    made.sites.append(site)
    return svc


def versions(client: Any, site: str) -> dict[str, set[str]]:
    """fingerprint[:12] -> {"stable", "versioned"}: which kinds of secret pairs hold it."""
    out: dict[str, set[str]] = {}
    for labels in site_secrets(client, site).values():
        kind = "stable" if labels.get(STABLE_LABEL) == "true" else "versioned"
        out.setdefault(labels[FINGERPRINT_LABEL][:12], set()).add(kind)
    return out


def update_seconds(stderr: str) -> list[float]:
    return [float(x) for x in re.findall(r"Swarm service \S+ updated \((\d+\.\d) s\)", stderr)]


def test_a_labelled_service_is_bootstrapped_issued_renewed_and_pruned(
        tmp_path: Path, acme: PebbleServer, made: Made, docker_engine: Any, nginx_image: str) -> None:
    client = docker_engine
    site = f"sw{secrets.token_hex(3)}"
    domain = f"{site}.example.com"
    acme_port, https_port = free_port(), free_port()
    # HTTP-01 as the stack does it: nginx's port 80 passes /.well-known/acme-challenge/ on to
    # certbot's standalone server (here on the host, reached through the bridge network).
    snippets = render_all([Site(site, (domain,))], NginxOptions(
        source="test", secrets=True, acme_proxy=f"http://{gateway_ip(client)}:{acme_port}"))
    # The site label on the tasks' containers too: they must not become container targets
    # (no nginx -t / SIGHUP through one engine), their service is.
    nginx_service(client, made, nginx_image, site, snippets,
                  {acme.http_01_port: (80, "tcp", "host"), https_port: (443, "tcp", "host")},
                  container_labels={SITE_LABEL: site})
    name = f"{site}-nginx"
    env = TbEnv(tmp_path, acme, {site: {"domains": [domain]}},
                challenge={"method": "standalone", "http_port": acme_port})

    # 1. Bootstrap + issuance: the service cannot start without a certificate; tlsbridge gives
    #    it the placeholder (the stable pair), issues through it, then rolls it to the issued one.
    t0 = time.monotonic()
    first = env.run("renew")
    first_s = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    assert f"updating Swarm service {name}" in first.stderr
    assert "reloaded container" not in first.stderr and "started container" not in first.stderr
    issued = env.published(site)
    assert not parse_pem(issued).placeholder
    fp1 = parse_pem(issued).fingerprint
    assert serves("127.0.0.1", https_port, domain, issued)
    assert b"acme-challenge" in b"".join(client.api.service_logs(name, stdout=True, stderr=True))
    assert service_secret_names(client, name) == sorted(
        secret_name(site, f, fp1) for f in ("fullchain.pem", "privkey.pem"))
    # The stable pair (what a stack file names) now holds the issued certificate too; the
    # placeholder is gone from the engine.
    assert versions(client, site) == {fp1[:12]: {"stable", "versioned"}}

    # 2. Nothing due: no CA, no Docker call that changes anything.
    v = version(client, name)
    quiet = env.run("renew")
    assert quiet.returncode == 0, quiet.stderr
    assert version(client, name) == v and versions(client, site) == {fp1[:12]: {"stable", "versioned"}}

    # 3. Forced renewals roll the service onto new secrets; the previous version is kept while
    #    the service could roll back to it, older ones are pruned.
    timings = []
    fps = [fp1]
    for _ in range(2):
        t0 = time.monotonic()
        r = env.run("renew", "--force")
        timings.append(time.monotonic() - t0)
        assert r.returncode == 0, r.stderr
        assert "verified" in r.stderr
        pem = env.published(site)
        fps.append(parse_pem(pem).fingerprint)
        assert serves("127.0.0.1", https_port, domain, pem)
        timings += update_seconds(r.stderr)
    fp1, fp2, fp3 = fps
    assert versions(client, site) == {fp3[:12]: {"stable", "versioned"}, fp2[:12]: {"versioned"}}
    assert f"removed the Swarm secret {secret_name(site, 'fullchain.pem', fp1)}" in r.stderr

    # 4. Delivering again what is delivered changes nothing (a NotDelivered retry, say).
    v = version(client, name)
    store = StateStore(tmp_path / "state")
    state = store.load_all()[site]
    state.delivered = "0" * 64  # forget that it was verified as served
    store.save(site, state)
    again = env.run("renew")
    assert again.returncode == 0, again.stderr
    assert "already runs on this certificate" in again.stderr
    assert version(client, name) == v
    print(f"swarm: first renew (bootstrap + issue + deliver) {first_s:.1f} s; "
          f"forced renewals and their rolling updates (s): {[round(t, 1) for t in timings]}")


def test_a_new_version_swarm_rolls_back_fails_the_site_and_the_old_one_stays_served(
        tmp_path: Path, acme: PebbleServer, made: Made, docker_engine: Any, nginx_image: str) -> None:
    """A change that makes new tasks fail (here: a server block someone added that pairs the
    site's key with a pinned copy of the current certificate, so the next key breaks it) is
    rolled back by Swarm; the site fails naming the service and nginx's error."""
    client = docker_engine
    site = f"rb{secrets.token_hex(3)}"
    domain = f"{site}.example.com"
    https_port = free_port()
    snippets = render_all([Site(site, (domain,))], NginxOptions(source="test", secrets=True, acme_proxy=""))
    # No restarts: when Swarm restarts the failing task, the restart waits for the host port
    # (pending, on no node) and Swarm's rollback then waits a minute for it to stop (swarmkit's
    # old-task timeout); tlsbridge waits that out too, but the test need not.
    nginx_service(client, made, nginx_image, site, snippets, {https_port: (443, "tcp", "host")},
                  restart="none")
    name = f"{site}-nginx"
    env = TbEnv(tmp_path, acme, {site: {"domains": [domain]}})  # standalone on Pebble's port
    assert env.run("renew").returncode == 0
    old = env.published(site, "fullchain.pem")
    assert serves("127.0.0.1", https_port, domain, old)

    pin = create_config(client, f"{site}-pinned", old, made.configs)
    conf = create_config(client, f"{site}-pinned-conf", (
        f"server {{ listen 8443 ssl; ssl_certificate /etc/nginx/pinned.pem; "
        f"ssl_certificate_key /etc/tlsbridge/certs/{site}/privkey.pem; }}\n"), made.configs)
    svc = client.services.get(name)
    spec = client.api.inspect_service(name)["Spec"]
    current = [ConfigReference(c["ConfigID"], c["ConfigName"], c["File"]["Name"])
               for c in spec["TaskTemplate"]["ContainerSpec"]["Configs"]]
    svc.update(configs=[*current, ConfigReference(pin.id, pin.name, "/etc/nginx/pinned.pem"),
                        ConfigReference(conf.id, conf.name, "/etc/nginx/conf.d/pinned.conf")])
    assert wait_converged(client, name) == "completed"
    assert serves("127.0.0.1", https_port, domain, old)
    before = service_secret_names(client, name)

    t0 = time.monotonic()
    r = env.run("renew", "--force")
    assert r.returncode == 1
    assert f"Swarm service {name} rolled back the new certificate" in r.stderr, r.stderr
    assert "key values mismatch" in r.stderr  # nginx's own words, from the failed task's log
    print(f"swarm: failed update detected and rolled back in {time.monotonic() - t0:.1f} s "
          "(including the issuance)")
    assert service_secret_names(client, name) == before
    assert serves("127.0.0.1", https_port, domain, old)
    assert env.status()[site]["state"] == "undelivered"  # published, not served
    new = env.published(site, "fullchain.pem")
    assert new != old

    # Once the cause is gone, a plain pass delivers what is published (no new issuance).
    svc.reload()
    svc.update(configs=current)
    assert wait_converged(client, name) == "completed"
    fixed = env.run("renew")
    assert fixed.returncode == 0, fixed.stderr
    assert "NotDelivered" in fixed.stdout
    assert serves("127.0.0.1", https_port, domain, new)
