"""Pure: PEM bytes -> ObservedCert, with `cryptography` (no certbot process, no network).

`cryptography` is imported when a certificate is first parsed, not with this module: the
sidecar remembers parsed certificates (adapters/certmemo.py), and while nothing changes it never
needs the parser, whose import alone holds ~8 MiB of resident memory.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from tlsbridge.model import ObservedCert

if TYPE_CHECKING:
    from cryptography import x509

# The Organization of tlsbridge's self-signed bootstrap certificates: how we recognise them.
PLACEHOLDER_ORG = "tlsbridge placeholder (not issued by a CA)"


def parse_pem(pem: bytes) -> ObservedCert:
    """The first certificate of a PEM blob. Raises ValueError if there is none."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    return from_x509(cert)


def from_x509(cert: x509.Certificate) -> ObservedCert:
    """What tlsbridge needs to know about a certificate (names, dates, key type, ARI id...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    der = cert.public_bytes(Encoding.DER)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        domains = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        domains = ()
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    placeholder = any(a.value == PLACEHOLDER_ORG for a in orgs)
    return ObservedCert(
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        domains=domains,
        key_type=key_type_of(cert.public_key()),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=hashlib.sha256(der).hexdigest(),
        placeholder=placeholder,
        ari_cert_id=ari_cert_id(cert),
    )


def key_type_of(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ecdsa", "secp384r1": "ecdsa-p384"}.get(key.curve.name, f"ecdsa-{key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    return type(key).__name__


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) '.' base64url(serial DER bytes)."""
    from cryptography import x509

    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if not aki.key_identifier:
        return None
    serial = cert.serial_number
    # The DER INTEGER content octets: big-endian two's complement, a leading 0 if the top bit is set.
    raw = serial.to_bytes((serial.bit_length() + 8) // 8 or 1, "big")
    return f"{_b64(aki.key_identifier)}.{_b64(raw)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    """Whether a PEM private key belongs to the first certificate of a PEM blob."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki))
