"""A small private PKI for the Docker engine's mutual TLS: a CA, server and client certificates.

Pure apart from key generation (randomness): every function takes `now` and returns PEM bytes,
nothing touches the filesystem. Keys are ECDSA P-256 (what Docker's Go TLS stack handles
everywhere), certificates are signed with SHA-256.

Why a private CA: Docker authenticates clients by `tlscacert`; a public CA would let anyone with
one of its certificates in, and Let's Encrypt certificates cannot authenticate clients anyway.

A new CA carries nameConstraints (critical): it may vouch only for the engine's own DNS names and
IP addresses, so a ca.pem that ends up in some trust store cannot be used to impersonate other
hosts. Client certificates have no subjectAltName, which name constraints do not restrict.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
# dockerd reads its certificate only at start (a SIGHUP does not reload TLS), so leaf
# certificates are long-lived and re-issued a month before they expire.
LEAF_LIFETIME = timedelta(days=825)
REISSUE_BEFORE = timedelta(days=30)
BACKDATE = timedelta(minutes=5)  # tolerate clients whose clock is a little behind
ORG = "tlsbridge"


@dataclass(frozen=True)
class KeyPair:
    """A private key and its certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class Names:
    """The subjectAltNames of a server certificate: DNS names and IP addresses (normalised)."""

    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    @classmethod
    def of(cls, dns: Iterable[str], ips: Iterable[str]) -> Names:
        return cls(tuple(d.lower().rstrip(".") for d in dns),
                   tuple(str(ipaddress.ip_address(i)) for i in ips))

    def as_set(self) -> frozenset[str]:
        return frozenset([f"DNS:{d}" for d in self.dns] + [f"IP:{i}" for i in self.ips])

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def encrypted_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """PKCS#8 PEM encrypted with `passphrase` (the best scheme the library offers)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase))


def is_encrypted(pem: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem


def load_key(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from PEM (decrypted with `password` when it is encrypted).

    Raises ValueError for anything else, a wrong password, or an encrypted key without one.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=password if is_encrypted(pem) else None)
    except TypeError as exc:  # encrypted without a password
        raise ValueError(str(exc)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an ECDSA private key")
    return key


def _key_usage(*, sign: bool = True, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def name_constraints(names: Names) -> x509.NameConstraints | None:
    """Permitted subtrees: exactly the engine's DNS names (and their subdomains) and IPs."""
    if not names:
        return None
    permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in names.dns]
    permitted += [x509.IPAddress(ipaddress.ip_network(i)) for i in names.ips]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def ca_permits(ca_cert: x509.Certificate, names: Names) -> bool:
    """Whether the CA's nameConstraints (if any) allow every one of `names`. Pure."""
    try:
        nc = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    allowed = nc.permitted_subtrees or []
    dns_ok = [g.value.lower() for g in allowed if isinstance(g, x509.DNSName)]
    nets = [g.value for g in allowed if isinstance(g, x509.IPAddress)]
    for d in names.dns:
        if dns_ok and not any(d == p or d.endswith("." + p) for p in dns_ok):
            return False
    for i in names.ips:
        ip = ipaddress.ip_address(i)
        if nets and not any(isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
                            and ip.version == n.version and ip in n for n in nets):
            return False
    return True


def make_ca(now: datetime, common_name: str = "tlsbridge Docker engine CA",
            key: ec.EllipticCurvePrivateKey | None = None, names: Names | None = None) -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (path length 0).

    `key` re-creates the certificate for an existing CA key (same subject: certificates it
    signed before still chain to it). `names`: the only server names it may sign for
    (nameConstraints); None or empty: unconstrained.
    """
    key = key or _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    constraints = name_constraints(names or Names())
    if constraints is not None:
        cert = cert.add_extension(constraints, critical=True)
    return KeyPair(key_pem(key), cert_pem(cert.sign(key, hashes.SHA256())))


def _leaf(ca: KeyPair, subject_cn: str, usage: x509.ObjectIdentifier, now: datetime,
          sans: list[x509.GeneralName], lifetime: timedelta) -> KeyPair:
    ca_key = load_key(ca.key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                                 x509.NameAttribute(NameOID.COMMON_NAME, subject_cn[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(key_pem(key), cert_pem(builder.sign(ca_key, hashes.SHA256())))


def make_server_cert(ca: KeyPair, names: Names, now: datetime,
                     lifetime: timedelta = LEAF_LIFETIME) -> KeyPair:
    """A serverAuth certificate for the engine with `names` as subjectAltNames."""
    if not names:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in names.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in names.ips]
    cn = names.dns[0] if names.dns else names.ips[0]
    return _leaf(ca, cn, ExtendedKeyUsageOID.SERVER_AUTH, now, sans, lifetime)


def make_client_cert(ca: KeyPair, client: str, now: datetime,
                     lifetime: timedelta = LEAF_LIFETIME) -> KeyPair:
    """A clientAuth certificate whose Common Name is the client's name."""
    return _leaf(ca, client, ExtendedKeyUsageOID.CLIENT_AUTH, now, [], lifetime)


def cert_names(cert: x509.Certificate) -> Names:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Names()
    return Names.of(san.get_values_for_type(x509.DNSName),
                    [str(i) for i in san.get_values_for_type(x509.IPAddress)])


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether `ca_cert`'s key signed `cert` (and the issuer name matches)."""
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


_USAGE_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
                ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


def _usages(cert: x509.Certificate) -> frozenset[x509.ObjectIdentifier]:
    try:
        return frozenset(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return frozenset()


def needs_reissue(cert: x509.Certificate | None, now: datetime, *,
                  names: Names | None = None, usage: x509.ObjectIdentifier | None = None,
                  ca_cert: x509.Certificate | None = None,
                  before: timedelta = REISSUE_BEFORE) -> str | None:
    """Why a leaf certificate must be issued again, or None when it is fine. Pure.

    Checks, in order: it exists, was signed by `ca_cert`, carries the extended key `usage`,
    has exactly `names` as subjectAltNames, is valid now and has more than `before` left.
    """
    if cert is None:
        return "missing"
    if ca_cert is not None and not signed_by(cert, ca_cert):
        return "not signed by the current CA"
    if usage is not None and usage not in _usages(cert):
        return f"lacks extended key usage {_USAGE_NAMES.get(usage, usage.dotted_string)}"
    if names is not None and cert_names(cert).as_set() != names.as_set():
        have = ", ".join(sorted(cert_names(cert).as_set())) or "none"
        return f"names changed (has {have})"
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%MZ}"
    if cert.not_valid_after_utc - now <= before:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%MZ}"
    return None


def needs_ca_renewal(cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey,
                     now: datetime) -> str | None:
    """Why the CA certificate must be re-made for its existing key, or None. Pure.

    It is renewed while a full leaf lifetime still fits, so leaves never get cut short by it.
    """
    if cert is None:
        return "unreadable certificate"
    if not key_matches(key, cert):
        return "key does not match the certificate"
    if cert.not_valid_after_utc - now <= LEAF_LIFETIME + REISSUE_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%MZ}"
    return None


def key_matches(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(key.public_key().public_bytes(der, spki)
                == cert.public_key().public_bytes(der, spki))
