"""12.9: the engine's keys on disk.

Attacks reproduced: under umask 000 every folder daemon-tls made was 0777 (anyone could swap
daemon.json or the drop-in, or plant files); the CA's private key sat next to the engine's
files, so a copy of that folder could mint client certificates (= root on the host); the CA could
vouch for any host name. Now: explicit modes, the CA key elsewhere (--ca-dir) or encrypted,
and nameConstraints limiting the CA to the engine's own names.
"""

from __future__ import annotations

import io
import ipaddress
import os
import stat
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from cryptography import x509

from tlsbridge import cli
from tlsbridge.daemon_tls import pki


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLSBRIDGE_CONFIG", raising=False)
    monkeypatch.delenv("TLSBRIDGE_CA_PASSPHRASE", raising=False)
    return tmp_path


def daemon_tls(*extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["-q", "daemon-tls", "--out", "o", "--ip", "10.0.0.9",
                         "--hostname", "docker.example.com", "--dockerd", "/usr/bin/dockerd", *extra])
    return code, out.getvalue(), err.getvalue()


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_every_mode_is_explicit_under_umask_000(here: Path, umask_000: None) -> None:
    code, _, err = daemon_tls("--client", "alice", "--ca-dir", "ca")
    assert code == 0, err
    got = {**{f"o/{k}": v for k, v in modes(here / "o").items()},
           **{f"ca/{k}": v for k, v in modes(here / "ca").items()}}
    assert got == {
        "o/.": 0o700, "o/ca.pem": 0o644, "o/server-cert.pem": 0o644, "o/server-key.pem": 0o600,
        "o/daemon.json": 0o644, "o/docker.service.d": 0o755, "o/docker.service.d/tlsbridge.conf": 0o644,
        "o/clients": 0o700, "o/clients/alice": 0o700, "o/clients/alice/ca.pem": 0o644,
        "o/clients/alice/cert.pem": 0o644, "o/clients/alice/key.pem": 0o600,
        "ca/.": 0o700, "ca/ca.pem": 0o644, "ca/ca-key.pem": 0o600,
    }


def test_loosened_folders_are_tightened_again(here: Path) -> None:
    assert daemon_tls("--client", "alice")[0] == 0
    os.chmod(here / "o", 0o777)
    os.chmod(here / "o/clients/alice", 0o777)
    os.chmod(here / "o/docker.service.d", 0o777)
    code, out, _ = daemon_tls("--client", "alice")
    assert code == 0 and "0 file(s) written" in out
    m = modes(here / "o")
    assert (m["."], m["clients/alice"], m["docker.service.d"]) == (0o755, 0o700, 0o755)


def test_the_ca_key_can_live_elsewhere_and_is_moved_there(here: Path) -> None:
    assert daemon_tls("--client", "alice")[0] == 0
    key = (here / "o/ca-key.pem").read_bytes()
    code, _, err = daemon_tls("--client", "alice", "--ca-dir", "ca")
    assert code == 0, err
    assert not (here / "o/ca-key.pem").exists()  # nothing in the engine's folder can sign
    assert (here / "ca/ca-key.pem").read_bytes() == key
    assert (here / "ca/ca.pem").read_bytes() == (here / "o/ca.pem").read_bytes()
    # Idempotent with the key away: nothing to sign, nothing read from it.
    os.rename(here / "ca", here / "ca-offline")
    code, out, err = daemon_tls("--client", "alice")
    assert code == 0 and "0 file(s) written" in out, err
    # Signing something new needs it: one line, exit 1, nothing written.
    before = modes(here / "o")
    code, _, err = daemon_tls("--client", "alice", "--client", "bob")
    assert code == 1 and "ca-key.pem is missing" in err and "--ca-dir" in err
    assert len(err.strip().splitlines()) == 1 and modes(here / "o") == before
    assert daemon_tls("--client", "alice", "--client", "bob", "--ca-dir", "ca-offline")[0] == 0


def test_the_ca_key_can_be_encrypted_with_a_passphrase(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSBRIDGE_CA_PASSPHRASE", "correct horse")
    assert daemon_tls("--client", "alice", "--ca-dir", "ca")[0] == 0
    stored = (here / "ca/ca-key.pem").read_bytes()
    assert pki.is_encrypted(stored)
    with pytest.raises(ValueError):
        pki.load_key(stored)
    assert pki.key_matches(pki.load_key(stored, b"correct horse"), x509.load_pem_x509_certificate(
        (here / "o/ca.pem").read_bytes()))
    code, out, _ = daemon_tls("--client", "alice", "--ca-dir", "ca")
    assert code == 0 and "0 file(s) written" in out and (here / "ca/ca-key.pem").read_bytes() == stored
    monkeypatch.setenv("TLSBRIDGE_CA_PASSPHRASE", "wrong")
    code, _, err = daemon_tls("--client", "alice", "--client", "bob", "--ca-dir", "ca")
    assert code == 1 and "TLSBRIDGE_CA_PASSPHRASE is wrong" in err
    monkeypatch.delenv("TLSBRIDGE_CA_PASSPHRASE")
    code, _, err = daemon_tls("--client", "alice", "--client", "bob", "--ca-dir", "ca")
    assert code == 1 and "TLSBRIDGE_CA_PASSPHRASE is not set" in err
    assert not (here / "o/clients/bob").exists()


def test_an_existing_plain_key_is_encrypted_once(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert daemon_tls()[0] == 0
    monkeypatch.setenv("TLSBRIDGE_CA_PASSPHRASE", "pw")
    code, _, _ = daemon_tls()
    assert code == 0 and pki.is_encrypted((here / "o/ca-key.pem").read_bytes())


def test_the_ca_may_vouch_only_for_the_engines_names(here: Path) -> None:
    assert daemon_tls("--client", "alice")[0] == 0
    ca = x509.load_pem_x509_certificate((here / "o/ca.pem").read_bytes())
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert set(nc.value.permitted_subtrees or []) == {
        x509.DNSName("docker.example.com"), x509.IPAddress(ipaddress.ip_network("10.0.0.9/32"))}
    assert pki.ca_permits(ca, pki.Names.of(["docker.example.com", "a.docker.example.com"], ["10.0.0.9"]))
    assert not pki.ca_permits(ca, pki.Names.of(["www.bank.example"], []))
    assert not pki.ca_permits(ca, pki.Names.of([], ["10.0.0.10"]))
    client = x509.load_pem_x509_certificate((here / "o/clients/alice/cert.pem").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):  # nothing the constraints could refuse
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_a_leaf_for_another_host_signed_by_the_ca_is_refused_by_a_verifier(here: Path) -> None:
    """Even with the CA's key, a certificate for a host outside its names does not verify."""
    from datetime import UTC, datetime

    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    assert daemon_tls()[0] == 0
    ca = pki.KeyPair((here / "o/ca-key.pem").read_bytes(), (here / "o/ca.pem").read_bytes())
    store = Store([x509.load_pem_x509_certificate(ca.cert_pem)])
    now = datetime.now(UTC)
    for name, ok in (("docker.example.com", True), ("www.bank.example", False)):
        leaf = x509.load_pem_x509_certificate(pki.make_server_cert(ca, pki.Names.of([name], []), now).cert_pem)
        verifier = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName(name))
        if ok:
            verifier.verify(leaf, [])
        else:
            with pytest.raises(VerificationError):
                verifier.verify(leaf, [])
