"""Verify that targets serve the published certificate: the one path for every check.

Used after a reload (delivery.containers, delivery.swarm) and after a container start (the
sidecar's sidecar.reverify).

After a reload nginx's master starts new workers, waits 100 ms, then retires the old ones; in
between, fresh connections reach old and new workers alike (measured: new, old, new, old... for
~100 ms). So one good probe proves nothing. Verified means: `need` consecutive fresh connections
showed the published leaf, and the first of them came at least `settle` after the reload signal,
when no old worker can still be accepting. Probes compare the SHA-256 of the served leaf's DER
with the published one: no trust is needed (the bootstrap placeholder is self-signed).

`ServedTracker` is the pure decision over a series of probes; `Verifier` opens the connections.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tlsbridge.config import Site
from tlsbridge.errors import ReloadError, TlsbridgeError, VerifyError
from tlsbridge.names import HTTPS_PORT
from tlsbridge.targets import ContainerInfo, probe_address, sni_for

logger = logging.getLogger(__name__)
VERIFY_TIMEOUT = 10.0  # seconds from the reload until a target must serve the new certificate
VERIFY_CONSECUTIVE = 3  # fresh connections in a row that must show it
VERIFY_SETTLE = 0.15  # seconds after the reload before a match counts (nginx retires old workers at 0.1)
PROBE_INTERVAL = 0.02  # seconds between probes of one target while old workers may still answer
PROBE_INTERVAL_SETTLED = 0.005  # ... and once they must be gone: the counted probes come quickly


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def describe(der: bytes) -> str:
    """serial, subject and issuer of a DER certificate, for messages."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return f"an unparsable certificate (sha256 {fingerprint(der)[:16]})"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ",".join(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ""
    subject = cert.subject.rfc4514_string()
    who = ", ".join(part for part in (f"subject {subject}" if subject else "",
                                      f"names {names}" if names else "") if part)
    return (f"serial {format(cert.serial_number, 'x')} ({who or 'no subject'}, "
            f"issuer {cert.issuer.rfc4514_string() or '-'})")


@dataclass
class ServedTracker:
    """Feed it probe results in time order; `record_probe` returns True once verified."""

    want: str  # sha256 hex of the published leaf
    since: float  # monotonic time of the reload (or start)
    need: int = VERIFY_CONSECUTIVE
    settle: float = VERIFY_SETTLE
    run: int = 0  # consecutive matches, counting only those after `since + settle`
    probes: int = 0
    matches: int = 0
    last_other: bytes | None = None  # the last non-matching leaf seen
    last_error: str | None = None
    # Give up once this many fresh connections in a row (after the settle time) showed another
    # certificate; None: keep probing until the timeout (old workers may still answer after a
    # reload under load). A container that just started has no old workers: it is stale at once.
    stale_after: int | None = None
    other_run: int = 0

    def record_probe(self, at: float, der: bytes | None, error: str | None = None) -> bool:
        self.probes += 1
        if der is not None and fingerprint(der) == self.want:
            self.matches += 1
            self.other_run = 0
            if at >= self.since + self.settle:
                self.run += 1
            return self.run >= self.need
        if der is not None:
            self.last_other = der
            if at >= self.since + self.settle:
                self.other_run += 1
        else:
            self.last_error = error or "no certificate"
            self.other_run = 0
        self.run = 0
        return False

    @property
    def stale(self) -> bool:
        """True once the target is known to serve another certificate (see `stale_after`)."""
        return self.stale_after is not None and self.other_run >= self.stale_after

    def failure(self) -> str:
        """What was served instead, for the VerifyError message."""
        if self.last_other is not None:
            what = f"serves {describe(self.last_other)} instead of the published certificate"
            if self.matches:
                what += (f" (the published one answered {self.matches} of {self.probes} probes: "
                         "another server or old nginx workers still answer)")
            return what
        if self.matches:
            return f"answered with the published certificate only {self.matches} of {self.probes} probes"
        return f"did not complete a TLS handshake ({self.last_error})"


