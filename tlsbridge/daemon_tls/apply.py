"""`daemon-tls` plan and apply: a private CA, the engine's certificate, client certificates,
daemon.json and the systemd drop-in, written into one folder.

Layout of the output folder (Docker's own walkthrough names):

    ca.pem, ca-key.pem                    the private CA (key 0600), reused once created
    server-cert.pem, server-key.pem       the engine's certificate (unless --server-cert-site)
    clients/NAME/{ca,cert,key}.pem        one folder per client, as DOCKER_CERT_PATH expects
    daemon.json                           tls + tlsverify, hosts = unix socket + tcp listener
    docker.service.d/tlsbridge.conf       the drop-in that removes `-H fd://`

Level-triggered and idempotent: everything is read and decided first (a bad input raises before
any file is touched), then only files whose bytes differ are written, each atomically.
`ensure_daemon_tls` is also what the long-running `run` calls to keep the certificates fresh.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsbridge.adapters.files import write_atomic
from tlsbridge.daemon_tls import pki
from tlsbridge.daemon_tls.settings import DaemonTlsSettings
from tlsbridge.errors import TlsbridgeError, UsageError
from tlsbridge.render import daemon_json as render

__all__ = ["DaemonTlsError", "DaemonTlsSettings", "Result", "ensure_daemon_tls",
           "server_cert_expiry"]

logger = logging.getLogger(__name__)

KEY_MODE = 0o600
CERT_MODE = 0o644


class DaemonTlsError(TlsbridgeError):
    """The engine's TLS files could not be prepared (nothing written) or written (named)."""


@dataclass
class Result:
    settings: DaemonTlsSettings
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # what was (re-)issued and why
    server_not_after: datetime | None = None
    clients: list[render.ClientInfo] = field(default_factory=list)
    restart_needed: bool = False  # dockerd reads daemon.json and its certificate only at start

    @property
    def changed(self) -> bool:
        return bool(self.written)

    @property
    def daemon_json(self) -> Path:
        return self.settings.out / "daemon.json"

    @property
    def dropin(self) -> Path:
        return self.settings.out / "docker.service.d" / render.DROPIN_NAME


def ensure_daemon_tls(settings: DaemonTlsSettings, now: datetime) -> Result:
    """Bring the output folder to the desired state; write only what differs.

    Raises UsageError (exit 2) for an unreadable --merge file and DaemonTlsError (exit 1) for
    a CA key that went missing or a site without a published certificate; in both cases
    nothing has been written.
    """
    out = settings.out
    result = Result(settings)
    files: dict[Path, tuple[bytes, int]] = {}  # desired content, in write order

    existing = _read_merge(settings.merge)
    ca = _ensure_ca(out, settings, now, result)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    files[out / "ca-key.pem"] = (ca.key_pem, KEY_MODE)
    files[out / "ca.pem"] = (ca.cert_pem, CERT_MODE)

    if settings.server_cert_site is None:
        server = _ensure_leaf(out / "server-cert.pem", out / "server-key.pem", now, ca_cert,
                              ExtendedKeyUsageOID.SERVER_AUTH, settings.names, "server",
                              lambda: pki.make_server_cert(ca, settings.names, now), result)
        files[out / "server-key.pem"] = (server.key_pem, KEY_MODE)
        files[out / "server-cert.pem"] = (server.cert_pem, CERT_MODE)
        cert_path, key_path = out / "server-cert.pem", out / "server-key.pem"
        issued = x509.load_pem_x509_certificate(server.cert_pem)
        result.server_not_after = issued.not_valid_after_utc
        client_ca = ca.cert_pem
    else:
        cert_path, key_path, client_ca = _site_cert(settings, result)

    for client in settings.clients:
        d = out / "clients" / client
        pair = _ensure_leaf(d / "cert.pem", d / "key.pem", now, ca_cert,
                            ExtendedKeyUsageOID.CLIENT_AUTH, None, f"client {client}",
                            partial(pki.make_client_cert, ca, client, now), result)
        files[d / "key.pem"] = (pair.key_pem, KEY_MODE)
        files[d / "cert.pem"] = (pair.cert_pem, CERT_MODE)
        files[d / "ca.pem"] = (client_ca, CERT_MODE)
        result.clients.append(render.ClientInfo(client, str(d)))

    hosts = render.hosts(settings.unix_socket, settings.listen_host, settings.listen_port)
    data = render.render_daemon_json(existing, hosts=hosts, ca=str(out / "ca.pem"),
                                     cert=str(cert_path), key=str(key_path))
    files[result.daemon_json] = (render.daemon_json_text(data).encode(), CERT_MODE)
    files[result.dropin] = (render.render_dropin(settings.dockerd).encode(), CERT_MODE)

    for path, (content, mode) in files.items():
        if _write_if_changed(path, content, mode):
            result.written.append(path)
            logger.debug("daemon-tls: wrote %s", path)
        else:
            result.unchanged.append(path)
    server_files = {result.daemon_json, out / "server-cert.pem", out / "server-key.pem",
                    out / "ca.pem"}
    result.restart_needed = any(p in server_files for p in result.written)
    return result


