"""Observe -> decide -> apply, per site, failures isolated. Shared by `renew` and `run`.

Level-triggered: each pass compares what certbot holds with what is published (and, with a
deliverer, what the containers serve), so a crash between issuing and publishing is repaired by
the next pass without relying on any hook having fired.

Per site: `observe` reads everything the decision needs into one `Observation` (local files,
the state store, the CA's ARI answer when one is due), `policy.decide_site` decides purely, and
the pass applies (bootstrap, obtain, publish, deliver) and records the outcome in the state.
Every adapter is injected: the local ones as `Ports`, the remote ones (certbot, ARI, delivery)
as arguments; wiring.py builds the real ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from tlsbridge import policy
from tlsbridge.adapters.certmemo import CertMemo, memo_file
from tlsbridge.adapters.certstore import CertStore
from tlsbridge.adapters.publish import Publisher
from tlsbridge.adapters.statestore import StateStore
from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import (
    AriError,
    CertbotError,
    DockerError,
    PublishError,
    RateLimitedError,
    TlsbridgeError,
)
from tlsbridge.model import (
    Action,
    AriAnswer,
    AriWindow,
    Decision,
    DeliveryReport,
    Observation,
    ObservedCert,
    SiteState,
)
from tlsbridge.plan import SitePlan, plan_site

logger = logging.getLogger(__name__)

_OBTAIN = policy.OBTAIN


class Obtainer(Protocol):
    def obtain(self, site: Site, action: Action) -> None: ...


class WindowSource(Protocol):
    """The CA's ARI window for a certificate; `ca`: the directory of the CA that issued it (a
    fallback CA's certificate is asked about there), None for the primary."""

    def window(self, cert_id: str, now: datetime, ca: str | None = None) -> AriWindow | None: ...


class Deliverer(Protocol):
    """Gets published certificates served (delivery.containers.DockerDeliverer: reload + verification).

    Called in batches, once per pass, so a container shared by several sites is acted on once.
    Both report the sites that failed, by name; the others succeeded (`deliver` also says which
    containers it reloaded). Every site is delivered when there is a deliverer: any site may have
    containers labelled tlsbridge.site=<name>, which are found at delivery time.
    """

    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]: ...
    def precheck(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]: ...
    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> DeliveryReport: ...


@dataclass(frozen=True)
class Ports:
    """The local adapters a pass reads and writes, sharing one certificate memo."""

    memo: CertMemo
    certs: CertStore
    publisher: Publisher
    store: StateStore

    def observe(self, name: str, state: SiteState) -> Observation:
        """What certbot holds and what is published for a site, from local files only (an
        unchanged certificate costs one stat(): the memo). Raises PublishError when the
        published certificate cannot be read; one that is not a certificate counts as none."""
        lineage = self.certs.current_cert(name)
        try:
            # One file, so one generation; a string path: this runs for every site on every pass
            published = self.memo.read_cert(self.publisher.cert_path(name))
        except ValueError:
            published = None
        except OSError as exc:
            raise PublishError(f"site={name}: cannot read the published cert.pem: {exc}") from exc
        complete = None
        if lineage is not None and (published is None or published.fingerprint != lineage.fingerprint):
            complete = self.certs.files(name) is not None
        return Observation(lineage, published, complete, state)


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
    # Backing off after failed attempts (the plan says WAIT): until when, and the last error.
    waiting_until: datetime | None = None
    last_error: str | None = None

    @property
    def backing_off(self) -> bool:
        return self.plan.decision.action is Action.WAIT


def delivery_failure(name: str, state: SiteState, report: DeliveryReport) -> TlsbridgeError | None:
    """Why a delivery batch failed a site, or None (decided from the report and the state alone).
    A site whose targets could not be looked up (engine unreachable) fails when it was delivered
    to some target before: its certificate is not served, and the next pass must retry. One that
    never had a target (no Docker in use) only gets a warning, as before."""
    if name in report.failed:
        return report.failed[name]
    if name in report.unreached:
        exc = report.unreached[name]
        if state.delivered_to:
            before = ", ".join(sorted(state.delivered_to))
            return DockerError(f"{exc} (it served this site before: {before}); "
                               "the next pass delivers it without a new certificate")
        logger.warning("%s (no target of this site was ever found, so this is not a failure)", exc)
    return None


