"""The private CA of `daemon-tls` as found on disk: its certificate, and its key only where it
is kept and readable. Decides, writes nothing (apply.py writes what this returns).

dockerd never needs the CA's key. It is read only when a certificate must be signed, so it can
live elsewhere (`--ca-dir DIR`, e.g. root-only or removable storage) or be stored encrypted with a
passphrase from $TLSBRIDGE_CA_PASSPHRASE; a copy found in the output folder is moved to --ca-dir.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from tlsbridge.daemon_tls import pki
from tlsbridge.daemon_tls.settings import DaemonTlsSettings
from tlsbridge.errors import TlsbridgeError

logger = logging.getLogger(__name__)

PASSPHRASE_ENV = "TLSBRIDGE_CA_PASSPHRASE"


class DaemonTlsError(TlsbridgeError):
    """The engine's TLS files could not be prepared (nothing written) or written (named)."""


def read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DaemonTlsError(f"cannot read {path}: {exc.strerror or exc}") from exc


@dataclass
class CaState:
    """The CA as decided: its certificate, and its key where one is available."""

    cert_pem: bytes
    key_path: Path  # where the key is kept: --ca-dir, else the output folder
    stored_key: bytes | None  # the key file's desired bytes (None: no key there, leave it so)
    signing_pem: bytes | None  # the unencrypted key, in memory only, when available
    missing: str = ""  # why there is no usable key
    stale_key: Path | None = None  # a copy in the output folder to remove (moved to --ca-dir)

    def signer(self, what: str) -> pki.KeyPair:
        if self.signing_pem is None:
            raise DaemonTlsError(f"{self.missing}; it is needed to sign {what}")
        return pki.KeyPair(self.signing_pem, self.cert_pem)


def ensure_ca(out: Path, settings: DaemonTlsSettings, now: datetime, events: list[str]) -> CaState:
    key_dir = settings.ca_dir or out
    key_path = key_dir / "ca-key.pem"
    passphrase = os.environ.get(PASSPHRASE_ENV, "").encode() or None
    key_pem, stale = read_file(key_path), None
    if key_dir != out:
        old = read_file(out / "ca-key.pem")
        if old is not None and key_pem is not None and old != key_pem:
            raise DaemonTlsError(f"two different CA keys, {out / 'ca-key.pem'} and {key_path}: "
                                 "keep the one that signed ca.pem and remove the other")
        if old is not None:
            key_pem, stale = old, out / "ca-key.pem"
    cert_pem = read_file(out / "ca.pem") or (read_file(key_dir / "ca.pem") if key_dir != out else None)
    cn = f"tlsbridge Docker engine CA ({settings.connect_host})"[:64]
    if key_pem is None and cert_pem is None:
        events.append("created a new private CA")
        logger.info("daemon-tls: created a private CA in %s", key_dir)
        made = pki.make_ca(now, cn, names=settings.names)
        stored = made.key_pem
        if passphrase:
            stored = pki.encrypted_key_pem(pki.load_key(made.key_pem), passphrase)
        return CaState(made.cert_pem, key_path, stored, made.key_pem, stale_key=stale)

    key, missing = None, ""
    if key_pem is None:
        # A new CA would silently lock out every client certificate issued so far.
        missing = (f"{key_path} is missing but {out / 'ca.pem'} exists: restore the key (or "
                   f"give --ca-dir DIR where it is kept), or remove {out / 'ca.pem'} to create "
                   "a new CA (every client then needs a new certificate)")
    else:
        try:
            key = pki.load_key(key_pem, passphrase)
        except ValueError as exc:
            if not pki.is_encrypted(key_pem):
                raise DaemonTlsError(f"{key_path} is not an ECDSA private key: {exc}") from None
            how = "wrong" if passphrase else "not set"
            missing = f"{key_path} is encrypted and ${PASSPHRASE_ENV} is {how}"
    keep = key_pem
    if key is not None and passphrase and key_pem is not None and not pki.is_encrypted(key_pem):
        keep = pki.encrypted_key_pem(key, passphrase)  # once: later runs keep these bytes
        events.append(f"encrypted the CA key with ${PASSPHRASE_ENV}")
    signing = pki.key_pem(key) if key is not None else None

    cert: x509.Certificate | None = None
    if cert_pem is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            cert = None
    reason = _ca_renewal_reason(cert, key, now, settings.names)
    if not reason and cert_pem is not None:
        return CaState(cert_pem, key_path, keep, signing, missing, stale)
    if key is None:
        raise DaemonTlsError(f"{missing}; it is needed to re-create the CA certificate ({reason})")
    if cert is not None and _cn(cert):
        cn = _cn(cert)
    # Same key and subject: certificates it signed before still chain to the new one.
    ca = pki.make_ca(now, cn, key=key, names=settings.names)
    events.append(f"re-created the CA certificate for the existing CA key ({reason})")
    logger.info("daemon-tls: re-created the CA certificate (%s), expires %s", reason,
                x509.load_pem_x509_certificate(ca.cert_pem).not_valid_after_utc.isoformat())
    return CaState(ca.cert_pem, key_path, keep, signing, missing, stale)


def _ca_renewal_reason(cert: x509.Certificate | None, key: Any, now: datetime,
                       names: pki.Names) -> str:
    """Why the CA certificate must be re-made ("" when it is fine); without the key, only what
    can be told without it."""
    if cert is None:
        return "missing"
    if key is not None:
        reason = pki.needs_ca_renewal(cert, key, now)
        if reason:
            return reason
    elif cert.not_valid_after_utc - now <= pki.LEAF_LIFETIME + pki.REISSUE_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%MZ}"
    if not pki.ca_permits(cert, names):
        return "its name constraints do not cover the engine's names; clients need the new ca.pem"
    return ""


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
