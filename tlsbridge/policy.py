"""Pure renewal policy: (site, observation, config, now) -> Decision with a reason.

No I/O and no clock reads: `now` and the random source are arguments, so tests pin them. The
reconciler observes (reconcile.py), `decide_site` decides here, and the reconciler applies.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from tlsbridge.config import Config, Site
from tlsbridge.durations import format_duration
from tlsbridge.model import Action, AriAnswer, AriWindow, Decision, Observation, ObservedCert, SiteState

SHORT_LIFETIME = timedelta(days=10)
EXPIRY_MARGIN = 0.1  # an ARI moment is never later than this share of the lifetime before expiry
BACKOFF_STEPS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100), timedelta(days=1))
ARI_RETRY = timedelta(hours=6)  # after a failed renewalInfo request (certbot waits as long)
NO_ARI_RETRY = timedelta(days=1)  # the CA's directory has no renewalInfo
OBTAIN = (Action.ISSUE, Action.REISSUE, Action.RENEW)


@dataclass(frozen=True)
class Schedule:
    """When a certificate should be renewed, by which rule, and an ARI moment to remember."""

    renew_at: datetime
    rule: str  # "ari" | "lifetime" | "before_expiry"
    detail: str
    chosen: datetime | None = None  # a newly chosen ARI moment the caller must store


def lifetime_renew_at(cert: ObservedCert) -> datetime:
    """Renew with 1/3 of the lifetime left; 1/2 for certificates shorter than 10 days."""
    lifetime = cert.lifetime
    left = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return cert.not_after - left


class Draw(Protocol):
    def random(self) -> float: ...


class SeededLater:
    """random.Random(seed), made only when a number is drawn: seeding costs ~5 us, and a
    schedule with its moment already chosen draws nothing (every site, every pass)."""

    __slots__ = ("_rng", "_seed")

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._rng: random.Random | None = None

    def random(self) -> float:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng.random()


def schedule(
    cert: ObservedCert,
    *,
    before_expiry: timedelta | None,
    ari: AriWindow | None,
    chosen: datetime | None,
    now: datetime,
    rng: Draw,
) -> Schedule:
    """Pick the renewal moment of `cert`.

    `ari` must belong to `cert` and `chosen` must be the moment remembered for it (callers drop
    both when the certificate changed). A remembered moment is kept while it lies inside the
    window, so the choice is made once and never postponed by re-randomising.
    """
    if before_expiry is not None:
        at = cert.not_after - before_expiry
        if before_expiry < cert.lifetime * 0.9:
            return Schedule(at, "before_expiry", f"{format_duration(before_expiry)} before expiry")
        lifetime_at = lifetime_renew_at(cert)
        return Schedule(
            lifetime_at,
            "lifetime",
            f"renewal.before_expiry {format_duration(before_expiry)} is not shorter than the "
            f"{format_duration(cert.lifetime)} lifetime; using the lifetime rule",
        )
    if ari is not None:
        # ARI is advisory: a window reaching past expiry (seen with short-lived certificates)
        # is cut at EXPIRY_MARGIN of the lifetime before it; one that starts that late is ignored.
        latest = cert.not_after - cert.lifetime * EXPIRY_MARGIN
        if ari.start >= latest:
            return Schedule(lifetime_renew_at(cert), "lifetime",
                            f"the CA's window {_window(ari)} starts too close to expiry; "
                            "using the lifetime rule")
        end = min(ari.end, latest)
        if chosen is not None and ari.start <= chosen <= end:
            return Schedule(chosen, "ari", f"a moment inside the CA's window {_window(ari)}")
        if end <= now:
            pick = ari.start
        else:
            low = max(ari.start, now)
            pick = low + (end - low) * rng.random()
        return Schedule(pick, "ari", f"a moment inside the CA's window {_window(ari)}", chosen=pick)
    return Schedule(
        lifetime_renew_at(cert),
        "lifetime",
        "1/2 of the lifetime left" if cert.lifetime < SHORT_LIFETIME else "1/3 of the lifetime left",
    )


def decide(
    *,
    domains: tuple[str, ...],
    key_type: str,
    cert: ObservedCert | None,
    sched: Schedule | None,
    now: datetime,
    force: bool = False,
) -> Decision:
    """What to do with certbot's lineage for a site. `sched` is required when `cert` is given."""
    if cert is None:
        return Decision(Action.ISSUE, "NoCertificate", "no certificate yet")
    if cert.placeholder:
        return Decision(Action.ISSUE, "Placeholder", "only a placeholder certificate is present")
    want, have = set(domains), set(cert.domains)
    if want != have:
        parts = []
        if want - have:
            parts.append("adds " + ", ".join(sorted(want - have)))
        if have - want:
            parts.append("drops " + ", ".join(sorted(have - want)))
        return Decision(Action.REISSUE, "DomainsChanged", "the config " + " and ".join(parts))
    if cert.key_type != key_type:
        return Decision(Action.REISSUE, "KeyTypeChanged", f"key type {cert.key_type} -> {key_type}")
    if force:
        return Decision(Action.RENEW, "Forced", "--force was given")
    assert sched is not None
    if now >= cert.not_after:
        return Decision(Action.RENEW, "Expired", f"expired {_ts(cert.not_after)}", sched.renew_at)
    if now >= sched.renew_at:
        return Decision(Action.RENEW, "Due", f"due since {_ts(sched.renew_at)} ({sched.detail})",
                        sched.renew_at)
    return Decision(Action.NONE, "NotDue", f"renews at {_ts(sched.renew_at)} ({sched.detail})",
                    sched.renew_at)


