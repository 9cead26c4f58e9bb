"""`daemon-tls` plan and apply: a private CA, the engine's certificate, client certificates,
daemon.json and the systemd drop-in, written into one folder.

Layout of the output folder (Docker's own walkthrough names):

    ca.pem, ca-key.pem                    the private CA (key 0600), reused once created; with
                                          --ca-dir DIR the key (and a copy of ca.pem) live in DIR
    server-cert.pem, server-key.pem       the engine's certificate (unless --server-cert-site)
    clients/NAME/{ca,cert,key}.pem        one folder per client, as DOCKER_CERT_PATH expects
    daemon.json                           tls + tlsverify, hosts = unix socket + tcp listener
    docker.service.d/tlsbridge.conf       the drop-in that removes `-H fd://`

Level-triggered and idempotent: everything is read and decided first (a bad input raises before
any file is touched), then only files whose bytes differ are written, each atomically. Modes are
set explicitly whatever the umask: folders 0700 (clients/ and the CA's), docker.service.d 0755,
keys 0600, certificates and configs 0644. The CA's key is read only to sign (authority.py).

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
from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsbridge.adapters.files import write_atomic
from tlsbridge.daemon_tls import pki
from tlsbridge.daemon_tls.authority import CaState, DaemonTlsError, ensure_ca, read_file
from tlsbridge.daemon_tls.settings import DaemonTlsSettings
from tlsbridge.errors import UsageError
from tlsbridge.render import daemon_json as render

__all__ = ["DaemonTlsError", "DaemonTlsSettings", "Result", "ensure_daemon_tls",
           "server_cert_expiry"]

logger = logging.getLogger(__name__)

KEY_MODE = 0o600
CERT_MODE = 0o644
PRIVATE_DIR_MODE = 0o700  # the output folder when created, clients/, each client's, the CA's
PUBLIC_DIR_MODE = 0o755  # docker.service.d: installed under /etc/systemd/system as it is


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
    ca = ensure_ca(out, settings, now, result.events)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    if ca.stored_key is not None:
        files[ca.key_path] = (ca.stored_key, KEY_MODE)
    files[out / "ca.pem"] = (ca.cert_pem, CERT_MODE)
    if ca.key_path.parent != out:
        files[ca.key_path.parent / "ca.pem"] = (ca.cert_pem, CERT_MODE)

    if settings.server_cert_site is None:
        server = _ensure_leaf(out / "server-cert.pem", out / "server-key.pem", now, ca_cert,
                              ExtendedKeyUsageOID.SERVER_AUTH, settings.names, "server",
                              lambda: pki.make_server_cert(ca.signer("the server certificate"),
                                                           settings.names, now), result)
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
                            partial(_client_cert, ca, client, now), result)
        files[d / "key.pem"] = (pair.key_pem, KEY_MODE)
        files[d / "cert.pem"] = (pair.cert_pem, CERT_MODE)
        files[d / "ca.pem"] = (client_ca, CERT_MODE)
        result.clients.append(render.ClientInfo(client, str(d)))

    hosts = render.hosts(settings.unix_socket, settings.listen_host, settings.listen_port)
    data = render.render_daemon_json(existing, hosts=hosts, ca=str(out / "ca.pem"),
                                     cert=str(cert_path), key=str(key_path))
    files[result.daemon_json] = (render.daemon_json_text(data).encode(), CERT_MODE)
    files[result.dropin] = (render.render_dropin(settings.dockerd).encode(), CERT_MODE)

    _make_folders(out, settings, ca.key_path.parent)
    for path, (content, mode) in files.items():
        if _write_if_changed(path, content, mode):
            result.written.append(path)
            logger.debug("daemon-tls: wrote %s", path)
        else:
            result.unchanged.append(path)
    if ca.stale_key is not None:  # moved to --ca-dir: the copy next to the engine's files goes
        ca.stale_key.unlink(missing_ok=True)
        result.events.append(f"moved the CA key from {ca.stale_key} to {ca.key_path}")
        logger.info("daemon-tls: moved the CA key from %s to %s", ca.stale_key, ca.key_path)
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


def _read_merge(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    raw = read_file(path)
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


def _client_cert(ca: CaState, client: str, now: datetime) -> pki.KeyPair:
    return pki.make_client_cert(ca.signer(f"client {client}'s certificate"), client, now)


def _ensure_leaf(cert_path: Path, key_path: Path, now: datetime, ca_cert: x509.Certificate,
                 usage: x509.ObjectIdentifier, names: pki.Names | None, what: str,
                 issue: Callable[[], pki.KeyPair], result: Result) -> pki.KeyPair:
    cert_pem, key_pem = read_file(cert_path), read_file(key_path)
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
    pem = read_file(chain)
    if pem is None or read_file(key) is None:
        raise DaemonTlsError(
            f"site {settings.server_cert_site} has no published certificate at {chain}: "
            f"run `tlsbridge renew --site {settings.server_cert_site}` first")
    bundle = read_file(bundle_path) if bundle_path is not None else None
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


def _make_folders(out: Path, settings: DaemonTlsSettings, key_dir: Path) -> None:
    """Create (or fix) every folder with an explicit mode, whatever the umask."""
    try:
        _mkdir(out, PRIVATE_DIR_MODE, fix=False)
        mode = stat.S_IMODE(out.stat().st_mode)
        if mode & 0o022:  # others could swap files in it (daemon.json, the drop-in)
            os.chmod(out, mode & ~0o022)
            logger.info("daemon-tls: %s was writable by others: now %o", out, mode & ~0o022)
        _mkdir(out / "docker.service.d", PUBLIC_DIR_MODE)
        if settings.clients:
            _mkdir(out / "clients", PRIVATE_DIR_MODE)
            for client in settings.clients:
                _mkdir(out / "clients" / client, PRIVATE_DIR_MODE)
        if key_dir != out:
            _mkdir(key_dir, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise DaemonTlsError(f"cannot create {exc.filename}: {exc.strerror or exc}") from exc


def _mkdir(path: Path, mode: int, *, fix: bool = True) -> None:
    """`path` with `mode`; missing parents are made 0755. `fix`: also correct an existing one."""
    if not path.parent.is_dir():
        _mkdir(path.parent, PUBLIC_DIR_MODE, fix=False)
    try:
        path.mkdir(mode)
    except FileExistsError:
        if not fix or stat.S_IMODE(path.stat().st_mode) == mode:
            return
        logger.info("daemon-tls: fixed the mode of %s to %o", path, mode)
    os.chmod(path, mode)  # mkdir's mode is narrowed by the umask; chmod is not


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
