"""Smoke tests for the integration infrastructure itself: Pebble, certbot, the nginx image."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from servers import PebbleServer, certbot_argv, free_port, make_tls_material


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    else:  # pragma: no cover
        raise AssertionError(f"unexpected issuer key {type(key)}")


def test_pebble_directory(pebble: PebbleServer) -> None:
    directory = pebble.directory()
    for key in ("newAccount", "newNonce", "newOrder", "revokeCert", "renewalInfo"):
        assert key in directory, key
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    assert root.subject == root.issuer


def test_certbot_issues_and_revocation_moves_ari_window(
    pebble: PebbleServer, certbot_env: dict[str, str], tmp_path: Path
) -> None:
    name = "infra.example.com"
    issue = certbot_argv(
        pebble,
        tmp_path,
        "certonly",
        "--standalone",
        "--http-01-port",
        str(pebble.http_01_port),
        "--agree-tos",
        "-m",
        "a@example.com",
        "-d",
        name,
    )
    proc = subprocess.run(issue, env=certbot_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    live = tmp_path / "config" / "live" / name
    chain = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    _verify_signed_by(leaf, chain[1])
    _verify_signed_by(chain[-1], root)

    window = pebble.renewal_info(leaf)["suggestedWindow"]
    now = time.time()
    assert _ts(window["start"]) > now

    revoke = certbot_argv(
        pebble, tmp_path, "revoke", "--cert-name", name, "--no-delete-after-revoke"
    )
    proc = subprocess.run(revoke, env=certbot_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert pebble.cert_status(leaf)["Status"] == "Revoked"
    window = pebble.renewal_info(leaf)["suggestedWindow"]
    assert _ts(window["end"]) <= time.time()


def _ts(rfc3339: str) -> float:
    import datetime as dt

    # Pebble emits nanoseconds after a revocation; keep microseconds for fromisoformat.
    text = rfc3339.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        frac, tz = rest[:-6], rest[-6:]
        text = f"{head}.{frac[:6]}{tz}"
    return dt.datetime.fromisoformat(text).timestamp()


def test_nginx_image_serves_https_and_reloads(
    docker_engine: Any, nginx_image: str, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    ca, cert, key = make_tls_material(certs, hostnames=("site.example.com",), ips=())
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "site.conf").write_text(
        "server {\n"
        "    listen 443 ssl;\n"
        "    server_name site.example.com;\n"
        "    ssl_certificate /certs/cert.pem;\n"
        "    ssl_certificate_key /certs/key.pem;\n"
        '    location / { return 200 "ok\\n"; }\n'
        "}\n"
    )
    port = free_port()
    container = docker_engine.containers.run(
        nginx_image,
        detach=True,
        ports={"443/tcp": ("127.0.0.1", port)},
        volumes={
            str(conf): {"bind": "/etc/nginx/conf.d", "mode": "ro"},
            str(certs): {"bind": "/certs", "mode": "ro"},
        },
    )
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        served = _fetch_cert(ctx, port, "site.example.com", deadline=time.monotonic() + 10)
        assert served.subject.rfc4514_string() == "CN=site.example.com"

        code, out = container.exec_run(["nginx", "-t"])
        assert code == 0, out
        (conf / "broken.conf").write_text("server { bogus_directive on; }\n")
        code, out = container.exec_run(["nginx", "-t"])
        assert code == 1, out
        (conf / "broken.conf").unlink()

        code, out = container.exec_run(["nginx", "-s", "reload"])
        assert code == 0, out
        container.kill(signal="SIGHUP")
        time.sleep(0.3)
        container.reload()
        assert container.status == "running"
        assert b"SIGHUP" in container.logs()
        _fetch_cert(ctx, port, "site.example.com", deadline=time.monotonic() + 10)
    finally:
        container.remove(force=True)


def _fetch_cert(ctx: ssl.SSLContext, port: int, name: str, deadline: float) -> x509.Certificate:
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname=name) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return x509.load_der_x509_certificate(der)
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
