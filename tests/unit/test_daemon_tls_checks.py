"""tlsbridge.daemon_tls.checks: what `doctor` says about a daemon.json's remote access."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsbridge.daemon_tls import checks as c
from tlsbridge.daemon_tls import pki

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CA = pki.make_ca(NOW - timedelta(days=10))
CA_CERT = x509.load_pem_x509_certificate(CA.cert_pem)
SERVER = x509.load_pem_x509_certificate(
    pki.make_server_cert(CA, pki.Names.of(["h.example"], []), NOW - timedelta(days=10)).cert_pem)


def _self_signed(org: str, lifetime: timedelta = timedelta(days=3650)) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{org} root")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=100)).not_valid_after(NOW + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


ISRG = _self_signed("Internet Security Research Group")
PUBLIC = _self_signed("Some Public Trust Services")
FILES: dict[str, Sequence[x509.Certificate]] = {
    "/tls/ca.pem": [CA_CERT], "/tls/server-cert.pem": [SERVER], "/le/isrg.pem": [ISRG],
    "/pub/root.pem": [PUBLIC], "/short/ca.pem": [_self_signed("me", timedelta(days=10))],
    "/old/ca.pem": [_self_signed("me", timedelta(days=-1))],
}
GOOD = {"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"], "tls": True,
        "tlsverify": True, "tlscacert": "/tls/ca.pem", "tlscert": "/tls/server-cert.pem",
        "tlskey": "/tls/server-key.pem"}


def read_cert(path: str) -> Sequence[x509.Certificate] | None:
    if path == "/broken.pem":
        raise ValueError("no PEM data")
    return FILES.get(path)


def check(data: dict[str, object], *, dropin: bool = True, ufw: bool = False,
          trusted: frozenset[str] = frozenset()) -> list[c.Finding]:
    return c.check_daemon_json(data, dropin_present=dropin, ufw_active=ufw, now=NOW,
                               read_cert=read_cert, trusted_fingerprints=trusted)


def test_the_rendered_setup_is_clean() -> None:
    assert check(GOOD) == []
    assert check({}) == []


@pytest.mark.parametrize(
    ("change", "level", "words"),
    [
        ({"tlsverify": False}, "error", "tls without tlsverify"),
        ({"tlsverify": None, "tls": True}, "error", "tls without tlsverify"),
        ({"tls": False, "tlsverify": False}, "error", "without TLS"),
        ({"hosts": ["tcp://0.0.0.0:2375"], "tls": None, "tlsverify": None}, "error", "without TLS"),
        ({"hosts": "0.0.0.0:2375", "tls": None, "tlsverify": None}, "error", "without TLS"),
        ({"tlscacert": "/le/isrg.pem"}, "error", "public CA (O=Internet Security Research Group)"),
        ({"tlscacert": "/short/ca.pem"}, "warning", "expires"),
        ({"tlscacert": "/old/ca.pem"}, "error", "expired"),
        ({"tlscacert": "/missing.pem"}, "error", "does not exist"),
        ({"tlscacert": "/broken.pem"}, "error", "cannot be read"),
        ({"tlscacert": None}, "warning", "tlscacert is not set"),
    ],
)
def test_findings(change: dict[str, object], level: str, words: str) -> None:
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    found = check(data)
    assert [f.level for f in found] == [level], found
    assert words in found[0].problem
    assert found[0].fix and "\n" not in found[0].fix
    assert str(found[0]).startswith(f"{level}: ")


def test_a_ca_from_the_trust_store_is_public() -> None:
    data = {**GOOD, "tlscacert": "/pub/root.pem"}
    assert check(data) == []
    found = check(data, trusted=frozenset({c.fingerprint(PUBLIC)}))
    assert len(found) == 1 and "system trust store" in found[0].problem


def test_server_cert_near_expiry() -> None:
    later = SERVER.not_valid_after_utc - timedelta(days=5)
    found = c.check_daemon_json(GOOD, dropin_present=True, ufw_active=False, now=later,
                                read_cert=read_cert)
    assert [(f.level, "tlscert" in f.problem) for f in found] == [("warning", True)]


def test_hosts_without_dropin() -> None:
    found = check(GOOD, dropin=False)
    assert len(found) == 1 and found[0].level == "error"
    assert "-H fd://" in found[0].problem and "daemon-reload" in found[0].fix
    assert check({"debug": True}, dropin=False) == []


def test_ufw_bypass() -> None:
    found = check({}, ufw=True)
    assert len(found) == 1 and found[0].level == "warning" and "DOCKER-USER" in found[0].fix
    assert check({"iptables": False}, ufw=True) == []


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd\n", True),
        ("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --containerd=/run/c.sock\n", True),
        ("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd://\n", False),
        ("[Service]\nExecStart=/usr/bin/dockerd\n", False),
        ("[Service]\nExecStart=\n", False),
        ("[Service]\nEnvironment=X=1\n", False),
    ],
)
def test_dropin_detection(text: str, ok: bool) -> None:
    assert c.dropin_overrides_exec_start(text) is ok


def test_trust_store_fingerprints(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.crt"
    pems = [x.public_bytes(serialization.Encoding.PEM) for x in (ISRG, PUBLIC)]
    bundle.write_bytes(pems[0] + b"garbage\n-----END CERTIFICATE-----\n" + pems[1])
    assert c.trust_store_fingerprints(bundle) == {c.fingerprint(ISRG), c.fingerprint(PUBLIC)}
    assert c.trust_store_fingerprints(tmp_path / "none") == frozenset()


def test_ufw_enabled() -> None:
    assert c.ufw_enabled("# comment\nENABLED=yes\nLOGLEVEL=low\n")
    assert not c.ufw_enabled("ENABLED=no\n")


def test_check_host_reads_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(CA.cert_pem)
    dj = tmp_path / "daemon.json"
    dj.write_text(json.dumps({"hosts": ["tcp://0.0.0.0:2376"], "tls": True, "tlscacert": str(ca)}))
    ufw = tmp_path / "ufw.conf"
    ufw.write_text("ENABLED=yes\n")
    found = c.check_host(dj, now=NOW, dropin_dir=tmp_path, ufw_conf=ufw,
                         trust_store=tmp_path / "none.crt")
    messages = " | ".join(f.problem for f in found)
    assert "tls without tlsverify" in messages and "ufw" in messages
    dj.write_text("{not json")
    assert c.check_host(dj, now=NOW, dropin_dir=tmp_path)[0].level == "error"
