"""What a notification says (pure): the site and its names, what happened, what tlsbridge does
next and when, and the one thing to check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tlsbridge.notify.events import (
    EXPIRING,
    FAILING,
    RECOVERED,
    RENEWED,
    UNDELIVERED,
    Event,
    real_cert,
)
from tlsbridge.status import SiteStatus

# The one thing to check after a failure, by the failure's reason (SiteState.last_reason).
CHECK_BY_REASON = {
    "CAUnreachable": "that this host reaches the CA's ACME directory (acme.directory): DNS, firewall, proxy; "
                     "or the CA's status page",
    "CATransient": "the CA's status page: it answered with a server error",
    "RateLimited": "nothing: the CA rate-limited this site and the next attempt above honours its "
                   "retry-after; do not force renewals meanwhile",
    "ValidationFailed": "that http://{domain}/.well-known/acme-challenge/ reaches tlsbridge (DNS records of "
                        "every name, port 80, the proxy's challenge location)",
    "DnsChallengeFailed": "the DNS plugin's credentials (challenge.dns_credentials) and that its zone "
                          "holds every name",
    "CAUntrusted": "acme.ca_bundle: this host does not trust the CA's TLS certificate",
    "AccountGone": "the ACME account (acme.email, acme.eab): the CA no longer accepts it",
}
DEFAULT_CHECK = "`tlsbridge doctor` and the log lines with site={site}"


@dataclass(frozen=True)
class Message:
    site: str
    kind: str  # an event kind (events.PROBLEMS, RECOVERED, RENEWED) or "test"
    title: str
    body: str
    level: str  # Apprise's notify type: info, success, warning, failure


def render(event: Event, now: datetime, next_pass: datetime | None) -> Message:
    """The message for an event. `next_pass`: when the sidecar's next full pass runs (None: the
    next `tlsbridge renew` run decides)."""
    row = event.site
    head = f"Site {row.name} ({', '.join(row.domains)})"
    if event.kind == FAILING:
        title, level, lines = f"{row.name}: renewal failing", "failure", _failing(row, now)
    elif event.kind == UNDELIVERED:
        title, level, lines = f"{row.name}: published, not served", "failure", _undelivered(row, next_pass)
    elif event.kind == EXPIRING:
        title, level, lines = f"{row.name}: certificate expires soon", "warning", _expiring(row, now)
    elif event.kind == RECOVERED:
        title, level, lines = f"{row.name}: recovered", "success", _recovered(row, event.problem or "")
    elif event.kind == RENEWED:
        title, level, lines = f"{row.name}: renewed", "success", _renewed(row)
    else:
        raise ValueError(f"unknown event {event.kind!r}")
    if event.since is not None:
        title += f" (still, since {_ts(event.since)})"
        lines.append(f"This repeats once a day while it lasts (first sent {_ts(event.since)}).")
    return Message(row.name, event.kind, f"tlsbridge: {title}", f"{head}: " + "\n".join(lines), level)


def probe_message(now: datetime, source: str) -> Message:
    return Message("-", "test", "tlsbridge: test notification",
                   f"A test from `tlsbridge notify --test` ({source}) at {_ts(now)}: this target works.", "info")


def _failing(row: SiteStatus, now: datetime) -> list[str]:
    st = row.site_state
    why = f" ({st.last_reason})" if st.last_reason else ""
    lines = [f"renewal failed {st.failures} times in a row{why}: {st.last_error or 'no error recorded'}."]
    when = _ts(st.next_attempt) if st.next_attempt else "on the next pass"
    lines.append(f"Next: tlsbridge tries again at {when}, backing off after each failure.")
    lines.append(_cert_line(row, now))
    check = CHECK_BY_REASON.get(st.last_reason or "", DEFAULT_CHECK)
    lines.append("Check: " + check.format(site=row.name, domain=row.domains[0] if row.domains else ""))
    return lines


def _undelivered(row: SiteStatus, next_pass: datetime | None) -> list[str]:
    cert = real_cert(row)
    serial = f"serial {cert.serial_hex}" if cert else "the certificate"
    error = row.last_error or "the containers still serve another certificate"
    when = f"on the next pass ({_ts(next_pass)})" if next_pass else "on the next `tlsbridge renew` run"
    return [f"{serial} is published in {row.published} but not served: {error}.",
            f"Next: tlsbridge reloads and verifies the containers again {when}.",
            f"Check: the site's containers (reload targets, label tlsbridge.site={row.name}): that they "
            f"mount {row.published} and that `nginx -t` passes in them; `tlsbridge doctor` helps."]


def _expiring(row: SiteStatus, now: datetime) -> list[str]:
    cert = real_cert(row)
    assert cert is not None
    left = cert.not_after - now
    what = (f"the certificate (serial {cert.serial_hex}) EXPIRED {_ago(-left)} ago ({_ts(cert.not_after)})"
            if left <= timedelta(0) else
            f"the certificate (serial {cert.serial_hex}) expires in {_ago(left)} ({_ts(cert.not_after)})")
    lines = [f"{what} and has not been renewed (state: {row.state})."]
    st = row.site_state
    if st.failures and st.next_attempt:
        lines.append(f"Next: tlsbridge tries again at {_ts(st.next_attempt)} (failed {st.failures} times: "
                     f"{st.last_error or st.last_reason or 'no error recorded'}).")
    elif row.renew_after is not None:
        lines.append(f"Next: renewal is due since {_ts(row.renew_after)}; the next pass tries it.")
    lines.append("Check: that renewals run at all (the sidecar is up, or the renew timer fires) and "
                 "`tlsbridge status` for the last error.")
    return lines


def _recovered(row: SiteStatus, problem: str) -> list[str]:
    cert = real_cert(row)
    now_ok = {FAILING: "renewal works again", UNDELIVERED: "the containers serve the published certificate",
              EXPIRING: "the certificate is no longer close to expiry"}.get(problem, "the problem is over")
    lines = [f"{now_ok} (it was {problem})."]
    if cert is not None:
        lines.append(f"Certificate: serial {cert.serial_hex}, valid until {_ts(cert.not_after)}.")
    if row.renew_after is not None:
        lines.append(f"Next: renewal after {_ts(row.renew_after)}.")
    lines.append("Check: nothing.")
    return lines


def _renewed(row: SiteStatus) -> list[str]:
    cert = real_cert(row)
    assert cert is not None
    lines = [f"new certificate, serial {cert.serial_hex}, valid until {_ts(cert.not_after)}."]
    if row.renew_after is not None:
        lines.append(f"Next: renewal after {_ts(row.renew_after)}.")
    return lines


def _cert_line(row: SiteStatus, now: datetime) -> str:
    cert = real_cert(row)
    if cert is None:
        return "The site has no certificate yet (nginx serves a placeholder, if any)."
    left = cert.not_after - now
    if left <= timedelta(0):
        return f"Its certificate (serial {cert.serial_hex}) EXPIRED at {_ts(cert.not_after)}."
    return f"Its certificate (serial {cert.serial_hex}) expires {_ts(cert.not_after)}, in {_ago(left)}."


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
