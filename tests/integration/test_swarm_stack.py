"""`tlsbridge compose --swarm` end to end: the generated stack file, deployed for real with
`docker stack deploy` on a single-node Swarm, with the sidecar image built from
deploy/Dockerfile (no registry), the local nginx image and Pebble.

What the stack must do by itself: nginx starts on the placeholder secrets made by
`--create-secrets`, the tlsbridge service issues through nginx (HTTP-01 passed on to certbot's
standalone server in the tlsbridge task, over the stack's overlay network), delivers the
certificate as new secrets through a rolling update and verifies it on each nginx task; then
deploying the unchanged stack file again (with Docker 20.10's CLI this time) keeps serving it.

Test-only glue, in an override file given to `docker stack deploy` next to the generated one:
the tlsbridge task reaches Pebble (which listens on the host's 127.0.0.1) through a forwarder on
the host's docker_gwbridge address, under a name Pebble's TLS certificate carries.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import servers
import yaml
from servers import PROJECT_ROOT, PebbleServer, free_port
from swarmkit import (
    Forwarder,
    gateway_ip,
    serves,
    service_secret_names,
    site_secrets,
    swarm_node,
    update_started,
    version,
    wait_converged,
)

from tlsbridge.adapters.tlsprobe import served_leaf
from tlsbridge.certinfo import PLACEHOLDER_ORG
from tlsbridge.delivery.swarm_plan import FINGERPRINT_LABEL, INSTANCE_LABEL, STABLE_LABEL, secret_name
from tlsbridge.delivery.verify import describe, fingerprint
from tlsbridge.render.stack import default_stack

TLSBRIDGE = str(Path(sys.executable).with_name("tlsbridge"))
SIDECAR_IMAGE = os.environ.get("TLSBRIDGE_SIDECAR_IMAGE", "tlsbridge-test/sidecar:latest")
BUILD_SIDECAR = PROJECT_ROOT / "scripts" / "build-sidecar-image.sh"
COMPOSE = PROJECT_ROOT / "tools" / "trixie" / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-compose"
PEBBLE_NAME = "pebble.test"


@pytest.fixture(scope="module")
def swarm(docker_engine: Any) -> Iterator[str]:
    with swarm_node(docker_engine) as node:
        yield node


@pytest.fixture(scope="module")
def sidecar_image(docker_engine: Any) -> str:
    proc = subprocess.run([str(BUILD_SIDECAR), SIDECAR_IMAGE], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return SIDECAR_IMAGE


@pytest.fixture(scope="module")
def acme() -> Iterator[PebbleServer]:
    # Pebble's TLS certificate also names PEBBLE_NAME, the name the tlsbridge task uses.
    tls = functools.partial(servers.make_tls_material, hostnames=("localhost", PEBBLE_NAME))
    with mock.patch.object(servers, "make_tls_material", tls), \
            PebbleServer(http_01_port=free_port()) as server:
        yield server


def pem_of(der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def sh(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_config(root: Path, acme: PebbleServer, pebble_port: int, site: str) -> Path:
    shutil.copy(acme.ca_bundle, root / "pebble-ca.pem")
    doc = {
        "acme": {"directory": f"https://{PEBBLE_NAME}:{pebble_port}/dir",
                 "email": "admin@example.com", "ca_bundle": "pebble-ca.pem"},
        "challenge": {"method": "standalone", "http_port": 8402},
        "sites": {site: {"domains": [f"{site}.example.com"]}},
    }
    path = root / "tlsbridge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def generate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sh(TLSBRIDGE, "-c", str(config), "compose", "--swarm", "--image", "tlsbridge-test/nginx:latest",
              "--sidecar-image", SIDECAR_IMAGE, *args)


def test_the_stack_file_passes_compose_and_the_stack_loader(tmp_path: Path, acme: PebbleServer) -> None:
    config = write_config(tmp_path, acme, 1, "valid")
    for mode in ("ingress", "host"):
        out = tmp_path / f"stack-{mode}.yml"
        r = generate(config, "--publish-mode", mode, "-o", str(out))
        assert r.returncode == 0, r.stderr
        checked = sh(str(COMPOSE), "-f", str(out), "config", "-q")
        assert checked.returncode == 0, checked.stderr
        loaded = sh("docker", "stack", "config", "-c", str(out))  # Docker CLI 28's stack loader
        assert loaded.returncode == 0, loaded.stderr
        doc = yaml.safe_load(loaded.stdout)
        nginx = doc["services"]["nginx"]
        assert nginx["deploy"]["labels"] == {"tlsbridge.site": "valid"}
        assert nginx["deploy"]["update_config"]["failure_action"] == "rollback"
        assert nginx["deploy"]["update_config"]["order"] == ("stop-first" if mode == "host" else "start-first")
        assert {s["target"]: s["mode"] for s in nginx["secrets"]} == {
            "/etc/tlsbridge/certs/valid/fullchain.pem": 0o444, "/etc/tlsbridge/certs/valid/privkey.pem": 0o400}
        assert doc["secrets"]["valid-fullchain"] == {  # named for the stack: the folder's name
            "name": secret_name("valid", "fullchain.pem", instance=default_stack(tmp_path.name)),
            "external": True}
        # nothing from a host folder reaches nginx: only tmpfs under its read-only root
        assert {v["type"] for v in nginx["volumes"]} == {"tmpfs"} and nginx["read_only"] is True
        assert nginx["cap_drop"] == ["ALL"]
        tb = doc["services"]["tlsbridge"]
        assert tb["labels"] == {"tlsbridge.stack": default_stack(tmp_path.name)}
        assert tb["deploy"]["endpoint_mode"] == "dnsrr" and tb["deploy"]["replicas"] == 1
        assert {c["target"] for c in tb["configs"]} == {"/etc/tlsbridge/tlsbridge.yaml",
                                                        "/etc/tlsbridge/pebble-ca.pem"}


def test_docker_stack_deploy_of_the_generated_file_issues_delivers_and_survives_a_redeploy(
        tmp_path: Path, acme: PebbleServer, swarm: str, docker_engine: Any, sidecar_image: str) -> None:
    client = docker_engine
    site = f"st{secrets.token_hex(3)}"
    domain = f"{site}.example.com"
    stack = f"tbstack{secrets.token_hex(3)}"
    https_port = free_port()
    env = {"TLSBRIDGE_HTTP_PORT": str(acme.http_01_port), "TLSBRIDGE_HTTPS_PORT": str(https_port)}
    gateway = gateway_ip(client, "docker_gwbridge")  # the host, as Swarm tasks see it
    forwarder = Forwarder(gateway, ("127.0.0.1", acme.acme_port))
    node = client.nodes.get(swarm)
    add_label = node.attrs["Spec"].get("Labels", {}).get("tlsbridge") != "true"
    try:
        if add_label:
            sh("docker", "node", "update", "--label-add", "tlsbridge=true", swarm)
        config = write_config(tmp_path, acme, forwarder.port, site)
        stack_file = tmp_path / "stack.yml"
        r = generate(config, "--publish-mode", "host", "--create-secrets", "--stack", stack,
                     "-o", str(stack_file))
        assert r.returncode == 0, r.stderr
        assert f"site={site} created placeholder secrets" in r.stderr
        override = tmp_path / "test-override.yml"
        override.write_text(yaml.safe_dump({"version": "3.8", "services": {"tlsbridge": {
            "extra_hosts": [f"{PEBBLE_NAME}:{gateway}"]}}}))

        t_deploy = time.monotonic()
        deploy = sh("docker", "stack", "deploy", "--detach=true", "--resolve-image", "never",
                    "-c", str(stack_file), "-c", str(override), stack, env=env)
        assert deploy.returncode == 0, deploy.stderr
        nginx = f"{stack}_nginx"

        # nginx starts on the placeholder; wait for tlsbridge's issued certificate.
        deadline = time.monotonic() + 120
        issued: bytes | None = None
        while issued is None:
            try:
                der = served_leaf("127.0.0.1", https_port, domain, timeout=2)
                if PLACEHOLDER_ORG not in describe(der):
                    issued = der
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = sh("docker", "service", "logs", "--tail", "40", f"{stack}_tlsbridge").stdout
                pytest.fail(f"no issued certificate served within 120 s; tlsbridge logs:\n{logs}")
            time.sleep(0.5)
        t_served = time.monotonic() - t_deploy
        print(f"swarm stack: deploy -> issued certificate served in {t_served:.1f} s")
        fp = fingerprint(issued)
        assert wait_converged(client, nginx) == "completed"
        assert service_secret_names(client, nginx) == sorted(
            secret_name(site, f, fp, stack) for f in ("fullchain.pem", "privkey.pem"))
        # After verifying, tlsbridge re-creates the stable pair (what the stack file names) with
        # the issued certificate.
        deadline = time.monotonic() + 20
        while {labels[FINGERPRINT_LABEL] for labels in site_secrets(client, site).values()
               if labels.get(STABLE_LABEL) == "true"} != {fp}:
            assert time.monotonic() < deadline, site_secrets(client, site)
            time.sleep(0.2)
        deadline = time.monotonic() + 10  # (service logs arrive asynchronously)
        while "verified: task " not in sh("docker", "service", "logs", f"{stack}_tlsbridge").stdout:
            assert time.monotonic() < deadline, "tlsbridge did not probe the nginx task directly"
            time.sleep(0.5)

        # The same stack file again (Docker 20.10's CLI): nginx moves onto the stable pair,
        # which holds the same certificate, and keeps serving it.
        t0 = time.monotonic()
        before = update_started(client, nginx)
        again = sh("/usr/bin/docker", "stack", "deploy", "--resolve-image", "never",
                   "-c", str(stack_file), "-c", str(override), stack, env=env)
        assert again.returncode == 0, again.stderr
        assert wait_converged(client, nginx, after=before) == "completed"
        assert service_secret_names(client, nginx) == sorted(
            secret_name(site, f, instance=stack) for f in ("fullchain.pem", "privkey.pem"))
        assert serves("127.0.0.1", https_port, domain, pem_of(issued))
        print(f"swarm stack: redeploy converged in {time.monotonic() - t0:.1f} s")
        if os.environ.get("TB_DEBUG"):  # the services' own words, for a human looking at timings
            print(sh("docker", "service", "logs", "-t", f"{stack}_tlsbridge").stdout[-6000:])
            print(sh("docker", "service", "logs", "-t", nginx).stderr[-3000:])
    finally:
        forwarder.close()
        sh("docker", "stack", "rm", stack)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.containers.list(
                all=True, filters={"label": f"com.docker.stack.namespace={stack}"}):
            time.sleep(0.5)
        for s in client.secrets.list(filters={"label": f"tlsbridge.site={site}"}):
            s.remove()
        for v in client.volumes.list(filters={"label": f"com.docker.stack.namespace={stack}"}):
            v.remove(force=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.networks.list(names=[f"{stack}_default"]):
            time.sleep(0.5)
        if add_label:
            sh("docker", "node", "update", "--label-rm", "tlsbridge", swarm)


def wait_issued(port: int, domain: str, stack: str, timeout: float = 150) -> bytes:
    """The leaf nginx serves on `port` once it is an issued certificate (not the placeholder)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            der = served_leaf("127.0.0.1", port, domain, timeout=2)
            if PLACEHOLDER_ORG not in describe(der):
                return der
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = sh("docker", "service", "logs", "--tail", "40", f"{stack}_tlsbridge").stdout
            pytest.fail(f"{stack}: no issued certificate served within {timeout:.0f} s; logs:\n{logs}")
        time.sleep(0.5)


