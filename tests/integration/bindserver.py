"""A real authoritative DNS server for DNS-01 tests: Debian 12's bind9 `named`, unprivileged.

``BindServer`` runs ``named`` in the foreground in its own temp folder on a free 127.0.0.1 port
(UDP and TCP), with no recursion, no control channel, and one TSIG key that may change anything
in its zones (RFC 2136 dynamic updates, what certbot-dns-rfc2136 sends). Each zone has an SOA,
an apex A record and a wildcard A record to 127.0.0.1, so a Pebble whose ``-dnsserver`` is this
server validates DNS-01 against the TXT records certbot adds and resolves HTTP-01 names to
127.0.0.1.

``named`` comes from ``$TLSBRIDGE_NAMED``, else ``tools/bind9/usr/sbin/named`` (unpacked by
scripts/setup.sh without installing the package: no system service is created or started), else
PATH (bind9 9.18 runs unprivileged on a free port with `named -c FILE -u root`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from servers import PROJECT_ROOT, ServerStartError, _tail, free_port

NAMED_LOCAL = PROJECT_ROOT / "tools" / "bind9" / "usr" / "sbin" / "named"
KEY_NAME = "tlsbridge-test."
ALGORITHM = "HMAC-SHA512"


def find_named() -> str:
    explicit = os.environ.get("TLSBRIDGE_NAMED")
    if explicit:
        return explicit
    if NAMED_LOCAL.is_file() and os.access(NAMED_LOCAL, os.X_OK):
        return str(NAMED_LOCAL)
    for cand in (shutil.which("named"), "/usr/sbin/named"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(f"named not found: run scripts/setup.sh (unpacks bind9 into {NAMED_LOCAL.parents[2]})"
                            " or set $TLSBRIDGE_NAMED")


class BindServer:
    """``named`` serving ``zones`` on 127.0.0.1:<port> with a TSIG key for dynamic updates."""

    def __init__(self, zones: Sequence[str] = ("example.test",), *, port: int | None = None,
                 workdir: str | os.PathLike[str] | None = None, startup_timeout: float = 20.0) -> None:
        self.zones = tuple(zones)
        self.port = port or 0
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bind9-"))
        self.named = find_named()
        self.secret = base64.b64encode(secrets.token_bytes(64)).decode()
        self.log = self.workdir / "named.log"
        self.conf = self.workdir / "named.conf"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """HOST:PORT, as Pebble's ``-dnsserver`` takes it."""
        return f"127.0.0.1:{self.port}"

    def credentials(self, path: Path, *, secret: str | None = None, port: int | None = None) -> Path:
        """A certbot-dns-rfc2136 credentials file (0600) for this server."""
        path.write_text(
            f"dns_rfc2136_server = 127.0.0.1\n"
            f"dns_rfc2136_port = {port or self.port}\n"
            f"dns_rfc2136_name = {KEY_NAME}\n"
            f"dns_rfc2136_secret = {secret or self.secret}\n"
            f"dns_rfc2136_algorithm = {ALGORITHM}\n")
        path.chmod(0o600)
        return path

    def _write_config(self) -> None:
        d = self.workdir
        zones = []
        for zone in self.zones:
            (d / f"{zone}.zone").write_text(
                "$TTL 60\n"
                f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
                f"@ IN NS ns.{zone}.\n"
                "ns IN A 127.0.0.1\n"
                "@ IN A 127.0.0.1\n"
                "* IN A 127.0.0.1\n")
            zones.append(f'zone "{zone}" {{ type primary; file "{zone}.zone"; '
                         f"update-policy {{ grant {KEY_NAME} zonesub TXT; }}; }};\n")
        self.conf.write_text(
            "options {\n"
            f'  directory "{d}";\n'
            f'  pid-file "{d}/named.pid";\n'
            f'  session-keyfile "{d}/session.key";\n'
            f'  managed-keys-directory "{d}";\n'
            f"  listen-on port {self.port} {{ 127.0.0.1; }};\n"
            "  listen-on-v6 { none; };\n"
            "  recursion no;\n"
            "  allow-transfer { none; };\n"
            "  dnssec-validation no;\n"
            "  notify no;\n"
            "};\n"
            "controls { };\n"
            f'key "{KEY_NAME}" {{ algorithm {ALGORITHM.lower()}; secret "{self.secret}"; }};\n'
            + "".join(zones))

    def start(self) -> BindServer:
        if self._proc is not None:
            raise RuntimeError("BindServer already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(udp_too=True)
        self._write_config()
        deadline = time.monotonic() + self.startup_timeout
        with open(self.log, "ab") as fh:
            # -g: foreground, log to stderr; -u root: no switch to a `bind` user that may not exist.
            self._proc = subprocess.Popen([self.named, "-g", "-c", str(self.conf), "-u", "root", "-n", "1"],
                                          stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.workdir, start_new_session=True)
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop(keep_workdir=True)
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        import dns.message
        import dns.query
        import dns.rcode

        last: Exception | str | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerStartError(f"named exited with {self._proc.returncode}\n{_tail(self.log)}")
            try:
                answer = dns.query.udp(dns.message.make_query(self.zones[0], "SOA"), "127.0.0.1",
                                       port=self.port, timeout=1)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
                last = dns.rcode.to_text(answer.rcode())
            except Exception as exc:  # noqa: BLE001 - timeouts, refused: not up yet
                last = exc
            time.sleep(0.05)
        raise ServerStartError(f"named did not answer SOA {self.zones[0]} on {self.address} ({last})\n"
                               f"{_tail(self.log)}")

    def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` now (empty when none)."""
        import dns.message
        import dns.query

        answer = dns.query.udp(dns.message.make_query(name, "TXT"), "127.0.0.1", port=self.port, timeout=2)
        return [b"".join(rd.strings).decode() for rrset in answer.answer for rd in rrset]

    def stop(self, keep_workdir: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self, lines: int = 40) -> str:
        return f"--- {self.log} ---\n{_tail(self.log, lines)}"

    def __enter__(self) -> BindServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