def server_cert_expiry(out_dir: Path) -> datetime | None:
    """notAfter of the engine's certificate that `out_dir/daemon.json` points at, or None."""
    path = out_dir / "server-cert.pem"
    try:
        data = json.loads((out_dir / "daemon.json").read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("tlscert"), str):
            path = Path(data["tlscert"])
    except (OSError, ValueError):
        pass
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


# -- deciding -------------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DaemonTlsError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_merge(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    raw = _read(path)
    if raw is None:  # a fresh host has no /etc/docker/daemon.json yet
        logger.info("daemon-tls: %s does not exist; merging into an empty daemon.json", path)
        return {}
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--merge {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--merge {path}: a daemon.json must be a JSON object")
    return data


def _ensure_ca(out: Path, settings: DaemonTlsSettings, now: datetime,
               result: Result) -> pki.KeyPair:
    key_pem, cert_pem = _read(out / "ca-key.pem"), _read(out / "ca.pem")
    cn = f"tlsbridge Docker engine CA ({settings.connect_host})"[:64]
    if key_pem is None and cert_pem is not None:
        # A new CA would silently lock out every client certificate issued so far.
        raise DaemonTlsError(
            f"{out / 'ca-key.pem'} is missing but {out / 'ca.pem'} exists: restore the key, or "
            f"remove {out / 'ca.pem'} to create a new CA (every client then needs a new "
            "certificate)")
    if key_pem is None:
        result.events.append("created a new private CA")
        logger.info("daemon-tls: created a private CA in %s", out)
        return pki.make_ca(now, cn)
    try:
        key = pki.load_key(key_pem)
    except ValueError as exc:
        raise DaemonTlsError(f"{out / 'ca-key.pem'} is not an ECDSA private key: {exc}") from None
    reason = "missing"
    if cert_pem is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            cert = None
        reason = pki.needs_ca_renewal(cert, key, now) or ""
        if not reason:
            return pki.KeyPair(key_pem, cert_pem)
        if cert is not None and _cn(cert):
            cn = _cn(cert)
    # Same key and subject: certificates it signed before still chain to the new one.
    ca = pki.make_ca(now, cn, key=key)
    result.events.append(f"re-created the CA certificate for the existing CA key ({reason})")
    logger.info("daemon-tls: re-created the CA certificate (%s), expires %s", reason,
                x509.load_pem_x509_certificate(ca.cert_pem).not_valid_after_utc.isoformat())
    return pki.KeyPair(key_pem, ca.cert_pem)


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _ensure_leaf(cert_path: Path, key_path: Path, now: datetime, ca_cert: x509.Certificate,
                 usage: x509.ObjectIdentifier, names: pki.Names | None, what: str,
                 issue: Callable[[], pki.KeyPair], result: Result) -> pki.KeyPair:
    cert_pem, key_pem = _read(cert_path), _read(key_path)
    cert: x509.Certificate | None = None
    reason: str | None = None
    if cert_pem is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            reason = "unreadable certificate"
    reason = reason or pki.needs_reissue(cert, now, names=names, usage=usage, ca_cert=ca_cert)
    if reason is None and cert is not None and cert_pem is not None:
        if key_pem is None:
            reason = "key missing"
        else:
            try:
                if pki.key_matches(pki.load_key(key_pem), cert):
                    return pki.KeyPair(key_pem, cert_pem)
            except ValueError:
                pass
            reason = "key does not match the certificate"
    pair = issue()
    issued = x509.load_pem_x509_certificate(pair.cert_pem)
    verb = "issued" if reason == "missing" else f"re-issued ({reason})"
    result.events.append(f"{what} certificate {verb}")
    logger.info("daemon-tls: %s certificate %s, serial %x, expires %s", what, verb,
                issued.serial_number, issued.not_valid_after_utc.isoformat())
    return pair


def _site_cert(settings: DaemonTlsSettings, result: Result) -> tuple[Path, Path, bytes]:
    """The site's published certificate paths and the CA bundle clients verify it with."""
    chain, key, bundle_path = settings.site_fullchain, settings.site_privkey, settings.trust_bundle
    assert chain is not None and key is not None, "site paths are set with server_cert_site"
    pem = _read(chain)
    if pem is None or _read(key) is None:
        raise DaemonTlsError(
            f"site {settings.server_cert_site} has no published certificate at {chain}: "
            f"run `tlsbridge renew --site {settings.server_cert_site}` first")
    bundle = _read(bundle_path) if bundle_path is not None else None
    if not bundle:
        raise DaemonTlsError(f"no system CA bundle ({bundle_path or 'none found'}) to verify site "
                             f"{settings.server_cert_site}'s public certificate with: install "
                             "ca-certificates or set SSL_CERT_FILE")
    try:
        certs = x509.load_pem_x509_certificates(pem)
        roots = x509.load_pem_x509_certificates(bundle)
    except ValueError as exc:
        raise DaemonTlsError(f"{chain} or {bundle_path} is not PEM: {exc}") from None
    leaf, top = certs[0], certs[-1]
    result.server_not_after = leaf.not_valid_after_utc
    if not any(r.subject in (top.issuer, top.subject) for r in roots):
        _warn(result, f"the issuer of {chain} ({top.issuer.rfc4514_string()}) is not in "
                      f"{bundle_path}: clients will fail to verify the engine")
    covered = pki.cert_names(leaf).as_set()
    host = settings.connect_host
    if f"DNS:{host}" not in covered and f"IP:{host}" not in covered and not any(
            n.startswith("DNS:*.") and host.split(".", 1)[-1] == n[6:] for n in covered):
        _warn(result, f"{host} is not a name in {chain}; clients that connect to it will fail "
                      "to verify the engine")
    return chain, key, bundle


def _warn(result: Result, message: str) -> None:
    result.events.append(f"warning: {message}")
    logger.warning("daemon-tls: %s", message)


# -- writing --------------------------------------------------------------------------------


def _write_if_changed(path: Path, content: bytes, mode: int) -> bool:
    """Write `content` atomically (temp file + rename) unless the file already holds it.

    A file with the right bytes but a wrong mode gets its mode fixed and counts as unchanged.
    """
    try:
        st = path.stat()
        same = st.st_size == len(content) and path.read_bytes() == content
    except FileNotFoundError:
        same = False
    if same:
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
            logger.info("daemon-tls: fixed the mode of %s to %o", path, mode)
        return False
    try:
        _atomic_write(path, content, mode)
    except OSError as exc:
        raise DaemonTlsError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return True


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, content, mode)