class Reconciler:
    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        ports: Ports,
        *,
        obtainer: Obtainer,
        ari: WindowSource,
        deliverer: Deliverer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ports = ports
        self.obtainer = obtainer
        self.ari = ari
        self.deliverer = deliverer
        self.rng = rng or random.Random()

    @property
    def _delivers(self) -> bool:
        """Every site is delivered when there is a deliverer (labelled containers are found late)."""
        return self.deliverer is not None

    # -- observe ---------------------------------------------------------------------------------
    def observe(self, site: Site, state: SiteState, now: datetime) -> Observation:
        """Local files and the stored state, plus the CA's ARI answer when one is due."""
        obs = self.ports.observe(site.name, state)
        cert = obs.lineage
        if cert is not None and policy.ari_due(cert, state, self.cfg.renewal.before_expiry, now):
            obs = replace(obs, ari=self._ask_ari(site.name, cert, now))
        return obs

    def _ask_ari(self, name: str, cert: ObservedCert, now: datetime) -> AriAnswer:
        assert cert.ari_cert_id is not None
        try:
            return AriAnswer(self.ari.window(cert.ari_cert_id, now, self.ports.certs.server(name)))
        except AriError as exc:
            logger.warning("site=%s ARI unavailable, using the cached window or the lifetime rule: %s",
                           name, exc)
            return AriAnswer(None, error=str(exc))

    # -- one pass ----------------------------------------------------------------------------------
    def run_pass(self, names: Iterable[str] | None = None, *, force: bool = False,
                 dry_run: bool = False) -> list[SiteOutcome]:
        """Plan every site; bootstrap placeholders; obtain and publish per site; then deliver all
        that was published in one batch (one reload per container per pass)."""
        try:
            return self._run_pass(names, force=force, dry_run=dry_run)
        finally:
            self.ports.store.close()  # no connection outlives a pass

    def _run_pass(self, names: Iterable[str] | None, *, force: bool,
                  dry_run: bool) -> list[SiteOutcome]:
        sites = [self.cfg.sites[n] for n in names] if names else list(self.cfg.sites.values())
        memo = self.ports.memo
        # Certificates parsed by earlier processes: a one-shot renew with nothing changed then
        # never loads the X.509 parser (~60 ms of a ~165 ms run over 200 sites).
        memo.load(memo_file(self.cfg.state.dir))
        states = self.ports.store.load_all()
        outcomes: dict[str, SiteOutcome] = {}
        dirty: set[str] = set()
        todo: list[Site] = []
        bootstrap: list[tuple[Site, ObservedCert | None]] = []
        for site in sites:
            stored = states.get(site.name) or SiteState()
            now = self.clock.now()
            try:
                obs = self.observe(site, stored, now)
            except TlsbridgeError as exc:
                outcomes[site.name], states[site.name] = self._failed(site, stored, None, exc, now, dry_run)
                continue
            verdict = policy.decide_site(site, obs, self.cfg, now, force=force, delivers=self._delivers)
            states[site.name] = state = verdict.state
            sp = plan_site(site.name, verdict.decision, bootstrap=verdict.bootstrap, deliver=self._delivers)
            outcome = outcomes[site.name] = SiteOutcome(site.name, sp, cert=obs.lineage)
            if outcome.backing_off:
                outcome.waiting_until, outcome.last_error = state.next_attempt, state.last_error
            if state != stored:
                dirty.add(site.name)
            if not dry_run and sp.decision.action not in (Action.NONE, Action.WAIT):
                todo.append(site)
                if verdict.bootstrap:
                    bootstrap.append((site, obs.published))
        blocked = dict(self._bootstrap(bootstrap))
        if self.deliverer is not None:  # never spend a validation that cannot succeed
            booted = {s.name for s, _ in bootstrap}
            blocked.update(self.deliverer.precheck([
                s for s in todo if s.name not in booted and outcomes[s.name].plan.decision.action in _OBTAIN]))
        delivering: list[Site] = []
        for site in todo:
            outcome = outcomes[site.name]
            try:
                if site.name in blocked:
                    raise blocked[site.name]
                self.apply(site, outcome.plan, outcome)
            except TlsbridgeError as exc:
                outcomes[site.name], states[site.name] = self._failed(
                    site, states[site.name], outcome.plan, exc, self.clock.now(), dry_run, outcome)
                continue
            if self._delivers:
                delivering.append(site)
            else:
                states[site.name] = self._succeeded(site, states[site.name], outcome)
                dirty.add(site.name)
        if delivering:
            assert self.deliverer is not None
            items = [(s, outcomes[s.name].cert) for s in delivering]
            report = self.deliverer.deliver([(s, c) for s, c in items if c is not None])
            for site in delivering:
                state, outcome = states[site.name], outcomes[site.name]
                failure = delivery_failure(site.name, state, report)
                if failure is not None:
                    outcomes[site.name], states[site.name] = self._failed(
                        site, state, outcome.plan, failure, self.clock.now(), dry_run, outcome)
                    continue
                if outcome.cert is not None:
                    fp = outcome.cert.fingerprint
                    served = report.served.get(site.name)
                    to = state.delivered_to if served is None else dict.fromkeys(served, fp)
                    state = replace(state, delivered=fp, delivered_to=to)
                states[site.name] = self._succeeded(site, state, outcome)
                dirty.add(site.name)
        for site in sites:
            if site.name in dirty and outcomes[site.name].ok and not dry_run:
                self.ports.store.save(site.name, states[site.name])
        if not dry_run:
            memo.save(memo_file(self.cfg.state.dir))
        return [outcomes[s.name] for s in sites]

    def _succeeded(self, site: Site, state: SiteState, outcome: SiteOutcome) -> SiteState:
        """The state after a successful apply; a new certificate gets its ARI window and moment."""
        now = self.clock.now()
        state = replace(state, failures=0, next_attempt=None, last_error=None, last_reason=None,
                        last_success=now, last_attempt=now, retry_after=None)
        cert = outcome.cert
        if outcome.issued and cert is not None:
            ari = None
            if policy.ari_due(cert, state, self.cfg.renewal.before_expiry, now):
                ari = self._ask_ari(site.name, cert, now)
            state, _ = policy.remember(site, Observation(cert, None, None, state, ari), self.cfg, now)
        return state

    def _bootstrap(self, sites: list[tuple[Site, ObservedCert | None]]) -> Mapping[str, TlsbridgeError]:
        """Before issuing: publish a placeholder where nothing real is published (`sites`: each
        with what is published), then have the deliverer start (or reload) those sites' nginx so
        it can answer HTTP-01. Returns the sites that must not go on to the CA."""
        if self.deliverer is None or not sites:
            return {}
        from tlsbridge.placeholder import make_placeholder, needs_placeholder

        publisher = self.ports.publisher
        errors: dict[str, TlsbridgeError] = {}
        ready = []
        for site, published in sites:
            now = self.clock.now()
            try:
                if needs_placeholder(published, site.domains, now):
                    files = make_placeholder(site.name, site.domains, now)
                    publisher.publish(site.name, files)
                    placeholder = self._memorise(site.name)
                    logger.info("site=%s published a self-signed placeholder (serial %s) so nginx can start",
                                site.name, placeholder.serial_hex if placeholder else "?")
            except TlsbridgeError as exc:
                errors[site.name] = exc
                continue
            ready.append(site)
        if ready:
            errors.update(self.deliverer.bootstrap(ready))
        return errors

    def apply(self, site: Site, sp: SitePlan, outcome: SiteOutcome) -> None:
        """Obtain (if the plan says so) and publish; delivery happens later, for the whole pass."""
        certs, publisher = self.ports.certs, self.ports.publisher
        action = sp.decision.action
        if action in _OBTAIN:
            publisher.check_writable(site.name)  # never spend an order that cannot be published
            logger.info("site=%s %s: %s", site.name, sp.decision.reason, sp.decision.message)
            self.obtainer.obtain(site, action)
            outcome.issued = True
        files = certs.files(site.name)
        if files is None:
            raise CertbotError(f"site={site.name}: certbot reported success but "
                               f"{certs.live_dir(site.name)} holds no certificate")
        cert = certs.current_cert(site.name)
        assert cert is not None
        outcome.cert = cert
        if outcome.issued:
            logger.info("site=%s issued serial=%s not_after=%s", site.name, cert.serial_hex,
                        cert.not_after.isoformat())
        outcome.published = publisher.publish(site.name, files)
        self._memorise(site.name)
        if outcome.published:
            logger.info("site=%s published serial=%s into %s", site.name, cert.serial_hex,
                        publisher.site_dir(site.name))

    def _memorise(self, name: str) -> ObservedCert | None:
        """Put what was just published into the memo, while the parser is loaded anyway: the
        next pass (and a next process) then only stat()s it."""
        try:
            return self.ports.memo.read_cert(self.ports.publisher.cert_path(name))  # observe()'s key
        except (OSError, ValueError, PublishError):
            return None  # only a lost shortcut: the next pass reads it again

    def _failed(self, site: Site, state: SiteState, sp: SitePlan | None, exc: TlsbridgeError,
                now: datetime, dry_run: bool,
                done: SiteOutcome | None = None) -> tuple[SiteOutcome, SiteState]:
        """The failed outcome and the state with the failure and its backoff (saved at once)."""
        reason = getattr(exc, "reason", type(exc).__name__.removesuffix("Error"))
        logger.error("site=%s failed (%s): %s", site.name, reason, exc)
        if sp is None:
            sp = SitePlan(site.name, Decision(Action.NONE, "Error", str(exc)), ())
        if not dry_run:
            failures = state.failures + 1
            retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
            state = replace(state, failures=failures, last_error=str(exc), last_reason=reason,
                            last_attempt=now, retry_after=retry_after,
                            next_attempt=policy.backoff(failures, self.rng, retry_after, now))
            try:
                self.ports.store.save(site.name, state)
            except TlsbridgeError as store_exc:
                logger.error("site=%s %s", site.name, store_exc)
        out = SiteOutcome(site.name, sp, ok=False, error=str(exc), reason=reason)
        if done is not None:  # what did happen before the failure (issued, published) stays reported
            out.issued, out.published, out.cert = done.issued, done.published, done.cert
        return out, state
