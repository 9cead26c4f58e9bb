"""The sidecar's passes with work to do run in a child process (tlsbridge/sidecar/worker.py):
the child publishes, the sidecar gets the outcomes and the parsed certificates, and neither the
X.509 parser nor the docker SDK ever loads in the sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def lineage(config_dir: Path, name: str, domain: str) -> bytes:
    """A certbot-like live/<name>/ folder with a certificate valid for 80 more days."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=10)).not_valid_after(now + timedelta(days=80))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    live = config_dir / "live" / name
    live.mkdir(parents=True)
    (live / "cert.pem").write_bytes(pem)
    (live / "chain.pem").write_bytes(pem)
    (live / "fullchain.pem").write_bytes(pem + pem)
    (live / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem


SCRIPT = """
import json, logging, sys
from pathlib import Path
from tlsbridge import config
from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.clock import SystemClock
from tlsbridge.sidecar import worker
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
cfg = config.load(Path(sys.argv[1]))
memo = CertMemo()
rec = worker.build_reconciler(cfg, SystemClock(), memo)
first = rec.run_pass()
with memo.refusing_parse():  # what the child parsed is known here now
    published = memo.read_cert(cfg.publish.dir / "one" / "cert.pem")
calls = []
real = worker.run_child
worker.run_child = lambda *a: calls.append(a) or real(*a)
second = rec.run_pass()
print(json.dumps({
    "first": [[o.site, o.ok, o.published, o.plan.decision.reason] for o in first],
    "second": [[o.site, o.ok, o.published, o.plan.decision.reason] for o in second],
    "second_in_child": bool(calls),
    "published_serial": published.serial_hex if published else None,
    "loaded": sorted(m for m in ("cryptography", "docker", "requests") if m in sys.modules),
}))
"""


def test_a_pass_with_work_runs_in_a_child_and_the_sidecar_loads_no_parser(tmp_path: Path) -> None:
    pem = lineage(tmp_path / "le", "one", "one.example.com")
    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text(textwrap.dedent(f"""
        acme: {{directory: "https://127.0.0.1:9/dir"}}
        certbot: {{config_dir: {tmp_path}/le, work_dir: {tmp_path}/work, logs_dir: {tmp_path}/logs}}
        challenge: {{method: standalone, http_port: 5002}}
        publish: {{dir: {tmp_path}/certs}}
        state: {{dir: {tmp_path}/state}}
        renewal: {{before_expiry: 30d}}
        docker: {{host: "unix://{tmp_path}/no-docker.sock"}}
        sites:
          one: {{domains: [one.example.com]}}
        """))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(cfg)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    # the first pass publishes (in the child: its log lines reach the same output)
    assert got["first"] == [["one", True, True, "NotPublished"]]
    assert "published serial=" in proc.stderr
    assert (tmp_path / "certs" / "one" / "cert.pem").read_bytes() == pem
    assert got["published_serial"] is not None
    # the second finds nothing to do and stays in the sidecar
    assert got["second"] == [["one", True, False, "NotDue"]]
    assert not got["second_in_child"]
    assert got["loaded"] == []
