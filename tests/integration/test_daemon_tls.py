"""`tlsbridge daemon-tls` against a real, second dockerd that reads the generated daemon.json.

The second engine (`dockerd --config-file OUT/daemon.json`, own data/exec root, pidfile, a unix
socket in a temp folder, no bridge, no iptables) listens with mutual TLS on a free loopback port;
the main engine is not touched. One engine per mode (private server certificate, and the
published certificate of a site), each started once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from docker.tls import TLSConfig
from servers import free_port

from tlsbridge.adapters.publish import CertFiles, Publisher
from tlsbridge.daemon_tls import pki
from tlsbridge.daemon_tls.checks import dropin_overrides_exec_start

PREFIX = "tlsbdt-"
DOCKER = shutil.which("docker") or "/usr/bin/docker"
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"


@dataclass
class Engine:
    tmp: Path
    out: Path
    port: int
    stdout: str  # what daemon-tls printed
    argv: list[str]  # the daemon-tls command line
    env: dict[str, str]  # for tlsbridge and docker CLI runs (DOCKER_CONFIG in tmp)

    def client(self, name: str) -> Path:
        return self.out / "clients" / name


def tlsbridge(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlsbridge", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def docker_cli(args: list[str], env: dict[str, str],
               **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env={**env, **extra}, capture_output=True, text=True,
                          timeout=30)


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DOCKER_") and k not in ("TLSBRIDGE_CONFIG", "SSL_CERT_FILE")}
    env["DOCKER_CONFIG"] = str(tmp / "docker-config")  # contexts land here, not in ~/.docker
    return env


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_mode,
                                       p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


BRIDGE = "tbdt-br0"  # the second engine's own bridge (no traffic crosses it)


@dataclass
class SecondDockerd:
    """A dockerd that reads `config_file` and nothing else from the host's Docker setup."""

    tmp: Path
    config_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.tmp / "docker.sock"

    @property
    def log(self) -> Path:
        return self.tmp / "dockerd.log"

    def __enter__(self) -> SecondDockerd:
        # Its own bridge, never --bridge=none: a dockerd started with the bridge disabled
        # deletes the host's docker0, which breaks the main engine's default network.
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False, capture_output=True)
        subprocess.run(["ip", "addr", "replace", "192.0.2.1/24", "dev", BRIDGE], check=True)
        argv = [DOCKERD, "--config-file", str(self.config_file),
                "--data-root", str(self.tmp / "data"), "--exec-root", str(self.tmp / "exec"),
                "--pidfile", str(self.tmp / "docker.pid"), f"--bridge={BRIDGE}",
                "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                client = docker.DockerClient(base_url=f"unix://{self.socket}", timeout=5)
                try:
                    if client.ping():
                        return self
                finally:
                    client.close()
            except docker.errors.DockerException:
                pass
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.__exit__(None, None, None)
        raise RuntimeError(f"second dockerd did not come up:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


def _cleanup(tmp: Path) -> None:
    # dockerd unmounts what it mounted on a clean stop; anything left would make rmtree fail
    with open("/proc/self/mounts") as fh:
        mounts = [ln.split()[1] for ln in fh if str(tmp) in ln.split()[1]]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))  # short: unix socket paths
    try:
        env = base_env(tmp)
        port = free_port()
        merge = tmp / "existing-daemon.json"
        merge.write_text(json.dumps({"labels": ["tlsbridge-test=merged"], "log-level": "warn",
                                     "hosts": ["tcp://0.0.0.0:2375"], "tls": True,
                                     "tlsverify": False}))
        out = tmp / "out"
        argv = ["daemon-tls", "--out", str(out), "--hostname", "localhost", "--ip", "127.0.0.1",
                "--listen", f"127.0.0.1:{port}", "--client", "alice", "--client", "bob",
                "--merge", str(merge), "--unix-socket", str(tmp / "docker.sock")]
        run = tlsbridge(argv, env, cwd=tmp)  # no tlsbridge.yaml in tmp: flags alone
        assert run.returncode == 0, run.stderr
        with SecondDockerd(tmp, out / "daemon.json"):
            yield Engine(tmp, out, port, run.stdout, argv, env)
    finally:
        _cleanup(tmp)


@pytest.fixture(scope="module")
def foreign_client(engine: Engine) -> Path:
    """A clientAuth certificate from another tlsbridge CA: must be refused."""
    other = engine.tmp / "other"
    run = tlsbridge(["daemon-tls", "--out", str(other), "--ip", "127.0.0.1", "--client", "mallory"],
                    engine.env, cwd=engine.tmp)
    assert run.returncode == 0, run.stderr
    return other / "clients" / "mallory"