def stable_fingerprints(client: Any, site: str, stack: str) -> set[str]:
    return {labels[FINGERPRINT_LABEL] for labels in site_secrets(client, site).values()
            if labels.get(STABLE_LABEL) == "true" and labels.get(INSTANCE_LABEL) == stack}


def wait_stable(client: Any, site: str, stack: str, fp: str) -> None:
    """tlsbridge re-creates the stack's stable pair with the delivered certificate."""
    deadline = time.monotonic() + 20
    while stable_fingerprints(client, site, stack) != {fp}:
        assert time.monotonic() < deadline, site_secrets(client, site)
        time.sleep(0.2)


def test_two_generated_stacks_with_the_same_site_name_keep_to_their_own_secrets(
        tmp_path: Path, acme: PebbleServer, swarm: str, docker_engine: Any, sidecar_image: str) -> None:
    """Issue 10, Swarm: two stacks from `compose --swarm` on one engine, both with site `shop`
    (here a random name) for the same domain, each with its own CA: each issues, delivers into
    secrets named for its stack, serves its own certificate, and renews without touching the
    other (no update of the other's nginx, the other's stable pair unchanged)."""
    client = docker_engine
    site = f"sh{secrets.token_hex(3)}"
    domain = f"{site}.example.com"
    tag = secrets.token_hex(3)
    # A names its stack with --stack; B takes the default, its folder's name.
    names = {"a": f"tbsa{tag}", "b": f"tbsb{tag}"}
    gateway = gateway_ip(client, "docker_gwbridge")
    node = client.nodes.get(swarm)
    add_label = node.attrs["Spec"].get("Labels", {}).get("tlsbridge") != "true"
    tls = functools.partial(servers.make_tls_material, hostnames=("localhost", PEBBLE_NAME))
    with contextlib.ExitStack() as stack_of:
        with mock.patch.object(servers, "make_tls_material", tls):
            pebble_b = stack_of.enter_context(PebbleServer(http_01_port=free_port()))
        cas = {"a": acme, "b": pebble_b}
        forwarders = {k: Forwarder(gateway, ("127.0.0.1", ca.acme_port)) for k, ca in cas.items()}
        for f in forwarders.values():
            stack_of.callback(f.close)
        https = {k: free_port() for k in cas}
        envs = {k: {"TLSBRIDGE_HTTP_PORT": str(cas[k].http_01_port), "TLSBRIDGE_HTTPS_PORT": str(https[k])}
                for k in cas}
        try:
            if add_label:
                sh("docker", "node", "update", "--label-add", "tlsbridge=true", swarm)
            for k, name in names.items():
                root = tmp_path / name
                root.mkdir()
                config = write_config(root, cas[k], forwarders[k].port, site)
                extra = ("--stack", name) if k == "a" else ()
                r = generate(config, "--publish-mode", "host", "--create-secrets", *extra,
                             "-o", str(root / "stack.yml"))
                assert r.returncode == 0, r.stderr
                assert f"site={site} created placeholder secrets" in r.stderr  # not "exist already"
                override = root / "test-override.yml"
                override.write_text(yaml.safe_dump({"version": "3.8", "services": {"tlsbridge": {
                    "extra_hosts": [f"{PEBBLE_NAME}:{gateway}"]}}}))
                deploy = sh("docker", "stack", "deploy", "--detach=true", "--resolve-image", "never",
                            "-c", str(root / "stack.yml"), "-c", str(override), name, env=envs[k])
                assert deploy.returncode == 0, deploy.stderr
            assert stable_fingerprints(client, site, names["a"]) and stable_fingerprints(client, site, names["b"])

            issued = {k: wait_issued(https[k], domain, names[k]) for k in names}
            fps = {k: fingerprint(der) for k, der in issued.items()}
            assert fps["a"] != fps["b"]
            for k, name in names.items():
                assert wait_converged(client, f"{name}_nginx") == "completed"
                assert service_secret_names(client, f"{name}_nginx") == sorted(
                    secret_name(site, f, fps[k], name) for f in ("fullchain.pem", "privkey.pem"))
                wait_stable(client, site, name, fps[k])

            # Each renews on its own: the other's nginx is not updated and keeps its certificate.
            for k, other in (("a", "b"), ("b", "a")):
                name = names[k]
                others = version(client, f"{names[other]}_nginx")
                other_secrets = {n: v for n, v in site_secrets(client, site).items()
                                 if v.get(INSTANCE_LABEL) == names[other]}
                task = client.containers.list(
                    filters={"label": f"com.docker.swarm.service.name={name}_tlsbridge"})[0]
                code, out = task.exec_run(["tlsbridge", "-c", "/etc/tlsbridge/tlsbridge.yaml", "renew", "--force"])
                assert code == 0, out.decode()
                der = served_leaf("127.0.0.1", https[k], domain, timeout=2)
                assert fingerprint(der) not in (fps[k], fps[other]), "the renewal is served"
                fps[k] = fingerprint(der)
                assert serves("127.0.0.1", https[k], domain, pem_of(der))
                assert serves("127.0.0.1", https[other], domain, pem_of(issued[other]))
                issued[k] = der
                assert version(client, f"{names[other]}_nginx") == others
                wait_stable(client, site, name, fps[k])
                assert {n: v for n, v in site_secrets(client, site).items()
                        if v.get(INSTANCE_LABEL) == names[other]} == other_secrets
                print(f"swarm stacks: {name} renewed alone")
            # Every secret of the site belongs to one of the two stacks, named for it.
            for n, labels in site_secrets(client, site).items():
                assert n.startswith(f"{labels[INSTANCE_LABEL]}_tlsbridge-{site}-"), n
        finally:
            for name in names.values():
                sh("docker", "stack", "rm", name)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(client.api.containers(
                    all=True, filters={"label": f"com.docker.stack.namespace={n}"}) for n in names.values()):
                time.sleep(0.5)
            for s in client.secrets.list(filters={"label": f"tlsbridge.site={site}"}):
                s.remove()
            for n in names.values():
                for v in client.volumes.list(filters={"label": f"com.docker.stack.namespace={n}"}):
                    v.remove(force=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                    client.networks.list(names=[f"{n}_default"]) for n in names.values()):
                time.sleep(0.5)
            if add_label:
                sh("docker", "node", "update", "--label-rm", "tlsbridge", swarm)
    # nothing left behind
    for n in names.values():
        assert not client.services.list(filters={"label": f"com.docker.stack.namespace={n}"})
        assert not client.configs.list(filters={"label": f"com.docker.stack.namespace={n}"})
        assert not client.volumes.list(filters={"label": f"com.docker.stack.namespace={n}"})
    assert not client.secrets.list(filters={"label": f"tlsbridge.site={site}"})


