"""The sidecar image from deploy/Dockerfile, built without any registry (a local Debian 12
Python base, wheels prepared on the host): it runs `tlsbridge run` against Pebble as a non-root
user, becomes healthy through its own HEALTHCHECK, issues, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runkit import wait_for
from servers import PROJECT_ROOT, PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.certinfo import parse_pem
from tlsbridge.render.compose import sidecar_tmpfs

IMAGE = os.environ.get("TLSBRIDGE_SIDECAR_IMAGE", "tlsbridge-test/sidecar:latest")
BUILD = PROJECT_ROOT / "scripts" / "build-sidecar-image.sh"
UID = 10001


@pytest.fixture(scope="module")
def sidecar_image(docker_engine: Any) -> str:
    t0 = time.monotonic()
    proc = subprocess.run([str(BUILD), IMAGE], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"{proc.stdout.strip()}\n(build script: {time.monotonic() - t0:.1f} s)")
    return IMAGE


@pytest.fixture
def pebble() -> Iterator[PebbleServer]:
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


def _health(container: Any) -> str:
    container.reload()
    return str(((container.attrs.get("State") or {}).get("Health") or {}).get("Status", ""))


def test_the_sidecar_image_becomes_healthy_issues_and_stops(
        tmp_path: Path, docker_engine: Any, sidecar_image: str, pebble: PebbleServer) -> None:
    image = docker_engine.images.get(sidecar_image)
    assert image.attrs["Config"]["User"] == f"{UID}:{UID}"
    assert image.attrs["Config"]["Entrypoint"] == ["tlsbridge"] and image.attrs["Config"]["Cmd"] == ["run"]
    assert "/healthz" in " ".join(image.attrs["Config"]["Healthcheck"]["Test"])

    # One folder, mounted at the same path, so the config's paths hold inside and outside.
    root = tmp_path / "sidecar"
    root.mkdir()
    shutil.copy(pebble.ca_bundle, root / "pebble-ca.pem")
    box = f"tbrun-box-{secrets.token_hex(2)}"
    env = TbEnv(root, pebble, {box: {"domains": ["box.example.com", "www.box.example.com"]}},
                acme={"ca_bundle": str(root / "pebble-ca.pem")})
    env.write()
    os.chown(root, UID, UID)  # the image's user writes certbot's tree, the state and the certs here
    port = free_port()
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    t0 = time.monotonic()
    container = docker_engine.containers.run(
        sidecar_image, ["-c", str(env.config_path), "run"], detach=True,
        name=f"tbrun-image-{secrets.token_hex(3)}", network_mode="host",  # Pebble is on 127.0.0.1
        environment={"TLSBRIDGE_LISTEN": f"127.0.0.1:{port}", "TLSBRIDGE_LOG_FORMAT": "json"},
        volumes={str(root): {"bind": str(root), "mode": "rw"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(socket_gid)],  # the socket's group: the documented way to run non-root
        # hardened as the generated compose service: nothing writable but the mounted folder
        # and the tmpfs the compose file gives it, no capabilities, no privilege gain
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        # certbot's work_dir and logs_dir on tmpfs owned by the image's user, as in compose
        tmpfs=dict(t.split(":", 1) for t in sidecar_tmpfs((str(root / "work"), str(root / "logs")))),
        # the image's own test, checked every 0.5 s instead of every 30 s
        healthcheck={"interval": 500_000_000, "timeout": 4_000_000_000, "retries": 3})
    try:
        wait_for("the container to be healthy", lambda: _health(container) == "healthy", 60,
                 on_timeout=lambda: container.logs().decode(errors="replace")[-3000:])
        print(f"docker run to healthy: {time.monotonic() - t0:.2f} s")

        def ready() -> bool:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the first pass", ready, 120, on_timeout=lambda: container.logs().decode()[-3000:])
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True and host_config["CapDrop"] == ["ALL"]
        assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
        cert = parse_pem(env.published(box))
        assert cert.domains == ("box.example.com", "www.box.example.com") and not cert.placeholder
        key = env.publish_dir / box / "privkey.pem"
        assert key.stat().st_uid == UID and oct(key.stat().st_mode & 0o777) == "0o600"
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert f'tlsbridge_issuances_total{{site="{box}"}} 1.0' in metrics
        assert "tlsbridge_docker_events_connected 1.0" in metrics  # the socket works as non-root

        t1 = time.monotonic()
        container.stop(timeout=10)
        took = time.monotonic() - t1
        result = container.wait(timeout=10)
        print(f"docker stop: {took:.2f} s, exit code {result['StatusCode']}")
        assert result["StatusCode"] == 0 and took < 10
        lines = [json.loads(line) for line in container.logs(stderr=False).decode().splitlines()]
        assert lines[-1]["msg"] == "run: stopped"
        assert any("first pass done" in rec["msg"] for rec in lines)
    finally:
        container.remove(force=True)
