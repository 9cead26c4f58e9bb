"""What the sidecar shows: health, readiness, metrics and the status page (endpoint's App).

Called from the HTTP threads; it only reads what the main thread replaces wholesale (dicts are
swapped, never mutated in place), and the status page re-reads local files on each request so
days left and states are current. It reads the loop through the small `LoopState` protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from tlsbridge import __version__
from tlsbridge.model import Action
from tlsbridge.render.status_page import PER_PAGE, PageMeta, PageRow, attention, page_count, render
from tlsbridge.sidecar.metrics import CONTENT_TYPE, Metrics
from tlsbridge.sidecar.timetable import Wakeup

if TYPE_CHECKING:
    from tlsbridge.adapters.certmemo import CertMemo
    from tlsbridge.config import Config
    from tlsbridge.discovery.apply import Synced
    from tlsbridge.reconcile import SiteOutcome
    from tlsbridge.status import SiteStatus

VERIFY_REASONS = {"Verify", "VerifyFailed"}
_VERBS = {Action.ISSUE: "issued", Action.REISSUE: "re-issued", Action.RENEW: "renewed"}


class LoopState(Protocol):
    """What the view reads from the main loop (sidecar.loop.Sidecar), from the HTTP threads."""

    @property
    def cfg(self) -> Config: ...
    @property
    def wakeups(self) -> Mapping[str, Wakeup]: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def busy_since(self) -> float | None: ...  # monotonic start of the step underway
    @property
    def memo(self) -> CertMemo: ...  # the process's parsed certificates
    @property
    def passes_failing(self) -> bool: ...  # whole passes keep failing: /healthz says 503
    def now(self) -> datetime: ...
    def scheduler_alive(self) -> bool: ...


class SidecarView:
    def __init__(self, loop: LoopState, metrics: Metrics) -> None:
        self.loop = loop
        self._metrics = metrics
        self.ready = False
        self.started = time.monotonic()
        self.last_pass: datetime | None = None
        self.next_check: datetime | None = None
        self.outcomes: dict[str, str] = {}
        self.docker_state: str | None = None  # "connected" | "reconnecting" | None (not watching)
        self.rows: Sequence[SiteStatus] = ()  # every site's status after the last pass
        self.discovery: Synced | None = None  # the last discovery sync (skipped containers)

    # -- fed by the main thread ------------------------------------------------------------------
    def record(self, outcomes: Sequence[SiteOutcome], now: datetime) -> None:
        """Count what a pass did and remember each site's last outcome (for the page)."""
        m = self._metrics
        texts = dict(self.outcomes)
        for o in outcomes:
            texts[o.site] = outcome_text(o)
            if o.issued:
                m.issuances.labels(o.site).inc()
            if not o.ok:
                m.failures.labels(o.site, o.reason or "Unknown").inc()
                if o.reason in VERIFY_REASONS:
                    m.verify_failures.labels(o.site).inc()
        self.outcomes = texts
        self.last_pass = now

    def update_metrics(self, rows: Sequence[SiteStatus], wakeups: Mapping[str, Wakeup]) -> None:
        self.rows = rows
        sites = {}
        for r in rows:
            real = r.cert if r.cert is not None and not r.cert.placeholder else None
            st = r.site_state
            w = wakeups.get(r.name)
            sites[r.name] = {
                "not_before": real.not_before if real else None,
                "not_after": real.not_after if real else None,
                "renewal": r.renew_after,
                "last_success": st.last_success,
                "next_wakeup": w.at if w else None,
                "failures": st.failures,
                "undelivered": 1 if r.state == "undelivered" else 0,
            }
        self._metrics.set_sites(sites)

    # -- endpoint.App ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, object]]:
        loop = self.loop
        stopping = loop.stopping
        failing = loop.passes_failing
        alive = loop.scheduler_alive() and not stopping and not failing
        busy = loop.busy_since
        body: dict[str, object] = {
            "status": "ok" if alive else "stopping" if stopping else
                      "passes cannot run" if failing else "scheduler stopped",
            "ready": self.ready,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "busy_seconds": round(time.monotonic() - busy, 3) if busy is not None else None,
        }
        if self.docker_state:
            body["docker_events"] = self.docker_state
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return self.ready, {"ready": self.ready, "last_pass": self.last_pass}

    def metrics(self) -> tuple[bytes, str]:
        return self._metrics.render(), CONTENT_TYPE

    def status_page(self, page: int = 1) -> str:
        """Up to PER_PAGE sites: their rows re-read from local files now (current days left and
        states); past that, which sites make up page `page`, and the summary, come from the
        statuses of the last pass (what needs attention first)."""
        from tlsbridge.status import collect
        from tlsbridge.wiring import build_ports

        loop = self.loop
        cfg, wakeups, outcomes = loop.cfg, loop.wakeups, self.outcomes
        now = loop.now()
        ports = build_ports(cfg, loop.memo)  # its own state store: this is an HTTP thread
        skipped = tuple(str(s) for s in self.discovery.skips) if self.discovery else ()
        meta = PageMeta(version=__version__, ready=self.ready, last_pass=self.last_pass,
                        next_check=self.next_check, docker=self.docker_state, skipped=skipped)

        def row(r: SiteStatus) -> PageRow:
            return replace(page_row(r, wakeups.get(r.name), outcomes.get(r.name)),
                           discovered=cfg.sites[r.name].discovered if r.name in cfg.sites else None)

        try:
            if len(cfg.sites) <= PER_PAGE:
                fresh = collect(cfg, ports, now)
                fresh.sort(key=lambda r: attention(r.state, r.site_state.failures))
                return render([row(r) for r in fresh], now, meta)
            known = {r.name: r for r in self.rows if r.name in cfg.sites}
            unknown = [n for n in cfg.sites if n not in known]  # added since (a pass follows a reload)
            order = unknown + sorted(known, key=lambda n: attention(known[n].state,
                                                                      known[n].site_state.failures))
            counts: dict[str, int] = {"missing": len(unknown)} if unknown else {}
            for r in known.values():
                counts[r.state] = counts.get(r.state, 0) + 1
            pages = page_count(len(order))
            page = min(max(page, 1), pages)
            names = order[(page - 1) * PER_PAGE:page * PER_PAGE]
            rows = [row(r) for r in collect(cfg, ports, now, names)]
            return render(rows, now, meta, counts=counts, page=page, pages=pages)
        finally:
            ports.store.close()


