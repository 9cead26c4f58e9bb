"""Pure: decide from a series of TLS probes whether a target serves the published certificate.

After a reload nginx's master starts new workers, waits 100 ms, then retires the old ones; in
between, fresh connections reach old and new workers alike (measured: new, old, new, old... for
~100 ms). So one good probe proves nothing. Verified means: `need` consecutive fresh connections
showed the published leaf, and the first of them came at least `settle` after the reload signal,
when no old worker can still be accepting. Probes compare the SHA-256 of the served leaf's DER
with the published one: no trust is needed (the bootstrap placeholder is self-signed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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

    def record_probe(self, at: float, der: bytes | None, error: str | None = None) -> bool:
        self.probes += 1
        if der is not None and fingerprint(der) == self.want:
            self.matches += 1
            if at >= self.since + self.settle:
                self.run += 1
            return self.run >= self.need
        if der is not None:
            self.last_other = der
        else:
            self.last_error = error or "no certificate"
        self.run = 0
        return False

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
