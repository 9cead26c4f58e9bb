"""Checks of a Docker daemon.json's remote-access setup, for `tlsbridge doctor`.

`check_daemon_json` is pure: the caller passes the parsed daemon.json, the facts about the host
(`dropin_present`, `ufw_active`), the time and a certificate reader. `check_host` gathers those
facts from the local files and calls it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tlsbridge.doctor import ERROR, WARNING, Finding

EXPIRY_WARNING = timedelta(days=30)
PUBLIC_CA_ORGS = ("let's encrypt", "internet security research group", "isrg")
FIX_TLS = ("tlsbridge daemon-tls --out /etc/docker/tlsbridge --merge /etc/docker/daemon.json "
           "--hostname HOST --client NAME, then install the files it prints")
TRUST_STORE = Path("/etc/ssl/certs/ca-certificates.crt")

# Reads a PEM file: its certificates, None when the file does not exist; ValueError/OSError
# when it cannot be read or parsed.
ReadCert = Callable[[str], Sequence[x509.Certificate] | None]


def check_daemon_json(data: Mapping[str, Any], *, dropin_present: bool, ufw_active: bool,
                      now: datetime, read_cert: ReadCert,
                      trusted_fingerprints: frozenset[str] = frozenset()) -> list[Finding]:
    """Everything wrong with a daemon.json's remote access, most serious first. Pure.

    `trusted_fingerprints`: SHA-256 hex fingerprints of the system trust store's roots; a
    tlscacert among them is a public CA.
    """
    found: list[Finding] = []
    hosts = _hosts(data.get("hosts"))
    tcp = [h for h in hosts if _is_tcp(h)]
    verify = data.get("tlsverify") is True
    tls = data.get("tls") is True or verify
    if tcp and not tls:
        found.append(Finding(ERROR, f"daemon.json listens on {', '.join(tcp)} without TLS: "
                             "anyone who reaches the port is root on this host", FIX_TLS))
    elif tcp and not verify:
        found.append(Finding(ERROR, f"daemon.json has tls without tlsverify on {', '.join(tcp)}: "
                             "no client is authenticated, anyone who reaches the port is root "
                             "on this host", f'set "tlsverify": true with a private CA: {FIX_TLS}'))
    if verify and not data.get("tlscacert"):
        found.append(Finding(WARNING, "tlsverify is on but tlscacert is not set: dockerd falls "
                             "back to ~/.docker/ca.pem", f'set "tlscacert": {FIX_TLS}'))

    ca_path = data.get("tlscacert")
    if isinstance(ca_path, str) and ca_path:
        certs = _read(ca_path, "tlscacert", read_cert, found)
        for cert in certs:
            public = _public_ca(cert, trusted_fingerprints)
            if public:
                found.append(Finding(
                    ERROR, f"tlscacert {ca_path} is a public CA ({public}): client certificates "
                    "must come from a private CA (and Let's Encrypt ones cannot authenticate "
                    "clients)", FIX_TLS))
                break
        found += _expiry(certs, "tlscacert", ca_path, now)
    cert_path = data.get("tlscert")
    if isinstance(cert_path, str) and cert_path:
        found += _expiry(_read(cert_path, "tlscert", read_cert, found)[:1], "tlscert",
                         cert_path, now)

    if hosts and not dropin_present:
        found.append(Finding(
            ERROR, "daemon.json sets hosts, which conflicts with systemd's `dockerd -H fd://`: "
            "dockerd will refuse to start",
            "install a drop-in with `ExecStart=` and `ExecStart=/usr/bin/dockerd` as /etc/systemd/"
            "system/docker.service.d/tlsbridge.conf (tlsbridge daemon-tls writes one), then "
            "systemctl daemon-reload && systemctl restart docker"))
    if ufw_active and data.get("iptables", True) is not False:
        found.append(Finding(
            WARNING, "ufw is active, but Docker publishes container ports through its own "
            "iptables chains: ufw rules do not filter them",
            "publish ports on 127.0.0.1 only (-p 127.0.0.1:8080:80) or filter in the "
            "DOCKER-USER chain"))
    return found


def _hosts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [h for h in value if isinstance(h, str)]
    return []


def _is_tcp(host: str) -> bool:
    scheme = host.split("://", 1)[0] if "://" in host else "tcp"  # dockerd: no scheme = tcp
    return scheme == "tcp"


def _read(path: str, key: str, read_cert: ReadCert,
          found: list[Finding]) -> Sequence[x509.Certificate]:
    try:
        certs = read_cert(path)
    except (OSError, ValueError) as exc:
        found.append(Finding(ERROR, f"{key} {path} cannot be read: {exc}",
                             f"point {key} at a PEM certificate file"))
        return []
    if certs is None:
        found.append(Finding(ERROR, f"{key} {path} does not exist: dockerd will not start",
                             f"create it ({FIX_TLS})"))
        return []
    return certs


def _orgs(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def _public_ca(cert: x509.Certificate, trusted: frozenset[str]) -> str | None:
    for org in _orgs(cert.subject) + _orgs(cert.issuer):
        if any(p in org.lower() for p in PUBLIC_CA_ORGS):
            return f"O={org}"
    if fingerprint(cert) in trusted:
        return "in the system trust store"
    return None


def _expiry(certs: Sequence[x509.Certificate], key: str, path: str,
            now: datetime) -> list[Finding]:
    out: list[Finding] = []
    for cert in certs:
        end = cert.not_valid_after_utc
        what = f"{key} {path} ({cert.subject.rfc4514_string()})"
        fix = "re-run tlsbridge daemon-tls (it re-issues it), then systemctl restart docker"
        if end <= now:
            out.append(Finding(ERROR, f"{what} expired {end:%Y-%m-%d}", fix))
        elif end - now < EXPIRY_WARNING:
            out.append(Finding(WARNING, f"{what} expires {end:%Y-%m-%d}, in "
                               f"{(end - now).days} days", fix))
    return out


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def dropin_overrides_exec_start(text: str) -> bool:
    """Whether a docker.service drop-in clears ExecStart and starts dockerd without -H. Pure."""
    lines = [ln.strip() for ln in text.splitlines()]
    starts = [ln.split("=", 1)[1].strip() for ln in lines if re.match(r"ExecStart\s*=", ln)]
    if "" not in starts:
        return False
    after = starts[len(starts) - 1 - starts[::-1].index(""):][1:]
    return bool(after) and not any(re.search(r"(^|\s)(-H|--host)(\s|=|$)", s) for s in after)


def ufw_enabled(conf_text: str) -> bool:
    """Whether /etc/ufw/ufw.conf says ENABLED=yes. Pure."""
    return any(re.fullmatch(r"ENABLED\s*=\s*['\"]?yes['\"]?", ln.strip(), re.IGNORECASE)
               for ln in conf_text.splitlines())


def read_pem_certs(path: str) -> list[x509.Certificate] | None:
    """A ReadCert that reads the file system."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return x509.load_pem_x509_certificates(data)


