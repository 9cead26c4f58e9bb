"""Helpers for the `tlsbridge compose` integration tests and the demo: Compose v2, locally
made certificates, TLS and HTTP probes against 127.0.0.1 with any SNI / Host."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from servers import PROJECT_ROOT

from tlsbridge.adapters.publish import CertFiles

TLSBRIDGE = str(Path(sys.executable).with_name("tlsbridge"))
COMPOSE_PLUGIN = PROJECT_ROOT / "tools/trixie/usr/libexec/docker/cli-plugins/docker-compose"


def compose_cmd() -> list[str]:
    """Compose v2: $TLSBRIDGE_COMPOSE, the Debian 13 plugin under tools/trixie, or `docker compose`."""
    explicit = os.environ.get("TLSBRIDGE_COMPOSE")
    if explicit:
        return explicit.split()
    if COMPOSE_PLUGIN.is_file():
        return [str(COMPOSE_PLUGIN)]
    return ["docker", "compose"]


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    # The sidecar's group_add requires DOCKER_GID (the socket's group), as a user's shell would set it.
    gid = str(os.stat("/var/run/docker.sock").st_gid) if os.path.exists("/var/run/docker.sock") else "0"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={"DOCKER_GID": gid, **os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- certificates made locally (where the CA does not matter) ----------------------------------

class LocalCA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsbridge compose test CA")])
        now = dt.datetime.now(dt.UTC)
        self.name = name
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, domains: list[str], issuer_self: bool = False) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
        cert = (
            x509.CertificateBuilder().subject_name(subject)
            .issuer_name(subject if issuer_self else self.name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                           critical=False)
            .sign(key if issuer_self else self.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        chain = b"" if issuer_self else self.pem
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return CertFiles(fullchain=pem + chain, privkey=key_pem, chain=chain, cert=pem)


# -- TLS / HTTP probes ----------------------------------------------------------------------------

def served_cert(port: int, sni: str, ctx: ssl.SSLContext | None = None,
                timeout: float = 15) -> x509.Certificate:
    ctx = ctx or insecure()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                    ctx.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return x509.load_der_x509_certificate(der)
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(port: int, host: str, path: str, tls: ssl.SSLContext | None = None) -> Response:
    """One HTTP/1.1 request to 127.0.0.1:port with Host (and SNI) `host`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock: socket.socket = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return Response(int(lines[0].split()[1]), headers, body)
