"""Pure: the sidecar's status page (`GET /`) as one HTML document; no JavaScript.

One row per site: domains, issuer, days left drawn as a bar against the certificate's lifetime
(with a tick at the renewal moment), next renewal, last outcome and error. Every value that
comes from a certificate, the config or an error message is escaped.

Sites that need attention come first (failing and expired, then not yet delivered or due, then
the valid ones). Past PER_PAGE sites the page shows one page of rows (`/?page=N`) under a
summary of every site's state, so it stays small and fast with thousands of sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

PER_PAGE = 200  # rows per page: up to 200 sites, one page as before
# Display order: what needs attention first.
ATTENTION = {"failing": 0, "expired": 0, "placeholder": 1, "unpublished": 1, "missing": 1, "due": 2,
             "valid": 3}
STATE_CLASS = {"valid": "ok", "due": "due", "unpublished": "due", "placeholder": "off",
               "missing": "off", "failing": "bad", "expired": "bad", "undelivered": "bad"}


@dataclass(frozen=True)
class PageRow:
    name: str
    domains: tuple[str, ...]
    state: str  # status.collect's word: valid, due, unpublished, undelivered, placeholder,
    # missing, failing, expired
    issuer: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    renew_at: datetime | None = None
    next_wakeup: datetime | None = None
    wakeup_reason: str | None = None  # Renewal | Backoff
    last_outcome: str | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    failures: int = 0
    ca: str | None = None  # the issuing CA's host, "(fallback)" when it is one of acme.fallback
    retry_after: datetime | None = None  # rate-limited: the CA asked not to come back before this
    discovered: str | None = None  # the app container whose labels declare the site


@dataclass(frozen=True)
class PageMeta:
    version: str
    ready: bool
    last_pass: datetime | None = None
    next_check: datetime | None = None
    docker: str | None = None  # "connected", "reconnecting", None when not used
    skipped: tuple[str, ...] = ()  # discovery: labelled containers not served, and why


_CSS = """
:root{--ok:#2e7d32;--due:#ef8f00;--bad:#c62828;--off:#8a8f98;--fg:#1d2127;--mute:#5b6270;--line:#e3e6ea}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;
color:var(--fg);margin:0;padding:20px 28px;background:#fafbfc}
h1{font-size:20px;margin:0 0 2px}
.meta{color:var(--mute);margin:0 0 16px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;vertical-align:top;padding:8px 10px;border-bottom:1px solid var(--line)}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute);background:#f3f5f7}
.site{font-weight:600}
.badge{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;color:#fff;margin-top:3px}
.ok{background:var(--ok)}.due{background:var(--due)}.bad{background:var(--bad)}.off{background:var(--off)}
.domains{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
.bar{position:relative;width:200px;height:12px;background:#e9ecef;border-radius:6px;overflow:hidden}
.bar .fill{position:absolute;left:0;top:0;bottom:0;border-radius:6px}
.bar .tick{position:absolute;top:0;bottom:0;width:2px;background:var(--fg);opacity:.55}
.num,.sub{color:var(--mute);font-size:12px;margin-top:3px}
.err{color:var(--bad);font-size:12px;margin-top:3px;max-width:420px;overflow-wrap:anywhere}
.empty{color:var(--mute);padding:24px;text-align:center}
.pages{margin:12px 0;color:var(--mute)}.pages a{margin-right:8px}
"""


def attention(state: str, failures: int) -> int:
    """Sort key of a site on the page: 0 comes first."""
    return 0 if failures else ATTENTION.get(state, 1)


def page_count(total: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-total // per_page))


def render(rows: Sequence[PageRow], now: datetime, meta: PageMeta, *,
           counts: Mapping[str, int] | None = None, page: int = 1, pages: int = 1) -> str:
    """The whole page. `now` is the moment the page describes (days left are counted from it).

    `rows` are shown in the order given. With `counts` (every site's state, e.g. when `rows`
    are one page of many) the title and summary describe all sites, and `pages` > 1 adds links.
    """
    if counts is None:
        counts = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
    total = sum(counts.values())
    failing = counts.get("failing", 0) + counts.get("expired", 0)
    undelivered = counts.get("undelivered", 0)
    title = f"tlsbridge: {total} site{'s' if total != 1 else ''}" + (
        f", {failing} failing" if failing else "") + (f", {undelivered} not served yet" if undelivered else "")
    facts = [f"tlsbridge {meta.version}", f"as of {_ts(now)}",
             "ready" if meta.ready else "first pass running"]
    if meta.last_pass:
        facts.append(f"last pass {_ts(meta.last_pass)}")
    if meta.next_check:
        facts.append(f"next check {_ts(meta.next_check)}")
    if meta.docker:
        facts.append(f"docker {meta.docker}")
    body = "\n".join(_row(r, now) for r in rows) or (
        '<tr><td class="empty" colspan="6">No sites in the config.</td></tr>')
    summary = nav = ""
    if total > len(rows) or pages > 1:
        order = sorted(counts, key=lambda st: (ATTENTION.get(st, 1), st))
        summary = '<p class="meta">' + " &middot; ".join(
            f'<span class="badge {STATE_CLASS.get(st, "off")}">{escape(st)}</span> {counts[st]}'
            for st in order) + f" &middot; sites needing attention first; page {page} of {pages}</p>"
        links = [f'<a href="?page={n}">{n}</a>' if n != page else f"<b>{n}</b>" for n in _around(page, pages)]
        nav = f'<p class="pages">pages: {" ".join(links)}</p>'

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>tlsbridge</h1>
<p class="meta">{" &middot; ".join(escape(f) for f in facts)}</p>
{summary}{nav}
<table>
<thead><tr><th>Site</th><th>Domains</th><th>Issuer</th><th>Days left</th><th>Next renewal</th>
<th>Last outcome</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
{nav}
{_skipped(meta.skipped)}</body>
</html>
"""


def _around(page: int, pages: int) -> list[int]:
    """Page numbers to link: the first, the last, and those near `page`."""
    return sorted({1, pages, *range(max(1, page - 3), min(pages, page + 3) + 1)})


def _skipped(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    items = "".join(f'<li class="err">{escape(line)}</li>' for line in lines)
    return f"<h2>Skipped containers (discovery)</h2>\n<ul>{items}</ul>\n"


def _row(r: PageRow, now: datetime) -> str:
    cls = STATE_CLASS.get(r.state, "off")
    badges = f'<span class="badge {cls}">{escape(r.state)}</span>'
    if r.failures and r.state not in ("failing", "expired"):
        badges += ' <span class="badge bad">failing</span>'
    domains = "<br>".join(escape(d) for d in r.domains)
    found = f'<div class="sub">discovered: container {escape(r.discovered)}</div>' if r.discovered else ""
    issuer = (f'<span title="{escape(r.issuer)}">{escape(issuer_name(r.issuer))}</span>'
              if r.issuer else "&ndash;")
    if r.ca:
        issuer += f'<div class="sub">CA {escape(r.ca)}</div>'
    return (
        f'<tr id="site-{escape(r.name)}">'
        f'<td><div class="site">{escape(r.name)}</div>{badges}{found}</td>'
        f'<td class="domains">{domains}</td>'
        f"<td>{issuer}</td>"
        f"<td>{_days(r, now)}</td>"
        f"<td>{_next(r, now)}</td>"
        f"<td>{_outcome(r)}</td>"
        "</tr>"
    )


def _days(r: PageRow, now: datetime) -> str:
    if r.not_before is None or r.not_after is None:
        return "&ndash;"
    lifetime = r.not_after - r.not_before
    if lifetime <= timedelta(0):
        return "&ndash;"
    left = r.not_after - now
    share = min(max(left / lifetime, 0.0), 1.0)
    if left <= timedelta(0) or share < 0.1:
        cls = "bad"
    elif r.state == "placeholder":
        cls = "off"
    elif r.renew_at is not None and now >= r.renew_at:
        cls = "due"
    else:
        cls = "ok"
    tick = ""
    if r.renew_at is not None and r.not_before <= r.renew_at <= r.not_after:
        at = (r.not_after - r.renew_at) / lifetime
        tick = f'<span class="tick" style="left:{at * 100:.1f}%" title="renewal moment"></span>'
    label = (f"{_d(left)} of {_d(lifetime)} days left" if left > timedelta(0)
             else f"expired {_rel(-left)} ago")
    return (
        f'<div class="bar" role="img" aria-label="{escape(label)}">'
        f'<span class="fill {cls}" style="width:{share * 100:.1f}%"></span>{tick}</div>'
        f'<div class="num">{escape(label)} &middot; expires {escape(_ts(r.not_after))}</div>'
    )


def _next(r: PageRow, now: datetime) -> str:
    parts = []
    if r.renew_at is not None:
        when = f"in {_rel(r.renew_at - now)}" if r.renew_at > now else f"due since {_rel(now - r.renew_at)}"
        parts.append(f"{escape(_ts(r.renew_at))}<div class=\"sub\">{escape(when)}</div>")
    if r.retry_after is not None:
        parts.append(f'<div class="err">rate-limited: the CA asks to retry after {escape(_ts(r.retry_after))}</div>')
    if r.next_wakeup is not None and r.wakeup_reason == "Backoff":
        parts.append(f'<div class="sub">retry {escape(_ts(r.next_wakeup))} '
                     f"(after {r.failures} failure{'s' if r.failures != 1 else ''})</div>")
    return "".join(parts) or "&ndash;"


def _outcome(r: PageRow) -> str:
    parts = [escape(r.last_outcome)] if r.last_outcome else []
    if r.last_success is not None:
        parts.append(f'<div class="sub">last success {escape(_ts(r.last_success))}</div>')
    if r.last_error:
        parts.append(f'<div class="err">{escape(r.last_error)}</div>')
    return "".join(parts) or "&ndash;"


def issuer_name(issuer: str) -> str:
    """The CN of an RFC 4514 issuer string (the whole string when it has none)."""
    for part in issuer.split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN" and value:
            return value.strip()
    return issuer


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _d(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f}"


def _rel(delta: timedelta) -> str:
    s = delta.total_seconds()
    if s < 3600:
        return f"{max(s, 0) / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
