"""tlsbridge.daemon_tls.pki: the private CA, server and client certificates, and the re-issue decision."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsbridge.daemon_tls import pki

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NAMES = pki.Names.of(["docker.example.com"], ["192.0.2.5", "2001:db8::1"])
CA = pki.make_ca(NOW)
CA_CERT = x509.load_pem_x509_certificate(CA.cert_pem)


def _load(pair: pki.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_ca_is_p256_path_length_zero_and_long_lived() -> None:
    key = pki.load_key(CA.key_pem)
    assert isinstance(key.curve, ec.SECP256R1)
    bc = CA_CERT.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = CA_CERT.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert CA_CERT.not_valid_after_utc - NOW >= timedelta(days=3649)
    assert CA_CERT.issuer == CA_CERT.subject
    assert pki.key_matches(key, CA_CERT)


def test_server_cert_has_server_auth_and_all_names() -> None:
    cert = _load(pki.make_server_cert(CA, NAMES, NOW))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["docker.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.5"),
                                                       ipaddress.ip_address("2001:db8::1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.signed_by(cert, CA_CERT)
    assert pki.needs_reissue(cert, NOW, names=NAMES, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                             ca_cert=CA_CERT) is None


def test_client_cert_has_client_auth_and_its_name() -> None:
    pair = pki.make_client_cert(CA, "alice", NOW)
    cert = _load(pair)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert pki.key_matches(pki.load_key(pair.key_pem), cert)
    assert pki.needs_reissue(cert, NOW, usage=ExtendedKeyUsageOID.SERVER_AUTH) is not None


def test_leaf_never_outlives_its_ca() -> None:
    late = CA_CERT.not_valid_after_utc - timedelta(days=10)
    cert = _load(pki.make_client_cert(CA, "bob", late))
    assert cert.not_valid_after_utc == CA_CERT.not_valid_after_utc


def test_server_cert_needs_a_name() -> None:
    with pytest.raises(ValueError):
        pki.make_server_cert(CA, pki.Names(), NOW)


def test_names_are_normalised() -> None:
    a = pki.Names.of(["Docker.Example.COM."], ["2001:0db8:0::1"])
    assert a.as_set() == frozenset({"DNS:docker.example.com", "IP:2001:db8::1"})


SERVER = _load(pki.make_server_cert(CA, NAMES, NOW))
OTHER_CA = pki.make_ca(NOW, "another CA")
FOREIGN = _load(pki.make_server_cert(OTHER_CA, NAMES, NOW))
END = SERVER.not_valid_after_utc


@pytest.mark.parametrize(
    ("cert", "now", "names", "expected"),
    [
        (SERVER, NOW, NAMES, None),
        (None, NOW, NAMES, "missing"),
        (SERVER, END - timedelta(days=31), NAMES, None),
        (SERVER, END - timedelta(days=30), NAMES, "expires"),
        (SERVER, END - timedelta(days=1), NAMES, "expires"),
        (SERVER, END + timedelta(days=1), NAMES, "expires"),
        (SERVER, NOW - timedelta(days=1), NAMES, "not valid before"),
        (SERVER, NOW, pki.Names.of(["docker.example.com"], ["192.0.2.5"]), "names changed"),
        (SERVER, NOW, pki.Names.of(["other.example.com"], ["192.0.2.5", "2001:db8::1"]),
         "names changed"),
        (FOREIGN, NOW, NAMES, "not signed by the current CA"),
    ],
)
def test_needs_reissue_table(cert: x509.Certificate | None, now: datetime,
                             names: pki.Names, expected: str | None) -> None:
    reason = pki.needs_reissue(cert, now, names=names, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                               ca_cert=CA_CERT)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_ca_renewal_keeps_key_and_subject_so_old_leaves_still_chain() -> None:
    key = pki.load_key(CA.key_pem)
    assert pki.needs_ca_renewal(CA_CERT, key, NOW) is None
    late = CA_CERT.not_valid_after_utc - pki.LEAF_LIFETIME - timedelta(days=1)
    assert pki.needs_ca_renewal(CA_CERT, key, late) is not None
    renewed = _load(pki.make_ca(late, "tlsbridge Docker engine CA", key=key))
    assert renewed.subject == CA_CERT.subject
    assert pki.signed_by(SERVER, renewed)
    other_key = pki.load_key(OTHER_CA.key_pem)
    assert pki.needs_ca_renewal(CA_CERT, other_key, NOW) == "key does not match the certificate"
