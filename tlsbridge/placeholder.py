"""Self-signed placeholder certificates, so nginx can start before the real one exists.

nginx refuses to start when an `ssl_certificate` file is missing, and the HTTP-01 challenge
needs nginx running: a site with nothing published first gets a short-lived self-signed
certificate (subject O = certinfo.PLACEHOLDER_ORG, which is how it is recognised everywhere).
It is only ever published, never written into certbot's tree, so the renewal policy, which
reads certbot's lineage, can never mistake it for an issued certificate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tlsbridge.adapters.publish import CertFiles
from tlsbridge.certinfo import PLACEHOLDER_ORG
from tlsbridge.model import ObservedCert

LIFETIME = timedelta(days=7)
REFRESH_BEFORE = timedelta(days=1)  # a placeholder this close to expiry is made anew
_CN_PREFIX = "tlsbridge placeholder for "


def make_placeholder(site: str, domains: tuple[str, ...], now: datetime,
                     lifetime: timedelta = LIFETIME) -> CertFiles:
    """A fresh ECDSA P-256 key and a self-signed certificate for `domains` (no I/O)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLACEHOLDER_ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, (_CN_PREFIX + site)[:64]),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # Self-signed: the "chain" is the certificate itself, so every published name is a valid PEM.
    return CertFiles(fullchain=cert_pem, privkey=key_pem, chain=cert_pem, cert=cert_pem)


def needs_placeholder(published: ObservedCert | None, domains: tuple[str, ...], now: datetime) -> bool:
    """Whether to publish a (new) placeholder: nothing published, or an old/mismatched placeholder."""
    if published is None:
        return True
    if not published.placeholder:
        return False
    return published.not_after - now < REFRESH_BEFORE or set(published.domains) != set(domains)