def backoff(failures: int, rng: random.Random, retry_after: datetime | None, now: datetime) -> datetime:
    """When to try again after `failures` consecutive failures (1m, 10m, 100m, then daily, +-10%).

    A CA's retry-after (rate limits) is a floor, never shortened by jitter.
    """
    step = BACKOFF_STEPS[min(max(failures, 1), len(BACKOFF_STEPS)) - 1]
    at = now + step * (0.9 + 0.2 * rng.random())
    if retry_after is not None and retry_after > at:
        at = retry_after
    return at


@functools.lru_cache(maxsize=8192)  # the same stored moments come back on every pass
def _ts(at: datetime) -> str:
    """2026-06-01T12:00Z (times here are UTC; isoformat is ~2x faster than strftime)."""
    return at.isoformat(timespec="minutes")[:16] + "Z"


def _window(ari: AriWindow) -> str:
    return f"{_ts(ari.start)}..{_ts(ari.end)}"


# -- one site: observation -> verdict ----------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """A site's decision, and what to remember about it (saved only when it differs)."""

    decision: Decision
    state: SiteState  # `obs.state` itself when there is nothing new to remember
    bootstrap: bool = False  # obtaining while nothing real is published: a placeholder first


def site_hash(cfg: Config, site: Site) -> str:
    """Changes when anything that shapes the site's certificate changes (resets its backoff)."""
    return _hash_of((site.domains, cfg.acme.key_type, cfg.acme.profile, cfg.acme.directory,
                     cfg.challenge.method))


