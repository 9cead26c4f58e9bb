"""Per-site status from local files only: certbot's lineage, the published folder, the state store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tlsbridge import policy
from tlsbridge.adapters.certmemo import memo_file
from tlsbridge.config import Config, Site
from tlsbridge.model import Observation, ObservedCert, SiteState
from tlsbridge.reconcile import Ports


@dataclass(frozen=True)
class SiteStatus:
    name: str
    domains: tuple[str, ...]
    cert: ObservedCert | None  # what is published (a placeholder included), else certbot's lineage
    renew_after: datetime | None
    published: str
    state: str
    last_error: str | None
    site_state: SiteState
    ca: str | None = None  # the ACME directory certbot's lineage came from (renewal/<site>.conf)
    ca_fallback: bool = False  # `ca` is one of acme.fallback
    retry_after: datetime | None = None  # rate-limited: the CA said not before this (while failing)

    def as_json(self) -> dict[str, Any]:
        c = self.cert
        return {
            "name": self.name,
            "domains": list(self.domains),
            "serial": c.serial_hex if c else None,
            "not_before": _iso(c.not_before) if c else None,
            "not_after": _iso(c.not_after) if c else None,
            "renew_after": _iso(self.renew_after) if self.renew_after else None,
            "issuer": c.issuer if c else None,
            "published": self.published,
            "state": self.state,
            "last_error": self.last_error,
            "ca": self.ca,
            "ca_fallback": self.ca_fallback,
            "retry_after": _iso(self.retry_after) if self.retry_after else None,
        }

    @property
    def ca_label(self) -> str:
        """The CA's host, `(fallback)` when it is one of acme.fallback."""
        if not self.ca:
            return "-"
        return (urlsplit(self.ca).netloc or self.ca) + (" (fallback)" if self.ca_fallback else "")


def collect(cfg: Config, ports: Ports, now: datetime, names: list[str] | None = None) -> list[SiteStatus]:
    """Every site's status (or those in `names`, in that order), from local files and the state
    store (never the CA)."""
    ports.memo.load(memo_file(cfg.state.dir))  # what renew/run parsed: status re-parses nothing unchanged
    try:  # a damaged store is set aside and read as empty
        states = ports.store.load_all() if names is None else ports.store.load_some(names)
    finally:
        ports.store.close()  # no connection outlives a status read (the page reads it per request)
    sites = cfg.sites.values() if names is None else [cfg.sites[n] for n in names if n in cfg.sites]
    return [site_status(site, ports.observe(site.name, states.get(site.name) or SiteState()), cfg, now,
                        ca=ports.certs.server(site.name))
            for site in sites]


def site_status(site: Site, obs: Observation, cfg: Config, now: datetime, *, ca: str | None = None) -> SiteStatus:
    """Pure: one site's status from its observation; `ca`: the directory its lineage came from."""
    lineage, published, st = obs.lineage, obs.published, obs.state
    renew_after = None
    if lineage is not None:
        ari = st.ari if st.ari_for == lineage.fingerprint else None
        chosen = st.chosen_renewal if st.chosen_for == lineage.fingerprint else None
        renew_after = policy.schedule(lineage, before_expiry=cfg.renewal.before_expiry, ari=ari,
                                      chosen=chosen, now=now,
                                      rng=policy.SeededLater(lineage.fingerprint)).renew_at
    return SiteStatus(
        name=site.name,
        domains=site.domains,
        cert=published if published is not None else lineage,
        renew_after=renew_after,
        published=str(cfg.publish.dir / site.name),
        state=_state(site.domains, lineage, published, renew_after, st, now),
        last_error=st.last_error,
        site_state=st,
        ca=ca if obs.lineage is not None else None,
        ca_fallback=ca is not None and ca in {f.directory for f in cfg.acme.fallback},
        retry_after=st.retry_after if st.failures else None,
    )


def _state(domains: tuple[str, ...], lineage: ObservedCert | None, published: ObservedCert | None,
           renew_after: datetime | None, st: SiteState, now: datetime) -> str:
    if published is not None and published.placeholder:
        return "placeholder"
    if lineage is None:
        return "failing" if st.failures else "missing"
    if now >= lineage.not_after:
        return "expired"
    current = published is not None and published.fingerprint == lineage.fingerprint
    if current and st.delivered != lineage.fingerprint:
        return "undelivered"  # published, not yet verified as served (the next pass retries)
    if st.failures:
        return "failing"
    if not current:
        return "unpublished"
    if set(domains) != set(lineage.domains):
        return "due"
    if renew_after is not None and now >= renew_after:
        return "due"
    return "valid"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def render_table(rows: list[SiteStatus], now: datetime) -> str:
    header = ("SITE", "STATE", "EXPIRES", "DAYS", "RENEW AFTER", "SERIAL", "CA", "DOMAINS")
    lines = [header]
    for r in rows:
        c = r.cert
        days = f"{(c.not_after - now).total_seconds() / 86400:.1f}" if c else "-"
        lines.append((
            r.name,
            r.state,
            _iso(c.not_after) if c else "-",
            days,
            _iso(r.renew_after) if r.renew_after else "-",
            (c.serial_hex[:16] if c else "-"),
            r.ca_label,
            ",".join(r.domains),
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)
    errors = [f"{r.name}: {r.last_error}" for r in rows if r.last_error]
    errors += [f"{r.name}: rate-limited by the CA, which asks to retry after {_iso(r.retry_after)}"
               for r in rows if r.retry_after]
    return text + ("\n\nlast errors:\n" + "\n".join(errors) if errors else "")
