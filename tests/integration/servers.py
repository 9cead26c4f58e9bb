"""Integration-test servers: a local Pebble ACME CA and the Docker engine.

``PebbleServer`` is modelled on certbot-ci's ``ACMEServer``: a context manager that writes
its own TLS material and config into a temporary directory, starts ``pebble-challtestsrv``
(as the DNS server only: every name resolves to 127.0.0.1) and ``pebble``, waits for the
ACME directory, and kills both on exit. Pebble validates HTTP-01 by connecting to
127.0.0.1:<http_01_port>, where the client under test (e.g. ``certbot --standalone
--http-01-port``) must answer.

Binaries come from ``$TLSBRIDGE_PEBBLE`` / ``$TLSBRIDGE_CHALLTESTSRV``, else the Debian 13
(pebble 2.6) copies unpacked by ``scripts/fetch-trixie.sh`` under ``tools/trixie``, else PATH.
Pebble 2.6 has no ACME profiles: its only lifetime knob is the global
``certificateValidityPeriod`` (seconds; default ~5 years), exposed as ``validity_period``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRIXIE_BIN = PROJECT_ROOT / "tools" / "trixie" / "usr" / "bin"
DOCKERD_LOG = PROJECT_ROOT / "tools" / "dockerd.log"
NGINX_IMAGE = os.environ.get("TLSBRIDGE_NGINX_IMAGE", "tlsbridge-test/nginx:latest")
BUILD_NGINX_IMAGE = PROJECT_ROOT / "scripts" / "build-nginx-image.sh"


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its logs."""


# --------------------------------------------------------------------------------------
# helpers


def find_binary(name: str, env_var: str) -> str:
    """Locate a tool: $env_var, then tools/trixie/usr/bin, then PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    local = TRIXIE_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"{name} not found: run scripts/setup.sh (fetches {TRIXIE_BIN}) or set ${env_var}"
    )


def free_port(udp_too: bool = False) -> int:
    """A currently free TCP port on 127.0.0.1 (also free for UDP when udp_too)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"<no log at {path}>"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ari_cert_id(cert: x509.Certificate | bytes | str) -> str:
    """RFC 9773 CertID: base64url(AKI keyIdentifier) '.' base64url(DER serial bytes)."""
    if isinstance(cert, str):
        cert = cert.encode()
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("certificate has no AuthorityKeyIdentifier keyIdentifier")
    serial = cert.serial_number
    # DER INTEGER content: big-endian, with a leading 0x00 when the high bit is set.
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return f"{b64url(aki.key_identifier)}.{b64url(serial_bytes)}"


