"""The compose path a new user takes, for real: the sidecar image (deploy/Dockerfile, built
without a registry) generates its own stack into a mounted folder, owned by the folder's owner
through `--user`; the user's app goes into the compose.override.yaml starter, which Compose v2
merges by itself and tlsbridge never rewrites; `docker compose up` of that folder gets a Pebble
certificate through the sidecar and serves the app over HTTPS through the generated nginx.

Test-only glue, in the override next to the user's app: the tlsbridge container reaches Pebble
(on the host's 127.0.0.1) through a forwarder on docker0's address, under a name Pebble's TLS
certificate carries.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import ssl
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
from composekit import TLSBRIDGE, compose_cmd, http_get, served_cert
from servers import PROJECT_ROOT, PebbleServer, free_port
from swarmkit import Forwarder, gateway_ip

IMAGE = os.environ.get("TLSBRIDGE_SIDECAR_IMAGE", "tlsbridge-test/sidecar:latest")
BUILD = PROJECT_ROOT / "scripts" / "build-sidecar-image.sh"
PEBBLE_NAME = "pebble.test"
OWNER = 23456  # the folder's owner on the host: not root, not the image's user

APP_CONF = """server {
    listen 8080;
    location / {
        default_type text/plain;
        return 200 "the app: uri=$request_uri proto=$http_x_forwarded_proto\\n";
    }
}
"""


def sh(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 180) -> subprocess.CompletedProcess[str]:
    gid = str(os.stat("/var/run/docker.sock").st_gid)  # as a user's shell sets DOCKER_GID
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"DOCKER_GID": gid, **os.environ, **(env or {})})


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def in_image(folder: Path, *args: str, user: str | None = f"{OWNER}:{OWNER}") -> subprocess.CompletedProcess[str]:
    """The README's command: the image generating a stack into the mounted folder."""
    return sh(["docker", "run", "--rm", *(["--user", user] if user else []), "-v", f"{folder}:/w",
               "-w", "/w", "--network", "none", IMAGE, *args])


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_uid, p.stat().st_gid)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def sidecar_image(docker_engine: Any) -> str:
    proc = subprocess.run([str(BUILD), IMAGE], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return IMAGE


@pytest.fixture(scope="module")
def acme() -> Iterator[PebbleServer]:
    # Pebble's TLS certificate also names PEBBLE_NAME, the name the tlsbridge container uses.
    tls = functools.partial(servers.make_tls_material, hostnames=("localhost", PEBBLE_NAME))
    with mock.patch.object(servers, "make_tls_material", tls), \
            PebbleServer(http_01_port=free_port()) as server:
        yield server


def users_folder(root: Path) -> Path:
    root.chmod(0o755)  # the sidecar (uid 10001) reads the config through the folder's mount
    os.chown(root, OWNER, OWNER)
    return root


def test_the_starter_override_is_merged_by_compose_as_written(tmp_path: Path) -> None:
    """Host mode, installed tlsbridge: the starter as written is valid and changes nothing."""
    (tmp_path / "tlsbridge.yaml").write_text(
        "publish: {dir: ./certs}\nchallenge: {webroot: ./webroot}\n"
        "sites: {a: {domains: [a.example.com]}}\n")
    ok(sh([TLSBRIDGE, "-c", "tlsbridge.yaml", "compose", "-o", "compose.yaml"], cwd=tmp_path))
    assert (tmp_path / "compose.override.yaml").is_file()
    merged = yaml.safe_load(ok(sh([*compose_cmd(), "-p", "tbonbstarter", "config"], cwd=tmp_path)).stdout)
    alone = yaml.safe_load(ok(sh([*compose_cmd(), "-p", "tbonbstarter", "-f", "compose.yaml", "config"],
                                 cwd=tmp_path)).stdout)
    assert merged == alone


def test_the_image_refuses_a_folder_it_cannot_write_and_says_how(
        tmp_path: Path, sidecar_image: str) -> None:
    folder = users_folder(tmp_path)
    (folder / "tlsbridge.yaml").write_text("sites: {a: {domains: [a.example.com]}}\n")
    before = snapshot(folder)
    proc = in_image(folder, "-c", "tlsbridge.yaml", "compose", "--sidecar", "-o", "compose.yaml",
                    user=None)
    assert proc.returncode == 2, proc.stderr
    assert '--user "$(id -u):$(id -g)"' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(folder) == before


def test_the_image_generates_a_stack_that_serves_the_users_app_over_https(
        tmp_path: Path, sidecar_image: str, acme: PebbleServer, docker_engine: Any,
        nginx_image: str) -> None:
    tag = f"tbonb{secrets.token_hex(3)}"
    site, domain = f"{tag}-shop", f"shop.{tag}.example.com"
    folder = users_folder(tmp_path)
    gateway = gateway_ip(docker_engine, "bridge")  # the host, as a container on a bridge sees it
    forwarder = Forwarder(gateway, ("127.0.0.1", acme.acme_port))
    shutil.copy(acme.ca_bundle, folder / "pebble-ca.pem")
    (folder / "tlsbridge.yaml").write_text(yaml.safe_dump({
        "acme": {"directory": f"https://{PEBBLE_NAME}:{forwarder.port}/dir",
                 "email": "admin@example.com", "ca_bundle": "pebble-ca.pem"},
        "sites": {site: {"domains": [domain], "upstream": "http://app:8080"}},
    }, sort_keys=False))
    https_port, extra_port = free_port(), free_port()
    env = {"TLSBRIDGE_HTTP_PORT": f"127.0.0.1:{acme.http_01_port}",  # where Pebble validates
           "TLSBRIDGE_HTTPS_PORT": f"127.0.0.1:{https_port}"}
    compose = [*compose_cmd(), "-p", tag]  # no -f: Compose picks the files as a user's would
    generate = ("-c", "tlsbridge.yaml", "compose", "--sidecar", "-o", "compose.yaml",
                "--image", nginx_image)
    try:
        t0 = time.monotonic()
        ok(in_image(folder, *generate))
        print(f"stack generated by the image in {time.monotonic() - t0:.1f} s")
        written = ["compose.override.yaml", "compose.yaml", "nginx"]
        for name in written + [f"nginx/{n}" for n in os.listdir(folder / "nginx")]:
            st = (folder / name).stat()
            assert (st.st_uid, st.st_gid) == (OWNER, OWNER), name  # the folder's owner, not root
        text = (folder / "compose.yaml").read_text()
        assert f'image: "{sidecar_image}"' in text and "build:" not in text  # runs this image
        # only paths that hold on the host: relative to the folder, never the container's /w
        assert '"/w/' not in text and '"/w"' not in text and 'source: "."' in text

        # The user's part: the starter, edited as its comments say, plus the test-only glue.
        starter = (folder / "compose.override.yaml").read_text()
        assert "# app:" in starter
        (folder / "app-conf").mkdir()
        (folder / "app-conf" / "app.conf").write_text(APP_CONF)
        override = starter.replace("services:\n", f"""services:
  app:
    image: "{nginx_image}"
    volumes: ["./app-conf:/etc/nginx/conf.d:ro"]
  tlsbridge:
    extra_hosts: ["{PEBBLE_NAME}:{gateway}"]
""", 1).replace('    #  - "8443:8443"', f'      - "127.0.0.1:{extra_port}:8443"')
        (folder / "compose.override.yaml").write_text(override)

        merged = yaml.safe_load(ok(sh([*compose, "config"], cwd=folder, env=env)).stdout)
        assert merged["services"]["app"]["image"] == nginx_image
        assert "default" in merged["services"]["app"]["networks"]  # the stack's network
        assert {str(p["published"]) for p in merged["services"]["nginx"]["ports"]} == {
            str(acme.http_01_port), str(https_port), str(extra_port)}

        t_up = time.monotonic()
        ok(sh([*compose, "up", "-d"], cwd=folder, env=env))
        pebble_root = folder / "pebble-root.pem"
        pebble_root.write_bytes(acme.root_pem())
        verified = ssl.create_default_context(cafile=str(pebble_root))  # chain + name check

        def issued() -> bool:
            # Three in a row, as tlsbridge verifies: right after a reload, workers of the old
            # configuration may still take a connection or two.
            try:
                for _ in range(3):
                    served_cert(https_port, domain, verified, timeout=0)
                return True
            except (OSError, ssl.SSLError):
                return False

        deadline = time.monotonic() + 180
        while not issued():
            if time.monotonic() > deadline:
                logs = sh([*compose, "logs", "--tail", "60"], cwd=folder, env=env)
                pytest.fail(f"no Pebble certificate served within 180 s\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        print(f"compose up -> Pebble certificate served in {time.monotonic() - t_up:.1f} s")
        r = http_get(https_port, domain, "/orders?id=7", verified)
        assert (r.status, r.body) == (200, b"the app: uri=/orders?id=7 proto=https\n")
        r = http_get(acme.http_01_port, domain, "/orders")
        assert (r.status, r.headers["location"]) == (301, f"https://{domain}/orders")

        if os.environ.get("TB_DEBUG"):  # the services' own words, for a human looking at timings
            print(sh([*compose, "logs", "-t", "tlsbridge"], cwd=folder, env=env).stdout)
        # Generating again (a config change, say) leaves the user's override alone.
        before = snapshot(folder)
        ok(in_image(folder, *generate))
        assert (folder / "compose.override.yaml").read_text() == override
        assert snapshot(folder) == before
    except BaseException:
        logs = sh([*compose, "logs", "-t", "--tail", "80"], cwd=folder, env=env)
        print(f"compose logs:\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    finally:
        down = sh([*compose, "down", "-v", "--remove-orphans", "-t", "2"], cwd=folder, env=env)
        if down.returncode != 0:
            print(down.stdout, down.stderr, file=sys.stderr)
        forwarder.close()