def test_a_stack_from_before_stack_names_moves_onto_its_own_secrets_without_a_placeholder(
        tmp_path: Path, acme: PebbleServer, swarm: str, docker_engine: Any, sidecar_image: str) -> None:
    """docs/swarm.md "Upgrading a stack generated before stack names": a running stack whose file
    names the unnamed secrets (tlsbridge-<site>-...) and has no tlsbridge.stack label; its new
    secrets are created inside its tlsbridge task from the published certificate, then the
    regenerated file is deployed: nginx serves the same certificate throughout, never a
    placeholder, and later renewals go into the stack's own secrets."""
    from tlsbridge import config as config_mod
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.clock import SystemClock
    from tlsbridge.delivery.swarm_rollout import create_placeholder_pairs

    client = docker_engine
    site = f"up{secrets.token_hex(3)}"
    domain = f"{site}.example.com"
    name = f"tbup{secrets.token_hex(3)}"
    https_port = free_port()
    env = {"TLSBRIDGE_HTTP_PORT": str(acme.http_01_port), "TLSBRIDGE_HTTPS_PORT": str(https_port)}
    gateway = gateway_ip(client, "docker_gwbridge")
    forwarder = Forwarder(gateway, ("127.0.0.1", acme.acme_port))
    node = client.nodes.get(swarm)
    add_label = node.attrs["Spec"].get("Labels", {}).get("tlsbridge") != "true"
    nginx = f"{name}_nginx"
    files = ("fullchain.pem", "privkey.pem")
    try:
        if add_label:
            sh("docker", "node", "update", "--label-add", "tlsbridge=true", swarm)
        config = write_config(tmp_path, acme, forwarder.port, site)
        override = tmp_path / "test-override.yml"
        override.write_text(yaml.safe_dump({"version": "3.8", "services": {"tlsbridge": {
            "extra_hosts": [f"{PEBBLE_NAME}:{gateway}"]}}}))
        # The file an earlier tlsbridge wrote: unnamed secrets, no tlsbridge.stack label.
        old_file = tmp_path / "old-stack.yml"
        assert generate(config, "--publish-mode", "host", "--stack", name, "-o", str(old_file)).returncode == 0
        doc = yaml.safe_load(old_file.read_text())
        del doc["services"]["tlsbridge"]["labels"]
        for f in files:
            doc["secrets"][f"{site}-{f.removesuffix('.pem')}"]["name"] = secret_name(site, f)
        old_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg = config_mod.load(config)
        docker = DockerAdapter(cfg.docker)
        try:
            assert create_placeholder_pairs(cfg, docker, SystemClock().now()) == [site]
        finally:
            docker.close()
        deploy = sh("docker", "stack", "deploy", "--detach=true", "--resolve-image", "never",
                    "-c", str(old_file), "-c", str(override), name, env=env)
        assert deploy.returncode == 0, deploy.stderr
        issued = wait_issued(https_port, domain, name)
        fp = fingerprint(issued)
        deadline = time.monotonic() + 20
        while {labels[FINGERPRINT_LABEL] for labels in site_secrets(client, site).values()
               if labels.get(STABLE_LABEL) == "true"} != {fp}:
            assert time.monotonic() < deadline, site_secrets(client, site)
            time.sleep(0.2)
        assert all(INSTANCE_LABEL not in labels for labels in site_secrets(client, site).values())

        # From the host nothing is published for this site: refused, no placeholder created.
        new_file = tmp_path / "stack.yml"
        refused = generate(config, "--publish-mode", "host", "--stack", name, "--create-secrets",
                           "-o", str(new_file))
        assert refused.returncode == 1 and "before stacks named their secrets" in refused.stderr, refused.stderr
        assert not stable_fingerprints(client, site, name)
        # Inside the tlsbridge task: the new pair holds the published certificate.
        task = client.containers.list(filters={"label": f"com.docker.swarm.service.name={name}_tlsbridge"})[0]
        code, out = task.exec_run(["tlsbridge", "-c", "/etc/tlsbridge/tlsbridge.yaml", "compose", "--swarm",
                                   "--stack", name, "--create-secrets", "-o", "/tmp/stack.yml"])
        assert code == 0 and f"site={site} created its secrets from the published certificate" in out.decode(), \
            out.decode()
        assert stable_fingerprints(client, site, name) == {fp}

        before = update_started(client, nginx)
        again = sh("docker", "stack", "deploy", "--detach=true", "--resolve-image", "never",
                   "-c", str(new_file), "-c", str(override), name, env=env)
        assert again.returncode == 0, again.stderr
        assert wait_converged(client, nginx, after=before) == "completed"
        assert service_secret_names(client, nginx) == sorted(secret_name(site, f, instance=name) for f in files)
        assert serves("127.0.0.1", https_port, domain, pem_of(issued))

        # The new tlsbridge task (labelled now) renews into the stack's own secrets.
        deadline = time.monotonic() + 60
        while True:
            tasks = client.containers.list(filters={"label": f"com.docker.swarm.service.name={name}_tlsbridge"})
            if tasks and tasks[0].labels.get(INSTANCE_LABEL) == name and tasks[0].status == "running":
                break
            assert time.monotonic() < deadline, "the tlsbridge task was not replaced"
            time.sleep(0.5)
        # The replaced task gets its DNS name once healthy, and nginx's resolver may keep the old
        # task's address for up to 10 s (valid=10s): until then the CA's request gets a 502.
        deadline = time.monotonic() + 90
        while True:
            code, out = tasks[0].exec_run(["tlsbridge", "-c", "/etc/tlsbridge/tlsbridge.yaml", "renew", "--force"])
            if code == 0:
                break
            assert time.monotonic() < deadline and b"ValidationFailed" in out, out.decode()
            time.sleep(3)
        renewed = fingerprint(served_leaf("127.0.0.1", https_port, domain, timeout=2))
        assert renewed != fp
        assert service_secret_names(client, nginx) == sorted(secret_name(site, f, renewed, name) for f in files)
        wait_stable(client, site, name, renewed)
        unnamed = {n: v for n, v in site_secrets(client, site).items() if INSTANCE_LABEL not in v}
        assert sorted(unnamed) == sorted(  # left alone: the old stable and version pairs
            secret_name(site, f, v) for f in files for v in (None, fp))
    finally:
        forwarder.close()
        sh("docker", "stack", "rm", name)
        deadline = time.monotonic() + 60  # (the low-level list: no inspect of vanishing containers)
        while time.monotonic() < deadline and client.api.containers(
                all=True, filters={"label": f"com.docker.stack.namespace={name}"}):
            time.sleep(0.5)
        for s in client.secrets.list(filters={"label": f"tlsbridge.site={site}"}):
            s.remove()
        for v in client.volumes.list(filters={"label": f"com.docker.stack.namespace={name}"}):
            v.remove(force=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.networks.list(names=[f"{name}_default"]):
            time.sleep(0.5)
        if add_label:
            sh("docker", "node", "update", "--label-rm", "tlsbridge", swarm)
    assert not client.secrets.list(filters={"label": f"tlsbridge.site={site}"})
    assert not client.configs.list(filters={"label": f"com.docker.stack.namespace={name}"})