@functools.lru_cache(maxsize=8192)  # asked for every site on every pass
def _hash_of(key: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def uses_ari(cert: ObservedCert, before_expiry: timedelta | None) -> bool:
    """Whether `cert`'s renewal moment comes from the CA's ARI window (when it offers one)."""
    return before_expiry is None and not cert.placeholder and bool(cert.ari_cert_id)


def ari_due(cert: ObservedCert, state: SiteState, before_expiry: timedelta | None, now: datetime) -> bool:
    """Whether to ask the CA for `cert`'s renewal window now: never while a remembered answer
    (a window until its Retry-After, "no ARI" or a failure until `ari_retry_at`) still stands."""
    if not uses_ari(cert, before_expiry):
        return False
    if state.ari_for != cert.fingerprint:
        return True
    if state.ari is not None:
        return now >= state.ari.retry_after
    return state.ari_retry_at is None or now >= state.ari_retry_at


def remember(site: Site, obs: Observation, cfg: Config, now: datetime) -> tuple[SiteState, Schedule | None]:
    """The state to keep after observing (config hash, the CA's ARI answer, a chosen renewal
    moment) and the lineage's renewal schedule."""
    state = obs.state
    if state.config_hash != (h := site_hash(cfg, site)):
        state = replace(state, config_hash=h, failures=0, next_attempt=None)
    cert = obs.lineage
    if cert is None or cert.placeholder:
        return state, None
    fp = cert.fingerprint
    if uses_ari(cert, cfg.renewal.before_expiry):
        if state.ari_for != fp:  # a new certificate: the old answers were about another one
            state = replace(state, ari=None, chosen_renewal=None, chosen_for=None, ari_retry_at=None,
                            ari_for=fp)
        if obs.ari is not None:
            state = _with_answer(state, obs.ari, now)
    chosen = state.chosen_renewal if state.chosen_for == fp else None
    ari = state.ari if state.ari_for == fp else None
    # Seeded by the certificate: the random moment is stable even before it is stored.
    sched = schedule(cert, before_expiry=cfg.renewal.before_expiry, ari=ari, chosen=chosen, now=now,
                     rng=SeededLater(fp))
    if sched.chosen is not None:
        state = replace(state, chosen_renewal=sched.chosen, chosen_for=fp)
    return state, sched


def _with_answer(state: SiteState, answer: AriAnswer, now: datetime) -> SiteState:
    if answer.error is not None:  # keep a cached window; ask again in a while
        return replace(state, ari_retry_at=now + ARI_RETRY)
    if answer.window is None:  # the CA offers no ARI: the lifetime rule, and ask again much later
        return replace(state, ari=None, ari_retry_at=now + NO_ARI_RETRY)
    return replace(state, ari=answer.window, ari_retry_at=None)


def decide_site(site: Site, obs: Observation, cfg: Config, now: datetime, *, force: bool = False,
                delivers: bool = False) -> Verdict:
    """What to do for one site. `delivers`: published certificates are then reloaded and
    verified as served, and one not verified yet is delivered again."""
    state, sched = remember(site, obs, cfg, now)
    cert = obs.lineage
    decision = decide(domains=site.domains, key_type=cfg.acme.key_type, cert=cert, sched=sched, now=now,
                      force=force)
    if decision.action in OBTAIN and state.next_attempt and now < state.next_attempt and not force:
        decision = Decision(Action.WAIT, "BackingOff",
                            f"failed {state.failures}x ({state.last_reason}); next attempt "
                            f"{_ts(state.next_attempt)}", decision.renew_at)
    elif decision.action is Action.NONE and cert is not None:
        current = obs.published is not None and obs.published.fingerprint == cert.fingerprint
        if not current and obs.lineage_complete:
            decision = replace(decision, action=Action.PUBLISH, reason="NotPublished",
                               message="certbot holds a certificate that is not published; "
                                       + decision.message)
        elif current and delivers and state.delivered != cert.fingerprint:
            # Published but never verified as served (a failed reload or verification): retry.
            decision = replace(decision, action=Action.PUBLISH, reason="NotDelivered",
                               message="the published certificate is not verified as served yet; "
                                       + decision.message)
    if decision.action is Action.NONE and state.failures:
        # Nothing due, certbot's certificate published (and, with a deliverer, verified served):
        # whatever failed before (a --force, a refused reload since fixed) no longer matters.
        state = replace(state, failures=0, next_attempt=None, last_error=None, last_reason=None)
    nothing_real = obs.published is None or obs.published.placeholder
    return Verdict(decision, state, bootstrap=delivers and decision.action in OBTAIN and nothing_real)
