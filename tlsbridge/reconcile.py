"""Observe -> decide -> apply, per site, failures isolated. Shared by `renew` and `run`.

Level-triggered: each pass compares what certbot holds with what is published (and, with a
deliverer, what the containers serve), so a crash between issuing and publishing is repaired by
the next pass without relying on any hook having fired.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from tlsbridge import policy
from tlsbridge.adapters.certmemo import MEMO, memo_file
from tlsbridge.adapters.certstore import CertStore
from tlsbridge.adapters.publish import Ownership, Publisher
from tlsbridge.adapters.statestore import StateStore
from tlsbridge.certinfo import parse_pem
from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import AriError, CertbotError, RateLimitedError, TlsbridgeError
from tlsbridge.model import Action, AriWindow, Decision, ObservedCert, SiteState
from tlsbridge.plan import SitePlan, plan_site

logger = logging.getLogger(__name__)

ARI_RETRY = timedelta(hours=6)  # after a failed renewalInfo request (certbot waits as long)
NO_ARI_RETRY = timedelta(days=1)  # the CA's directory has no renewalInfo

_OBTAIN = (Action.ISSUE, Action.REISSUE, Action.RENEW)
DELIVERED = "delivered"  # SiteState.extra key: fingerprint of the certificate last verified as served


class Obtainer(Protocol):
    def obtain(self, site: Site, action: Action) -> None: ...


class WindowSource(Protocol):
    def window(self, cert_id: str, now: datetime) -> AriWindow | None: ...


class Deliverer(Protocol):
    """Gets published certificates served (deliver.DockerDeliverer: reload + verification).

    Called in batches, once per pass, so a container shared by several sites is acted on once.
    Both return the sites that failed, by name; the others succeeded. Every site is delivered
    when there is a deliverer: any site may have containers labelled tlsbridge.site=<name>,
    which are found at delivery time.
    """

    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]: ...
    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> Mapping[str, TlsbridgeError]: ...


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
        self._hashes: dict[str, str] = {}  # site_hash per site: the config is fixed for a Reconciler

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
            state.ari = state.chosen_renewal = state.chosen_for = state.ari_retry_at = None
            state.ari_for = cert.fingerprint
            changed = True
        if state.ari is not None and now < state.ari.retry_after:
            return changed
        if state.ari is None and state.ari_retry_at is not None and now < state.ari_retry_at:
            return changed  # remembered: no ARI to be had before then, so no CA contact
        try:
            window = self.ari.window(cert.ari_cert_id, now)
        except AriError as exc:
            logger.warning("site=%s ARI unavailable, using the cached window or the lifetime rule: %s",
                           site, exc)
            state.ari_retry_at = now + ARI_RETRY
            return True
        if window is None:  # the CA offers no ARI: the lifetime rule, and ask again much later
            state.ari, state.ari_retry_at = None, now + NO_ARI_RETRY
            return True
        state.ari, state.ari_retry_at = window, None
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
                                    chosen=chosen, now=now, rng=policy.SeededLater(cert.fingerprint))
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
            current = self._published_is(site.name, cert)
            files = None if current else self.certstore.files(site.name)
            if files is not None and not self.publisher.is_current(site.name, files):
                decision = replace(decision, action=Action.PUBLISH, reason="NotPublished",
                                   message="certbot holds a certificate that is not published; "
                                           + decision.message)
            elif current and self._delivers and state.extra.get(DELIVERED) != cert.fingerprint:
                # Published but never verified as served (a failed reload or verification): retry.
                decision = replace(decision, action=Action.PUBLISH, reason="NotDelivered",
                                   message="the published certificate is not verified as served yet; "
                                           + decision.message)
        return decision, changed

    def _published_is(self, site: str, cert: ObservedCert) -> bool:
        """Whether the published leaf is `cert`: one stat() while nothing changed (certmemo)."""
        try:
            published = MEMO.observe(self.publisher.cert_path(site))
        except (OSError, ValueError):
            return False
        return published is not None and published.fingerprint == cert.fingerprint

    def plan(self, site: Site, state: SiteState, now: datetime,
             force: bool) -> tuple[SitePlan, ObservedCert | None, bool]:
        """Observe and decide for one site; True when `state` changed and must be saved."""
        cert = self.certstore.observe(site.name)
        changed = False
        h = self._hashes.get(site.name) or self._hashes.setdefault(site.name, site_hash(self.cfg, site))
        if state.config_hash != h:
            state.config_hash, state.failures, state.next_attempt = h, 0, None
            changed = True
        if cert is not None:
            changed |= self.refresh_ari(site.name, cert, state, now)
        decision, chosen = self.decide(site, state, cert, now, force)
        deliver = self._delivers
        bootstrap = deliver and decision.action in _OBTAIN and self._needs_bootstrap(site)
        sp = plan_site(site.name, decision, bootstrap=bootstrap, deliver=deliver)
        return sp, cert, changed | chosen

    @property
    def _delivers(self) -> bool:
        """Every site is delivered when there is a deliverer (labelled containers are found late)."""
        return self.deliverer is not None

    def _needs_bootstrap(self, site: Site) -> bool:
        """Nothing real is published yet, so the site's nginx may be down for lack of a certificate."""
        pem = self.publisher.read(site.name)
        return pem is None or parse_pem(pem).placeholder

    # -- one pass ----------------------------------------------------------------------------------
    def run_pass(self, names: Iterable[str] | None = None, *, force: bool = False,
                 dry_run: bool = False) -> list[SiteOutcome]:
        """Plan every site; bootstrap placeholders; obtain and publish per site; then deliver all
        that was published in one batch (one reload per container per pass)."""
        sites = [self.cfg.sites[n] for n in names] if names else list(self.cfg.sites.values())
        # Certificates parsed by earlier processes: a one-shot renew with nothing changed then
        # never loads the X.509 parser (FACTS: ~60 ms of a ~165 ms run over 200 sites).
        MEMO.load(memo_file(self.cfg.state.dir))
        states = self.store.load_all()
        outcomes: dict[str, SiteOutcome] = {}
        dirty: set[str] = set()
        todo: list[Site] = []
        for site in sites:
            state = states.setdefault(site.name, SiteState())
            now = self.clock.now()
            try:
                sp, cert, changed = self.plan(site, state, now, force)
            except TlsbridgeError as exc:
                outcomes[site.name] = self._failed(site, state, None, exc, now, dry_run)
                continue
            outcomes[site.name] = SiteOutcome(site.name, sp, cert=cert)
            if changed:
                dirty.add(site.name)
            if not dry_run and sp.decision.action not in (Action.NONE, Action.WAIT):
                todo.append(site)
        blocked = self._bootstrap([s for s in todo if outcomes[s.name].plan.decision.action in _OBTAIN])
        delivering: list[Site] = []
        for site in todo:
            state, outcome = states[site.name], outcomes[site.name]
            try:
                if site.name in blocked:
                    raise blocked[site.name]
                self.apply(site, outcome.plan, outcome)
            except TlsbridgeError as exc:
                outcomes[site.name] = self._failed(site, state, outcome.plan, exc, self.clock.now(),
                                                   dry_run, outcome)
                continue
            if self._delivers:
                delivering.append(site)
            else:
                self._succeeded(site, state, outcome)
                dirty.add(site.name)
        if delivering:
            assert self.deliverer is not None
            items = [(s, outcomes[s.name].cert) for s in delivering]
            failed = self.deliverer.deliver([(s, c) for s, c in items if c is not None])
            for site in delivering:
                state, outcome = states[site.name], outcomes[site.name]
                if site.name in failed:
                    outcomes[site.name] = self._failed(site, state, outcome.plan, failed[site.name],
                                                       self.clock.now(), dry_run, outcome)
                    continue
                if outcome.cert is not None:
                    state.extra[DELIVERED] = outcome.cert.fingerprint
                self._succeeded(site, state, outcome)
                dirty.add(site.name)
        for site in sites:
            if site.name in dirty and outcomes[site.name].ok and not dry_run:
                self.store.save(site.name, states[site.name])
        if not dry_run:
            MEMO.save(memo_file(self.cfg.state.dir))
        return [outcomes[s.name] for s in sites]

    def _succeeded(self, site: Site, state: SiteState, outcome: SiteOutcome) -> None:
        now = self.clock.now()
        state.failures, state.next_attempt, state.last_error, state.last_reason = 0, None, None, None
        state.last_success = state.last_attempt = now
        if outcome.issued and outcome.cert is not None:
            self.refresh_ari(site.name, outcome.cert, state, now)
            self.decide(site, state, outcome.cert, now, False)

    def _bootstrap(self, sites: list[Site]) -> Mapping[str, TlsbridgeError]:
        """Before issuing: publish a placeholder where nothing real is published, then have the
        deliverer start (or reload) those sites' nginx so it can answer HTTP-01. Returns the sites
        that must not go on to the CA."""
        if self.deliverer is None:
            return {}
        from tlsbridge.placeholder import make_placeholder, needs_placeholder

        errors: dict[str, TlsbridgeError] = {}
        ready = []
        for site in sites:
            if not self._delivers or not self._needs_bootstrap(site):
                continue
            pem = self.publisher.read(site.name)
            now = self.clock.now()
            try:
                if needs_placeholder(parse_pem(pem) if pem else None, site.domains, now):
                    files = make_placeholder(site.name, site.domains, now)
                    self.publisher.publish(site.name, files)
                    logger.info("site=%s published a self-signed placeholder (serial %s) so nginx can start",
                                site.name, parse_pem(files.cert).serial_hex)
            except TlsbridgeError as exc:
                errors[site.name] = exc
                continue
            ready.append(site)
        if ready:
            errors.update(self.deliverer.bootstrap(ready))
        return errors

    def apply(self, site: Site, sp: SitePlan, outcome: SiteOutcome) -> None:
        """Obtain (if the plan says so) and publish; delivery happens later, for the whole pass."""
        action = sp.decision.action
        if action in _OBTAIN:
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

    def _failed(self, site: Site, state: SiteState, sp: SitePlan | None, exc: TlsbridgeError,
                now: datetime, dry_run: bool, done: SiteOutcome | None = None) -> SiteOutcome:
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
        out = SiteOutcome(site.name, sp, ok=False, error=str(exc), reason=reason)
        if done is not None:  # what did happen before the failure (issued, published) stays reported
            out.issued, out.published, out.cert = done.issued, done.published, done.cert
        return out