def make_tls_material(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
) -> tuple[Path, Path, Path]:
    """A private CA plus a server certificate for Pebble's own HTTPS listeners.

    Returns (ca_cert_path, server_cert_path, server_key_path), all PEM.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsbridge test Pebble TLS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


# --------------------------------------------------------------------------------------
# Pebble


class PebbleServer:
    """Pebble + pebble-challtestsrv (DNS only), each on free 127.0.0.1 ports.

    Usage::

        with PebbleServer() as pebble:
            env = {**os.environ, **pebble.env}          # REQUESTS_CA_BUNDLE for certbot
            subprocess.run(["certbot", "certonly", "--server", pebble.directory_url,
                            "--standalone", "--http-01-port", str(pebble.http_01_port), ...],
                           env=env)
    """

    def __init__(
        self,
        http_01_port: int = 5002,
        *,
        tls_alpn_01_port: int = 5001,
        nonce_reject: int = 0,
        always_valid: bool = False,
        authz_reuse: int | None = None,
        validity_period: int | None = None,
        retry_after_authz: int = 0,
        retry_after_order: int = 0,
        va_nosleep: bool = True,
        strict: bool = False,
        dns_ipv4: str = "127.0.0.1",
        dns_server: str | None = None,
        eab_keys: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """
        http_01_port: where Pebble's VA connects for HTTP-01 (the client's standalone port).
        tls_alpn_01_port: where Pebble's VA connects for TLS-ALPN-01.
        nonce_reject: PEBBLE_WFE_NONCEREJECT, percentage of good nonces rejected (Pebble's own
            default is 5; ours is 0 so tests are deterministic).
        always_valid: PEBBLE_VA_ALWAYS_VALID=1, every challenge succeeds without validation.
        authz_reuse: PEBBLE_AUTHZREUSE percentage; None keeps Pebble's default (50).
        validity_period: certificateValidityPeriod in seconds (None: Pebble's ~5 years).
        retry_after_authz/order: Retry-After seconds Pebble sends while polling (0: none).
        va_nosleep: PEBBLE_VA_NOSLEEP=1 (no random 0-15 s validation delay).
        dns_ipv4: address every name resolves to (challtestsrv -defaultIPv4).
        dns_server: HOST:PORT of a real DNS server (e.g. ``BindServer.address``) that Pebble
            asks for every validation (DNS-01 TXT records, HTTP-01 addresses); no
            pebble-challtestsrv is started then.
        eab_keys: {kid: base64url HMAC key}: turns on externalAccountBindingRequired.
        workdir: where config, TLS material and logs go (default: a fresh temp dir,
            removed by stop() unless the server failed to start).
        """
        self.http_01_port = http_01_port
        self.tls_alpn_01_port = tls_alpn_01_port
        self.nonce_reject = nonce_reject
        self.always_valid = always_valid
        self.authz_reuse = authz_reuse
        self.validity_period = validity_period
        self.retry_after_authz = retry_after_authz
        self.retry_after_order = retry_after_order
        self.va_nosleep = va_nosleep
        self.strict = strict
        self.dns_ipv4 = dns_ipv4
        self.dns_server = dns_server
        self.eab_keys = dict(eab_keys or {})
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pebble-"))

        self.pebble_bin = find_binary("pebble", "TLSBRIDGE_PEBBLE")
        self.challtestsrv_bin = (find_binary("pebble-challtestsrv", "TLSBRIDGE_CHALLTESTSRV")
                                 if dns_server is None else "")

        self.acme_port = 0
        self.management_port = 0
        self.dns_port = 0
        self.challtestsrv_port = 0
        self.config_path = self.workdir / "pebble-config.json"
        self.pebble_log = self.workdir / "pebble.log"
        self.challtestsrv_log = self.workdir / "challtestsrv.log"
        self.ca_bundle = self.workdir / "tls" / "ca.pem"
        self.config: dict[str, Any] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ssl: ssl.SSLContext | None = None
        self.startup_seconds: float | None = None

    # ---- URLs ---------------------------------------------------------------------
    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    @property
    def challtestsrv_url(self) -> str:
        return f"http://127.0.0.1:{self.challtestsrv_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment additions for an ACME client talking to this Pebble."""
        return {"REQUESTS_CA_BUNDLE": str(self.ca_bundle)}

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> PebbleServer:
        if self._procs:
            raise RuntimeError("PebbleServer already started")
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _, cert, key = make_tls_material(self.workdir / "tls")
        self._ssl = ssl.create_default_context(cafile=str(self.ca_bundle))

        # A restart (stop(keep_workdir=True), then start()) keeps the ports, so the directory URL
        # stays the same while Pebble forgets every account and order, as a reset CA does.
        self.acme_port = self.acme_port or free_port()
        self.management_port = self.management_port or free_port()
        self.challtestsrv_port = self.challtestsrv_port or free_port()
        self.dns_port = self.dns_port or free_port(udp_too=True)

        pebble_cfg: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_01_port,
            "tlsPort": self.tls_alpn_01_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
            "domainBlocklist": ["blocked-domain.example"],
            "retryAfter": {"authz": self.retry_after_authz, "order": self.retry_after_order},
        }
        if self.eab_keys:
            pebble_cfg["externalAccountMACKeys"] = self.eab_keys
        if self.validity_period is not None:
            pebble_cfg["certificateValidityPeriod"] = int(self.validity_period)
        self.config = {"pebble": pebble_cfg}
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")

        env = dict(os.environ)
        env.update(self._pebble_env())

        try:
            if self.dns_server is None:
                self._start_challtestsrv(env)
            self._spawn(
                [
                    self.pebble_bin,
                    "-config",
                    str(self.config_path),
                    "-dnsserver",
                    self.dns_server or f"127.0.0.1:{self.dns_port}",
                ]
                + (["-strict"] if self.strict else []),
                self.pebble_log,
                env,
            )
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self.stop(keep_workdir=True)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_challtestsrv(self, env: dict[str, str]) -> None:
        argv = [
            self.challtestsrv_bin,
            "-management", f"127.0.0.1:{self.challtestsrv_port}",
            "-dns01", f"127.0.0.1:{self.dns_port}",
            "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
            "-defaultIPv4", self.dns_ipv4,
            "-defaultIPv6", "",
        ]
        self._spawn(argv, self.challtestsrv_log, env)

    def _pebble_env(self) -> dict[str, str]:
        env = {"PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject)}
        if self.va_nosleep:
            env["PEBBLE_VA_NOSLEEP"] = "1"
        if self.always_valid:
            env["PEBBLE_VA_ALWAYS_VALID"] = "1"
        if self.authz_reuse is not None:
            env["PEBBLE_AUTHZREUSE"] = str(self.authz_reuse)
        env.update(self.extra_env)
        return env

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._procs.append(proc)

    def _wait_ready(self, deadline: float) -> None:
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise ServerStartError(
                        f"{proc.args!r} exited with {proc.returncode} during startup\n"
                        + self.logs()
                    )
            try:
                self.get_json(self.directory_url, timeout=2)
                # challtestsrv's management API answers 404 on "/" once it is up.
                if self.dns_server is None:
                    with contextlib.suppress(urllib.error.HTTPError):
                        urllib.request.urlopen(self.challtestsrv_url + "/", timeout=2)
                return
            except (OSError, ValueError) as err:  # URLError is an OSError
                last_err = err
                time.sleep(0.05)
        raise ServerStartError(
            f"Pebble did not answer {self.directory_url} within {self.startup_timeout} s "
            f"({last_err})\n" + self.logs()
        )

    def stop(self, keep_workdir: bool = False) -> None:
        """Kill both processes (SIGTERM, then SIGKILL after 5 s); remove an own temp dir."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._procs = []
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PebbleServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    # ---- inspection ------------------------------------------------------------------
    def logs(self, lines: int = 40) -> str:
        """Tails of both logs, for failing tests."""
        return (
            f"--- {self.pebble_log} ---\n{_tail(self.pebble_log, lines)}\n"
            f"--- {self.challtestsrv_log} ---\n{_tail(self.challtestsrv_log, lines)}"
        )

    def get(self, url: str, timeout: float = 10) -> bytes:
        """GET over HTTPS, trusting this Pebble's TLS CA."""
        with urllib.request.urlopen(url, timeout=timeout, context=self._ssl) as resp:
            body: bytes = resp.read()
            return body

    def get_json(self, url: str, timeout: float = 10) -> dict[str, Any]:
        data = json.loads(self.get(url, timeout))
        if not isinstance(data, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return data

    def directory(self) -> dict[str, Any]:
        return self.get_json(self.directory_url)

    def root_pem(self, index: int = 0) -> bytes:
        """The root that issues this Pebble's certificates (changes on every start)."""
        return self.get(f"{self.management_url}/roots/{index}")

    def intermediate_pem(self, index: int = 0) -> bytes:
        return self.get(f"{self.management_url}/intermediates/{index}")

    def renewal_info_url(self, cert: x509.Certificate | bytes | str) -> str:
        base = self.directory()["renewalInfo"].rstrip("/")
        return f"{base}/{ari_cert_id(cert)}"

    def renewal_info(self, cert: x509.Certificate | bytes | str) -> dict[str, Any]:
        """The ARI document for a certificate (``suggestedWindow`` start/end, RFC 3339)."""
        return self.get_json(self.renewal_info_url(cert))

    def cert_status(self, cert: x509.Certificate | bytes | str) -> dict[str, Any]:
        """Management API view of a certificate (``Status``: Valid / Revoked, ...)."""
        if isinstance(cert, str):
            cert = cert.encode()
        if isinstance(cert, bytes):
            cert = x509.load_pem_x509_certificate(cert)
        return self.get_json(f"{self.management_url}/cert-status-by-serial/{cert.serial_number:x}")

    # ---- challtestsrv DNS ------------------------------------------------------------
    def _challtestsrv_post(self, path: str, payload: dict[str, Any]) -> None:
        req = urllib.request.Request(
            self.challtestsrv_url + path, data=json.dumps(payload).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10):
            pass

    def add_a_record(self, host: str, addresses: Sequence[str]) -> None:
        """Make ``host`` resolve to ``addresses`` for Pebble's validation."""
        self._challtestsrv_post("/add-a", {"host": host, "addresses": list(addresses)})

    def set_default_ipv4(self, address: str) -> None:
        self._challtestsrv_post("/set-default-ipv4", {"ip": address})


def certbot_argv(
    pebble: PebbleServer, base_dir: str | os.PathLike[str], *args: str, certbot: str | None = None
) -> list[str]:
    """certbot command line against ``pebble`` with its three dirs under ``base_dir``.

    ``certbot`` defaults to the entry point next to the running interpreter (the venv's).
    Run it with ``env={**os.environ, **pebble.env}``.
    """
    import sys

    exe = certbot or str(Path(sys.executable).with_name("certbot"))
    base = Path(base_dir)
    return [
        exe,
        *args,
        "--server",
        pebble.directory_url,
        "--config-dir",
        str(base / "config"),
        "--work-dir",
        str(base / "work"),
        "--logs-dir",
        str(base / "logs"),
        "--non-interactive",
        "--no-random-sleep-on-renew",
    ]


# --------------------------------------------------------------------------------------
# Docker


def docker_running(timeout: float = 10) -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_docker_engine(timeout: float = 60.0, log: Path = DOCKERD_LOG) -> None:
    """Start dockerd in the background (logs to tools/dockerd.log) unless `docker info` works.

    The daemon is left running after the tests, as scripts/setup.sh does.
    """
    if docker_running():
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.path.exists(dockerd):
        raise ServerStartError("dockerd not installed: run scripts/setup.sh")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        subprocess.Popen(
            [dockerd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_running(timeout=5):
            return
        time.sleep(0.5)
    raise ServerStartError(f"dockerd did not come up within {timeout} s\n{_tail(log)}")


def ensure_nginx_image(image: str = NGINX_IMAGE, force: bool = False) -> str:
    """Build the registry-free nginx test image unless present; returns its tag."""
    argv = [str(BUILD_NGINX_IMAGE)] + (["--force"] if force else []) + [image]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServerStartError(f"{BUILD_NGINX_IMAGE} failed:\n{proc.stdout}{proc.stderr}")
    return image