def page_row(r: SiteStatus, wakeup: Wakeup | None, outcome: str | None) -> PageRow:
    c = r.cert
    st = r.site_state
    if outcome is None and st.last_reason:
        outcome = f"failed ({st.last_reason})" if st.failures else None
    return PageRow(
        name=r.name, domains=r.domains, state=r.state,
        issuer=c.issuer if c else None,
        not_before=c.not_before if c else None,
        not_after=c.not_after if c else None,
        renew_at=r.renew_after,
        next_wakeup=wakeup.at if wakeup else None,
        wakeup_reason=wakeup.reason if wakeup else None,
        last_outcome=outcome,
        last_error=r.last_error if st.failures else None,
        last_success=st.last_success,
        failures=st.failures,
        ca=r.ca_label if r.ca else None,
        retry_after=r.retry_after,
    )


def outcome_text(o: SiteOutcome) -> str:
    d = o.plan.decision
    if not o.ok:
        return f"failed ({o.reason})"
    if o.issued and o.cert is not None:
        return f"{_VERBS.get(d.action, d.action.value)} ({d.reason}), serial {o.cert.serial_hex[:16]}"
    if o.published and o.cert is not None:
        return f"published serial {o.cert.serial_hex[:16]} ({d.reason})"
    if d.action is Action.WAIT:
        return f"waiting ({d.reason})"
    return f"up to date ({d.reason})" if d.action is Action.NONE else f"{d.action.value} ({d.reason})"