@pytest.fixture(autouse=True)
def _sdk_uses_its_own_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override a session's `verify`, which
    # is where the docker SDK puts TLSConfig's ca_cert (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def sdk_call(engine: Engine, cert_dir: Path | None, call: str = "version", *,
             ca: Path | None = None, host: str = "127.0.0.1") -> Any:
    """Call one docker SDK method over mutual TLS (client certificate from `cert_dir`)."""
    ca = ca or engine.client("alice") / "ca.pem"
    client_cert = (str(cert_dir / "cert.pem"), str(cert_dir / "key.pem")) if cert_dir else None
    tls = TLSConfig(client_cert=client_cert, ca_cert=str(ca), verify=True)
    client = docker.DockerClient(base_url=f"https://{host}:{engine.port}", tls=tls, timeout=10)
    try:
        return getattr(client, call)()
    finally:
        client.close()


def assert_refused(engine: Engine, cert_dir: Path | None, **kw: Any) -> None:
    with pytest.raises(docker.errors.DockerException) as info:
        sdk_call(engine, cert_dir, **kw)
    assert "SSLError" in str(info.value), info.value


def test_generated_files_are_what_dockerd_runs_with(engine: Engine) -> None:
    out = engine.out
    for p in out.rglob("*.pem"):
        assert p.stat().st_mode & 0o777 == (0o600 if p.name.endswith("key.pem") else 0o644), p
    data = json.loads((out / "daemon.json").read_text())
    assert data["hosts"] == [f"unix://{engine.tmp}/docker.sock", f"tcp://127.0.0.1:{engine.port}"]
    assert data["tls"] is True and data["tlsverify"] is True
    # the merged foreign keys reached dockerd (it reports the label)
    assert "tlsbridge-test=merged" in sdk_call(engine, engine.client("alice"), "info")["Labels"]
    dropin = (out / "docker.service.d" / "tlsbridge.conf").read_text()
    assert "[Service]\nExecStart=\nExecStart=/" in dropin
    assert dropin_overrides_exec_start(dropin)


