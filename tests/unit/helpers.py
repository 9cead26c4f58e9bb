"""Small builders shared by unit tests: certificates made with cryptography, fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsbridge.adapters.publish import CertFiles

T0 = datetime(2026, 6, 1, tzinfo=UTC)

_CA_KEY = ec.generate_private_key(ec.SECP256R1())
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit test CA")])


def make_cert(domains: tuple[str, ...] = ("example.com",), not_before: datetime = T0,
              lifetime: timedelta = timedelta(days=90), serial: int | None = None,
              key: ec.EllipticCurvePrivateKey | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(_CA_NAME)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(_CA_KEY.public_key()), critical=False)
    )
    return builder.sign(_CA_KEY, hashes.SHA256()), key


def cert_files(domains: tuple[str, ...] = ("example.com",), **kw: object) -> CertFiles:
    cert, key = make_cert(domains, **kw)  # type: ignore[arg-type]
    pem = cert.public_bytes(serialization.Encoding.PEM)
    ca = b"-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n"
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return CertFiles(fullchain=pem + ca, privkey=key_pem, chain=ca, cert=pem)