def trust_store_fingerprints(path: Path = TRUST_STORE) -> frozenset[str]:
    """SHA-256 fingerprints of a PEM bundle's certificates; unparsable entries are skipped."""
    try:
        text = path.read_bytes()
    except OSError:
        return frozenset()
    out: set[str] = set()
    end = b"-----END CERTIFICATE-----"
    for block in text.split(end)[:-1]:
        try:
            with warnings.catch_warnings():  # some roots have serials RFC 5280 disallows
                warnings.simplefilter("ignore")
                out.add(fingerprint(x509.load_pem_x509_certificate(block + end)))
        except ValueError:
            continue
    return frozenset(out)


def check_host(daemon_json: Path = Path("/etc/docker/daemon.json"), *, now: datetime,
               dropin_dir: Path = Path("/etc/systemd/system/docker.service.d"),
               ufw_conf: Path = Path("/etc/ufw/ufw.conf"),
               trust_store: Path = TRUST_STORE) -> list[Finding]:
    """Read this host's files and run `check_daemon_json` on them."""
    try:
        data = json.loads(daemon_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        return [Finding(ERROR, f"{daemon_json} cannot be read: {exc}", "fix its JSON syntax")]
    if not isinstance(data, dict):
        return [Finding(ERROR, f"{daemon_json} is not a JSON object", "fix its JSON syntax")]
    systemd = Path("/run/systemd/system").is_dir()
    dropin = not systemd or any(
        dropin_overrides_exec_start(p.read_text(errors="replace"))
        for p in sorted(dropin_dir.glob("*.conf")) if p.is_file())
    try:
        ufw = ufw_enabled(ufw_conf.read_text(errors="replace"))
    except OSError:
        ufw = False
    return check_daemon_json(data, dropin_present=dropin, ufw_active=ufw, now=now,
                             read_cert=read_pem_certs,
                             trusted_fingerprints=trust_store_fingerprints(trust_store))