@pytest.mark.parametrize("client", ["alice", "bob"])
def test_client_certificate_gets_in_with_the_sdk(engine: Engine, client: str) -> None:
    assert sdk_call(engine, engine.client(client), "ping") is True
    assert sdk_call(engine, engine.client(client), host="localhost")["ApiVersion"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_client_certificate_gets_in_with_the_cli_env(engine: Engine, host: str) -> None:
    run = docker_cli(["version", "--format", "{{.Server.Version}}"], engine.env,
                     DOCKER_HOST=f"tcp://{host}:{engine.port}", DOCKER_TLS_VERIFY="1",
                     DOCKER_CERT_PATH=str(engine.client("alice")))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


def test_printed_context_command_works(engine: Engine) -> None:
    lines = [ln for ln in engine.stdout.splitlines() if ln.startswith("docker context create ")]
    assert len(lines) == 2  # alice, bob
    argv = shlex.split(lines[0])
    assert argv[3] == "localhost"
    run = subprocess.run([DOCKER, *argv[1:]], env=engine.env, capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    run = docker_cli(["--context", "localhost", "info", "--format", "{{json .Labels}}"],
                     engine.env)
    assert run.returncode == 0, run.stderr
    assert "tlsbridge-test=merged" in run.stdout
    env_lines = [ln for ln in engine.stdout.splitlines() if ln.startswith("export DOCKER_")]
    assert env_lines[:3] == [f"export DOCKER_HOST=tcp://localhost:{engine.port}",
                             "export DOCKER_TLS_VERIFY=1",
                             f"export DOCKER_CERT_PATH={engine.client('alice')}"]


def test_no_client_certificate_is_refused(engine: Engine) -> None:
    assert_refused(engine, None)
    # the CLI with only the CA (no cert.pem/key.pem): refused too
    ca_only = engine.tmp / "ca-only"
    ca_only.mkdir(exist_ok=True)
    shutil.copy(engine.client("alice") / "ca.pem", ca_only / "ca.pem")
    run = docker_cli(["version", "--format", "{{.Server.Version}}"], engine.env,
                     DOCKER_HOST=f"tcp://127.0.0.1:{engine.port}", DOCKER_TLS_VERIFY="1",
                     DOCKER_CERT_PATH=str(ca_only))
    assert run.returncode != 0 and "Server" not in run.stdout
    # plain HTTP on the TLS port: no API
    run = docker_cli(["version", "--format", "{{.Server.Version}}"], engine.env,
                     DOCKER_HOST=f"tcp://127.0.0.1:{engine.port}")
    assert run.returncode != 0 and not run.stdout.strip()


def test_raw_tls_without_client_certificate_gets_no_http_answer(engine: Engine) -> None:
    ctx = ssl.create_default_context(cafile=str(engine.client("alice") / "ca.pem"))
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = tls.recv(1024)
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert b"HTTP/1.1 200" not in answer and b"OK" not in answer


def test_certificate_from_another_ca_is_refused(engine: Engine, foreign_client: Path) -> None:
    assert_refused(engine, foreign_client)
    # even if the client trusts the engine (our ca.pem), its own certificate is foreign
    mixed = engine.tmp / "mixed"
    mixed.mkdir(exist_ok=True)
    shutil.copy(engine.client("alice") / "ca.pem", mixed / "ca.pem")
    shutil.copy(foreign_client / "cert.pem", mixed / "cert.pem")
    shutil.copy(foreign_client / "key.pem", mixed / "key.pem")
    run = docker_cli(["version", "--format", "{{.Server.Version}}"], engine.env,
                     DOCKER_HOST=f"tcp://127.0.0.1:{engine.port}", DOCKER_TLS_VERIFY="1",
                     DOCKER_CERT_PATH=str(mixed))
    assert run.returncode != 0
    assert "remote error: tls: bad certificate" in run.stderr  # the engine said no


def test_server_certificate_from_the_private_ca(engine: Engine) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", engine.port), timeout=10)
    cert = x509.load_pem_x509_certificate(pem.encode())
    ca = x509.load_pem_x509_certificate((engine.out / "ca.pem").read_bytes())
    assert pki.signed_by(cert, ca)
    assert pki.needs_reissue(cert, datetime.now(UTC), usage=ExtendedKeyUsageOID.SERVER_AUTH,
                             names=pki.Names.of(["localhost"], ["127.0.0.1"])) is None
    # The CA is name-constrained to the engine's names (critical), and the docker CLI and the
    # SDK still get in with its client certificates (which have no subjectAltName): the tests
    # above run against this very CA.
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and pki.ca_permits(ca, pki.Names.of(["localhost"], ["127.0.0.1"]))
    assert not pki.ca_permits(ca, pki.Names.of(["example.com"], []))


def test_rerun_is_idempotent(engine: Engine) -> None:
    before = snapshot(engine.out)
    run = tlsbridge(engine.argv, engine.env, cwd=engine.tmp)
    assert run.returncode == 0, run.stderr
    assert "0 file(s) written" in run.stdout
    assert snapshot(engine.out) == before

    def instructions(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith(("docker ", "export ", "install "))]

    assert instructions(run.stdout) == instructions(engine.stdout)
    assert sdk_call(engine, engine.client("alice"), "ping") is True


# -- tlsbridge's own event-stream client (adapters/docker_events.py) over TCP + mutual TLS -----


def _drain(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a closed stream may end or break: either ends the read
        for _ in stream:
            pass


def _follow(stream: Any, want: int, on_first: Any = None) -> list[Any]:
    """Read `want` events in a thread (the read blocks); close the stream if they do not come."""
    seen: list[Any] = []

    def read() -> None:
        for event in stream:
            seen.append(event)
            if len(seen) == 1 and on_first is not None:
                on_first()
            if len(seen) == want:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # a safety net: the events come within milliseconds
    stream.close()
    reader.join(timeout=10)
    assert not reader.is_alive(), "close() did not end a blocked read"
    return seen


def test_the_event_stream_follows_the_engine_over_mutual_tls(engine: Engine, foreign_client: Path) -> None:
    """The sidecar's watcher reads events with http.client (not the SDK): DOCKER_HOST tcp://,
    DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as docker-py reads them, `since` replays, and
    close() from another thread ends a blocked read."""
    from tlsbridge.adapters.docker_events import events
    from tlsbridge.config import DockerConfig
    from tlsbridge.errors import DockerError

    cfg = DockerConfig(host=f"tcp://localhost:{engine.port}", timeout=timedelta(seconds=10))
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(engine.client("alice"))}
    filters = {"type": "volume", "event": ["create"]}
    local = docker.DockerClient(base_url=f"unix://{engine.tmp / 'docker.sock'}", timeout=10)
    names = [f"{PREFIX}events-{secrets.token_hex(3)}-{i}" for i in range(2)]
    try:
        since = datetime.now(UTC) - timedelta(seconds=1)
        local.volumes.create(names[0])  # before the stream opens: replayed through `since`
        stream = events(cfg, filters, since=since, environ=env)
        seen = _follow(stream, 2, on_first=lambda: local.volumes.create(names[1]))
        assert [(e.type, e.action, e.id) for e in seen] == [("volume", "create", n) for n in names]

        idle = events(cfg, filters, environ=env)  # nothing comes: close() must still end the read
        reader = threading.Thread(target=lambda: _drain(idle), daemon=True)
        reader.start()
        idle.close()
        reader.join(timeout=10)
        assert not reader.is_alive()

        ca_only = engine.tmp / "ca-only-events"  # trusts the engine, has no client certificate
        ca_only.mkdir(exist_ok=True)
        shutil.copy(engine.client("alice") / "ca.pem", ca_only / "ca.pem")
        for cert_path in (ca_only, foreign_client):  # foreign: another CA, for both sides
            with pytest.raises(DockerError, match=f"tcp://localhost:{engine.port} is not reachable"):
                events(cfg, filters, environ={**env, "DOCKER_CERT_PATH": str(cert_path)})
    finally:
        for name in names:
            with contextlib.suppress(docker.errors.DockerException):
                local.volumes.get(name).remove()
        local.close()


# -- the engine serving a site's published (here: test-"public") certificate -------------------


def _public_root_and_site(tmp: Path) -> tuple[Path, Path]:
    """A stand-in public root (the clients' trust store) and a site published under certs/web."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    rname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsbdt public root"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "tlsbdt public root")])
    root = (x509.CertificateBuilder().subject_name(rname).issuer_name(rname)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docker.tlsbdt.test")]))
            .issuer_name(rname).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("docker.tlsbdt.test"), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    publish = tmp / "certs"
    Publisher(publish).publish("web", CertFiles(fullchain=pem, privkey=pki.key_pem(key),
                                                chain=b"", cert=pem))
    bundle = tmp / "public-roots.pem"
    bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return publish, bundle


@pytest.fixture(scope="class")
def site_engine() -> Iterator[Engine]:
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
    try:
        publish, bundle = _public_root_and_site(tmp)
        config: dict[str, Any] = {"publish": {"dir": str(publish)},
                                  "sites": {"web": {"domains": ["docker.tlsbdt.test"]}}}
        (tmp / "tlsbridge.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        env = {**base_env(tmp), "SSL_CERT_FILE": str(bundle)}  # the "system" trust store
        out = tmp / "out"
        argv = ["-c", str(tmp / "tlsbridge.yaml"), "daemon-tls", "--out", str(out),
                "--hostname", "localhost", "--listen", f"127.0.0.1:{port}", "--client", "carol",
                "--server-cert-site", "web", "--unix-socket", str(tmp / "docker.sock")]
        run = tlsbridge(argv, env, cwd=tmp)
        assert run.returncode == 0, run.stderr
        with SecondDockerd(tmp, out / "daemon.json"):
            yield Engine(tmp, out, port, run.stdout, argv, env)
    finally:
        _cleanup(tmp)


class TestServerCertSite:
    def test_engine_serves_the_published_certificate(self, site_engine: Engine) -> None:
        data = json.loads((site_engine.out / "daemon.json").read_text())
        assert data["tlscert"] == str(site_engine.tmp / "certs" / "web" / "fullchain.pem")
        pem = ssl.get_server_certificate(("127.0.0.1", site_engine.port), timeout=10)
        served = x509.load_pem_x509_certificate(pem.encode())
        published = (site_engine.tmp / "certs" / "web" / "fullchain.pem").read_bytes()
        assert served == x509.load_pem_x509_certificate(published)

    def test_client_gets_in_and_verifies_the_engine(self, site_engine: Engine) -> None:
        env = {k: v for k, v in site_engine.env.items() if k != "SSL_CERT_FILE"}
        run = docker_cli(["version", "--format", "{{.Server.Version}}"], env,
                         DOCKER_HOST=f"tcp://localhost:{site_engine.port}",
                         DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(site_engine.client("carol")))
        assert run.returncode == 0, run.stderr
        line = next(ln for ln in site_engine.stdout.splitlines()
                    if ln.startswith("docker context create "))
        run = subprocess.run([DOCKER, *shlex.split(line)[1:]], env=env, capture_output=True,
                             text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        run = docker_cli(["--context", "localhost", "version", "--format",
                          "{{.Server.Version}}"], env)
        assert run.returncode == 0, run.stderr

    def test_a_client_without_certificate_is_refused(self, site_engine: Engine) -> None:
        bundle = site_engine.tmp / "public-roots.pem"
        assert_refused(site_engine, None, ca=bundle, host="localhost")
        assert sdk_call(site_engine, site_engine.client("carol"), ca=bundle, host="localhost")
