"""Observe -> decide -> apply, per site, failures isolated. Shared by `renew` and `run`.

Level-triggered: each pass compares what certbot holds with what is published (and, with a
deliverer, what the containers serve), so a crash between issuing and publishing is repaired by
the next pass without relying on any hook having fired.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from tlsbridge import policy
from tlsbridge.adapters.certstore import CertStore
from tlsbridge.adapters.publish import Ownership, Publisher
from tlsbridge.adapters.statestore import StateStore
from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import AriError, CertbotError, RateLimitedError, TlsbridgeError
from tlsbridge.model import Action, Decision, ObservedCert, SiteState
from tlsbridge.plan import SitePlan, plan_site

logger = logging.getLogger(__name__)


class Obtainer(Protocol):
    def obtain(self, site: Site, action: Action) -> None: ...


class WindowSource(Protocol):
    def window(self, cert_id: str, now: datetime) -> object: ...


class Deliverer(Protocol):
    """Gets a published certificate served (issue 3: Docker reload + verification)."""

    def wants(self, site: Site) -> bool: ...
    def bootstrap(self, site: Site) -> None: ...
    def deliver(self, site: Site, cert: ObservedCert) -> None: ...


@dataclass
class SiteOutcome:
    site: str
    plan: SitePlan
    ok: bool = True
    error: str | None = None
    reason: str | None = None
    issued: bool = False
    published: bool = False
    cert: ObservedCert | None = None
    extra: dict[str, object] = field(default_factory=dict)


def site_hash(cfg: Config, site: Site) -> str:
    """Changes when anything that shapes the site's certificate changes (resets its backoff)."""
    key = repr((site.domains, cfg.acme.key_type, cfg.acme.profile, cfg.acme.directory,
                cfg.challenge.method))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Reconciler:
    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        *,
        obtainer: Obtainer | None = None,
        ari: WindowSource | None = None,
        deliverer: Deliverer | None = None,
        store: StateStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.certstore = CertStore(cfg.certbot.config_dir)
        p = cfg.publish
        self.publisher = Publisher(p.dir, Ownership(p.owner, p.group, p.key_mode, p.cert_mode, p.keep))
        self.store = store or StateStore(cfg.state.dir)
        self._obtainer = obtainer
        self._ari = ari
        self.deliverer = deliverer
        self.rng = rng or random.Random()

    # -- lazily built adapters (keep the nothing-due path free of their imports) -----------------
    @property
    def obtainer(self) -> Obtainer:
        if self._obtainer is None:
            from tlsbridge.adapters.certbot import CertbotRunner

            self._obtainer = CertbotRunner(self.cfg)
        return self._obtainer

    @property
    def ari(self) -> WindowSource:
        if self._ari is None:
            from tlsbridge.adapters.ari import AriClient

            self._ari = AriClient(self.cfg.acme.directory, self.cfg.acme.ca_bundle)
        return self._ari

    # -- observe and decide ----------------------------------------------------------------------
    def refresh_ari(self, site: str, cert: ObservedCert, state: SiteState, now: datetime) -> bool:
        """Bring the cached ARI window up to date if the CA allows asking again. True if changed."""
        if self.cfg.renewal.before_expiry is not None or cert.placeholder or not cert.ari_cert_id:
            return False
        changed = False
        if state.ari_for != cert.fingerprint:
            state.ari = state.chosen_renewal = state.chosen_for = None
            state.ari_for = cert.fingerprint
            changed = True
        if state.ari is not None and now < state.ari.retry_after:
            return changed
        try:
            window = self.ari.window(cert.ari_cert_id, now)
        except AriError as exc:
            logger.warning("site=%s ARI unavailable, using the cached window or the lifetime rule: %s",
                           site, exc)
            return changed
        state.ari = window  # type: ignore[assignment]
        return True

    def decide(self, site: Site, state: SiteState, cert: ObservedCert | None, now: datetime,
               force: bool) -> tuple[Decision, bool]:
        """The site's decision; True when `state` gained something to remember."""
        changed = False
        sched = None
        if cert is not None and not cert.placeholder:
            chosen = state.chosen_renewal if state.chosen_for == cert.fingerprint else None
            ari = state.ari if state.ari_for == cert.fingerprint else None
            # Seeded by the certificate: the random moment is stable even before it is stored.
            sched = policy.schedule(cert, before_expiry=self.cfg.renewal.before_expiry, ari=ari,
                                    chosen=chosen, now=now, rng=random.Random(cert.fingerprint))
            if sched.chosen is not None:
                state.chosen_renewal, state.chosen_for = sched.chosen, cert.fingerprint
                changed = True
        decision = policy.decide(domains=site.domains, key_type=self.cfg.acme.key_type, cert=cert,
                                 sched=sched, now=now, force=force)
        obtaining = decision.action in (Action.ISSUE, Action.REISSUE, Action.RENEW)
        if obtaining and state.next_attempt and now < state.next_attempt and not force:
            decision = Decision(Action.WAIT, "BackingOff",
                                f"failed {state.failures}x ({state.last_reason}); next attempt "
                                f"{state.next_attempt:%Y-%m-%dT%H:%MZ}", decision.renew_at)
        elif decision.action is Action.NONE and cert is not None:
            files = self.certstore.files(site.name)
            if files is not None and not self.publisher.is_current(site.name, files):
                decision = replace(decision, action=Action.PUBLISH, reason="NotPublished",
                                   message="certbot holds a certificate that is not published; "
                                           + decision.message)
        return decision, changed

    def plan(self, site: Site, state: SiteState, now: datetime,
             force: bool) -> tuple[SitePlan, ObservedCert | None, bool]:
        """Observe and decide for one site; True when `state` changed and must be saved."""
        cert = self.certstore.observe(site.name)
        changed = False
        if state.config_hash != (h := site_hash(self.cfg, site)):
            state.config_hash, state.failures, state.next_attempt = h, 0, None
            changed = True
        if cert is not None:
            changed |= self.refresh_ari(site.name, cert, state, now)
        decision, chosen = self.decide(site, state, cert, now, force)
        published = self.publisher.read(site.name) is not None
        deliver = self.deliverer is not None and self.deliverer.wants(site)
        sp = plan_site(site.name, decision, bootstrap=deliver and not published, deliver=deliver)
        return sp, cert, changed | chosen

    # -- one pass ----------------------------------------------------------------------------------
    def run_pass(self, names: Iterable[str] | None = None, *, force: bool = False,
                 dry_run: bool = False) -> list[SiteOutcome]:
        sites = [self.cfg.sites[n] for n in names] if names else list(self.cfg.sites.values())
        states = self.store.load_all()
        outcomes = []
        for site in sites:
            state = states.get(site.name) or SiteState()
            now = self.clock.now()
            try:
                sp, cert, dirty = self.plan(site, state, now, force)
            except TlsbridgeError as exc:
                outcomes.append(self._failed(site, state, None, exc, now, dry_run))
                continue
            outcome = SiteOutcome(site.name, sp, cert=cert)
            if not dry_run and sp.decision.action not in (Action.NONE, Action.WAIT):
                try:
                    self.apply(site, sp, outcome)
                except TlsbridgeError as exc:
                    outcomes.append(self._failed(site, state, sp, exc, now, dry_run))
                    continue
                state.failures, state.next_attempt, state.last_error, state.last_reason = 0, None, None, None
                state.last_success = state.last_attempt = now
                dirty = True
                if outcome.issued and outcome.cert is not None:
                    self.refresh_ari(site.name, outcome.cert, state, self.clock.now())
                    self.decide(site, state, outcome.cert, self.clock.now(), False)
            if dirty and not dry_run:
                self.store.save(site.name, state)
            outcomes.append(outcome)
        return outcomes

    def apply(self, site: Site, sp: SitePlan, outcome: SiteOutcome) -> None:
        action = sp.decision.action
        deliver = self.deliverer is not None and self.deliverer.wants(site)
        if action in (Action.ISSUE, Action.REISSUE, Action.RENEW):
            if deliver and self.publisher.read(site.name) is None:
                assert self.deliverer is not None
                self.deliverer.bootstrap(site)
            logger.info("site=%s %s: %s", site.name, sp.decision.reason, sp.decision.message)
            self.obtainer.obtain(site, action)
            outcome.issued = True
        files = self.certstore.files(site.name)
        if files is None:
            raise CertbotError(f"site={site.name}: certbot reported success but "
                               f"{self.certstore.live_dir(site.name)} holds no certificate")
        cert = self.certstore.observe(site.name)
        assert cert is not None
        outcome.cert = cert
        if outcome.issued:
            logger.info("site=%s issued serial=%s not_after=%s", site.name, cert.serial_hex,
                        cert.not_after.isoformat())
        outcome.published = self.publisher.publish(site.name, files)
        if outcome.published:
            logger.info("site=%s published serial=%s into %s", site.name, cert.serial_hex,
                        self.publisher.site_dir(site.name))
        if deliver:
            assert self.deliverer is not None
            self.deliverer.deliver(site, cert)

    def _failed(self, site: Site, state: SiteState, sp: SitePlan | None, exc: TlsbridgeError,
                now: datetime, dry_run: bool) -> SiteOutcome:
        reason = getattr(exc, "reason", type(exc).__name__.removesuffix("Error"))
        logger.error("site=%s failed (%s): %s", site.name, reason, exc)
        if sp is None:
            sp = SitePlan(site.name, Decision(Action.NONE, "Error", str(exc)), ())
        if not dry_run:
            state.failures += 1
            state.last_error, state.last_reason, state.last_attempt = str(exc), reason, now
            retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
            state.next_attempt = policy.backoff(state.failures, self.rng, retry_after, now)
            try:
                self.store.save(site.name, state)
            except TlsbridgeError as store_exc:
                logger.error("site=%s %s", site.name, store_exc)
        return SiteOutcome(site.name, sp, ok=False, error=str(exc), reason=reason)
