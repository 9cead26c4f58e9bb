"""Reading certbot's output: the error type callers act on, with a one-line message (pure).

certbot reports everything as text on its stdout/stderr; this is the one place that text is
interpreted. Each error names the site, what failed (the CA, the DNS server, a domain) and the
cause in a line, never certbot's traceback; the end of the output goes along as the `tail`
where it helps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from tlsbridge.errors import (
    AccountGoneError,
    CAUnreachableError,
    CAUntrustedError,
    CertbotError,
    DnsChallengeError,
    RateLimitedError,
    TransientCAError,
    ValidationFailedError,
)

_NOISE = re.compile(
    r"^(Saving debug log|Ask for help|See the logfile|Requesting a certificate|Renewing an existing"
    r"|tlsbridge: the CA asked to retry after|Account registered|Simulating|Hint:|Waiting \d+ seconds|- - -|\s*$)"
)


@dataclass(frozen=True)
class DnsSide:
    """Who answers the DNS-01 challenge for a site, to name it in errors.

    plugin: the certbot DNS plugin (rfc2136, cloudflare...); server: for rfc2136 the DNS server's
    HOST:PORT from the credentials file, else None (a provider's API); credentials: the file.
    """

    plugin: str
    server: str | None = None
    credentials: str | None = None

    @property
    def where(self) -> str:
        if self.server:
            return f"the DNS server {self.server} ({self.plugin})"
        return f"the {self.plugin} DNS API"


def tail(output: str, lines: int = 4) -> str:
    """The last meaningful lines of certbot's output, joined into one line."""
    kept = [ln.strip() for ln in output.splitlines() if not _NOISE.match(ln)]
    return " | ".join(kept[-lines:])


def classify(site: str, output: str, server: str = "", dns: DnsSide | None = None) -> CertbotError:
    """Turn certbot's output into the error type callers act on (retry, backoff, report).

    `server` is the ACME directory; `dns` is set when the site uses DNS-01.
    """
    low = output.lower()
    if "ratelimited" in low or "too many" in low or "rate limit" in low:
        retry_at = None
        # The Retry-After header (certbot_main.py prints it), else the date in the problem's
        # detail (Let's Encrypt: "..., retry after 2026-12-01 17:00:00 UTC: see ...").
        m = (re.search(r"CA asked to retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z", output)
             or re.search(r"retry after (\d{4}-\d\d-\d\d[ t]\d\d:\d\d:\d\d)", output, re.IGNORECASE))
        if m:
            retry_at = datetime.fromisoformat(m.group(1).replace(" ", "T")).replace(tzinfo=UTC)
        when = f" (retry after {retry_at:%Y-%m-%dT%H:%MZ})" if retry_at else ""
        return RateLimitedError(f"site={site}: the CA rate-limited the order{when}", tail(output),
                                retry_after=retry_at)
    if "failed to authenticate some domains" in low or "challenges have failed" in low:
        return _validation_failed(site, output, dns)
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        return CAUntrustedError(
            f"site={site}: the CA's certificate is not trusted ({server or 'the ACME server'}): set acme.ca_bundle "
            "to the PEM file of the CA that signed the ACME server's HTTPS certificate")
    if dns is not None and ("unrecognized arguments: --dns-" in low or "plugin does not appear to be installed" in low):
        return CertbotError(
            f"site={site}: the certbot DNS plugin dns-{dns.plugin} is not installed in tlsbridge's environment: "
            f"pip install certbot-dns-{dns.plugin} (`tlsbridge validate` checks this)")
    if dns is not None:
        dns_error = _dns_failure(site, output, dns)
        if dns_error is not None:
            return dns_error
    gone = re.search(r"Account (\S+) not found|accountDoesNotExist|No account exists", output, re.IGNORECASE)
    if gone:
        url = gone.group(1) if gone.lastindex else None
        return AccountGoneError(f"site={site}: the CA {server} no longer knows the ACME account"
                                + (f" {url}" if url else ""), tail(output, 2), account_url=url)
    if "badnonce" in low or "anti-replay nonce" in low or "servererror" in low or "503 service" in low:
        return TransientCAError(f"site={site}: the ACME server answered with a transient error", tail(output))
    unreachable = ("max retries exceeded", "failed to establish a new connection", "connection refused",
                   "name or service not known", "temporary failure in name resolution", "timed out",
                   "unable to connect", "connection aborted", "remote end closed connection",
                   "connection reset")
    if any(s in low for s in unreachable):
        return CAUnreachableError(f"site={site}: the ACME server {server} could not be reached", tail(output))
    return CertbotError(f"site={site}: certbot failed", tail(output))


def _validation_failed(site: str, output: str, dns: DnsSide | None) -> ValidationFailedError:
    # certbot 5 prints "Identifier: NAME" per failed authorization (older ones "Domain: NAME").
    domains = list(dict.fromkeys(re.findall(r"^\s*(?:Identifier|Domain):\s*(\S+)", output, re.MULTILINE)))
    detail = re.search(r"Detail:\s*(.+)", output)
    what = ", ".join(domains) if domains else "a domain (certbot did not say which)"
    if dns is not None:
        hint = (f"check that the TXT records that {dns.where} receives are served by the zone's authoritative "
                "servers; raise challenge.dns_propagation if they need longer to appear")
    else:
        hint = "check that the challenge reaches this host (DNS, port 80, webroot served)"
    return ValidationFailedError(
        f"site={site}: the CA could not validate {what} ({detail.group(1).strip() if detail else tail(output, 1)})",
        hint, domain=domains[0] if domains else None)


def _dns_failure(site: str, output: str, dns: DnsSide) -> DnsChallengeError | None:
    """A failure of the DNS plugin (adding or removing the TXT record), or None."""
    low = output.lower()
    creds = f" in {dns.credentials}" if dns.credentials else ""
    cause: str | None = None
    m = re.search(r"Unable to determine base domain for (?:_acme-challenge\.)?(\S+?)\.? using names", output)
    if m:
        cause = (f"it serves no zone that covers {m.group(1)} (no authoritative SOA for the name or a parent): "
                 "add the zone there, or point the credentials at the server that holds it")
    elif "didn't like the signature" in low or "badsig" in low or "badkey" in low or "badtime" in low:
        if dns.plugin == "rfc2136":
            cause = f"it rejected the TSIG signature of the update (wrong key secret, name or algorithm{creds})"
        else:
            cause = f"it rejected the credentials{creds}"
    elif re.search(r"dns operation timed out|error when making query|connection refused", low) and (
            dns.plugin == "rfc2136"):
        cause = "it did not answer (down or unreachable from here)"
    else:
        refused = re.search(r"Received response from server: (\w+)", output)
        if refused:
            cause = (f"it refused the update ({refused.group(1)}): the key may not change that zone "
                     "(check the zone's update-policy)")
        else:
            generic = re.search(r"(?:PluginError: |Encountered error (?:adding|deleting) TXT record: )(.+)", output)
            if generic or "pluginerror" in low:
                found = generic.group(1).strip() if generic else tail(output, 1)
                cause = f"the {dns.plugin} plugin failed: {found}"
    if cause is None:
        return None
    return DnsChallengeError(f"site={site}: DNS-01 failed at {dns.where}: {cause}", dns_server=dns.server)
