"""12.6: the generated nginx TLS settings pass Mozilla's "intermediate" profile in an
independent scanner (sslyze, `--mozilla_config=intermediate`), against the real nginx test
image serving the snippets `tlsbridge compose` writes.

The attack reproduced first: the same snippets without `ssl_ecdh_curve` (as generated before)
let nginx offer OpenSSL's default groups, X448 and secp521r1 among them, which the profile does
not allow; sslyze reports them as non-compliant.

sslyze pins cryptography < 47 while certbot 5.8 needs a newer one, so it lives in its own
virtual environment, .venv-scan (scripts/setup.sh; the `scan` extra in pyproject.toml).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from composekit import TLSBRIDGE, run
from runkit import wait_for
from servers import PROJECT_ROOT, free_port

from tlsbridge.adapters.publish import CertFiles, Publisher
from tlsbridge.daemon_tls import pki
from tlsbridge.render import nginx as render_nginx

SSLYZE = PROJECT_ROOT / ".venv-scan" / "bin" / "sslyze"
DOMAIN = "scan.example.com"


def _serve_and_scan(tmp_path: Path, nginx_image: str, docker_engine: Any, *,
                    strip_curves: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "tlsbridge.yaml").write_text(
        f"publish: {{dir: {tmp_path / 'certs'}}}\nsites:\n  scan:\n    domains: [{DOMAIN}]\n")
    run([TLSBRIDGE, "-q", "-c", str(tmp_path / "tlsbridge.yaml"), "compose", "-o",
         str(tmp_path / "compose.yaml")])
    tls_file = tmp_path / "nginx" / render_nginx.TLS_FILE
    if strip_curves:
        lines = tls_file.read_text().splitlines(keepends=True)
        tls_file.write_text("".join(ln for ln in lines if not ln.startswith("ssl_ecdh_curve")))
    # A CA and a 90-day ECDSA certificate that a strict RFC 5280 path validator accepts.
    now = datetime.now(UTC)
    ca = pki.make_ca(now, "tlsbridge scan test CA")
    leaf = pki.make_server_cert(ca, pki.Names.of([DOMAIN], []), now, lifetime=timedelta(days=90))
    Publisher(tmp_path / "certs").publish("scan", CertFiles(
        fullchain=leaf.cert_pem + ca.cert_pem, privkey=leaf.key_pem, chain=ca.cert_pem, cert=leaf.cert_pem))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    port = free_port()
    container = docker_engine.containers.run(
        nginx_image, detach=True, name=f"tbsec-scan-{secrets.token_hex(3)}",
        ports={"443/tcp": ("127.0.0.1", port)},
        volumes={str(tmp_path / "nginx"): {"bind": render_nginx.CONF_DIR, "mode": "ro"},
                 str(tmp_path / "certs" / "scan"): {"bind": f"{render_nginx.CERTS_DIR}/scan", "mode": "ro"}})
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for("nginx on 443", listening, 30, on_timeout=lambda: container.logs().decode(errors="replace"))
        return subprocess.run(
            [str(SSLYZE), "--mozilla_config=intermediate", f"--certinfo_ca_file={tmp_path / 'ca.pem'}",
             f"{DOMAIN}:{port}{{127.0.0.1}}"], capture_output=True, text=True, timeout=300)
    finally:
        container.remove(force=True)


def _compliance(out: str) -> str:
    return out.partition("COMPLIANCE AGAINST")[2]


def test_without_the_curve_list_nginx_is_not_compliant(tmp_path: Path, nginx_image: str,
                                                        docker_engine: Any) -> None:
    proc = _serve_and_scan(tmp_path, nginx_image, docker_engine, strip_curves=True)
    report = _compliance(proc.stdout)
    assert proc.returncode != 0 and "Not compliant" in report, proc.stdout[-3000:] + proc.stderr
    assert "X448" in report and "secp521r1" in report


def test_the_generated_nginx_passes_mozilla_intermediate(tmp_path: Path, nginx_image: str,
                                                         docker_engine: Any) -> None:
    proc = _serve_and_scan(tmp_path, nginx_image, docker_engine, strip_curves=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "OK - Compliant" in _compliance(proc.stdout)
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in proc.stdout