@dataclass(frozen=True)
class Probe:
    """One place to check that `want` (sha256 of the leaf) is served, from `since` (monotonic)."""

    site: Site
    want: str
    host: str
    port: int
    label: str  # "container nginx (172.18.0.2:443)"
    since: float
    # Why the target is no longer running, or None while it runs: asked now and then while it
    # does not answer, so a crashed nginx fails at once instead of at the timeout.
    alive: Callable[[], str | None] | None = field(default=None, compare=False)


def site_probes(site: Site, want: str, targets: Sequence[tuple[ContainerInfo, float]],
                own: frozenset[str] | None, now: float,
                alive: Callable[[ContainerInfo], Callable[[], str | None]] | None = None) -> list[Probe]:
    """The probes that check a site's containers (each with the moment it was reloaded or
    started), or its `verify: HOST:PORT` (from the last of those moments). Raises VerifyError
    when a container cannot be reached from here."""
    if site.verify is not None:
        host, port = site.verify
        since = max((t for _, t in targets), default=now)
        return [Probe(site, want, host, port, f"{host}:{port}", since)]
    probes = []
    for info, since in targets:
        addr = probe_address(info, own)
        if addr is None:
            nets = ", ".join(info.networks) or info.network_mode or "none"
            raise VerifyError(
                f"site={site.name}: cannot reach container {info.name} from here to verify "
                f"it (no shared network); attach tlsbridge to one of its networks ({nets}) "
                f"or set sites.{site.name}.verify: HOST:PORT")
        probes.append(Probe(site, want, addr, HTTPS_PORT, f"container {info.name} ({addr}:{HTTPS_PORT})",
                            since, alive(info) if alive is not None else None))
    return probes


class Verifier:
    """Probes targets with fresh TLS connections until `ServedTracker` says verified (or stale),
    or until `timeout` after the probe's `since`. Callable on a batch (delivery.swarm's verify)."""

    def __init__(self, *, timeout: float = VERIFY_TIMEOUT, settle: float = VERIFY_SETTLE,
                 stale_after: int | None = None, after: str = "the reload") -> None:
        self.timeout = timeout
        self.settle = settle
        self.stale_after = stale_after
        self.after = after  # what `since` was, for messages

    def __call__(self, probes: Sequence[Probe]) -> list[TlsbridgeError | None]:
        """Each probe's error (None: verified), probes run in parallel."""
        if len(probes) <= 1:
            return [self.check(p) for p in probes]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(probes))) as pool:
            return list(pool.map(self.check, probes))

    def check(self, probe: Probe) -> TlsbridgeError | None:
        """Probe until the published leaf is served by fresh connections; the error if not."""
        from tlsbridge.adapters.tlsprobe import served_leaf

        tracker = ServedTracker(want=probe.want, since=probe.since, settle=self.settle,
                                stale_after=self.stale_after)
        name = probe.site.name
        sni = sni_for(probe.site)
        deadline = probe.since + self.timeout
        next_alive = 0.0
        while True:
            at = time.monotonic()
            der: bytes | None = None
            error = None
            try:
                der = served_leaf(probe.host, probe.port, sni, timeout=min(2.0, max(0.2, deadline - at)))
            except OSError as exc:  # ssl.SSLError included
                error = f"{type(exc).__name__}: {exc}"
            if tracker.record_probe(at, der, error):
                logger.info("site=%s verified: %s serves the published certificate (%d probes, "
                            "%.0f ms after %s)", name, probe.label, tracker.probes,
                            (time.monotonic() - probe.since) * 1000, self.after)
                return None
            if tracker.stale:
                return VerifyError(f"site={name}: {probe.label} {tracker.failure()} (SNI {sni})")
            now = time.monotonic()
            if now >= deadline:
                return VerifyError(f"site={name}: {probe.label} {tracker.failure()} "
                                   f"{self.timeout:g}s after {self.after} (SNI {sni})")
            if der is None and probe.alive is not None and now >= next_alive:
                next_alive = now + 0.5
                died = probe.alive()
                if died:
                    return ReloadError(f"site={name}: {died}")
            time.sleep(PROBE_INTERVAL if now < probe.since + self.settle else PROBE_INTERVAL_SETTLED)
