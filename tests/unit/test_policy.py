"""The decision table, with a fixed clock and fixed randomness."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from helpers import T0

from tlsbridge import config, policy
from tlsbridge.model import Action, AriAnswer, AriWindow, Observation, ObservedCert, SiteState

DAY = timedelta(days=1)


def cert(lifetime: timedelta = 90 * DAY, domains: tuple[str, ...] = ("a.example",), key: str = "ecdsa",
         placeholder: bool = False, fp: str = "f1") -> ObservedCert:
    return ObservedCert(serial=1, not_before=T0, not_after=T0 + lifetime, domains=domains, key_type=key,
                        issuer="CN=test", fingerprint=fp, placeholder=placeholder, ari_cert_id="x.y")


def sched(c: ObservedCert, now: datetime, *, before: timedelta | None = None, ari: AriWindow | None = None,
          chosen: datetime | None = None, seed: int = 1) -> policy.Schedule:
    return policy.schedule(c, before_expiry=before, ari=ari, chosen=chosen, now=now, rng=random.Random(seed))


def decide(c: ObservedCert | None, now: datetime, *, domains: tuple[str, ...] = ("a.example",),
           key: str = "ecdsa", force: bool = False, **kw: object) -> tuple[Action, str]:
    s = sched(c, now, **kw) if c is not None and not c.placeholder else None  # type: ignore[arg-type]
    d = policy.decide(domains=domains, key_type=key, cert=c, sched=s, now=now, force=force)
    return d.action, d.reason


@pytest.mark.parametrize(
    ("c", "now", "kw", "expected"),
    [
        (None, T0, {}, (Action.ISSUE, "NoCertificate")),
        (cert(placeholder=True), T0, {}, (Action.ISSUE, "Placeholder")),
        (cert(domains=("a.example", "b.example")), T0, {}, (Action.REISSUE, "DomainsChanged")),
        (cert(), T0, {"domains": ("a.example", "c.example")}, (Action.REISSUE, "DomainsChanged")),
        (cert(domains=("b.example", "a.example")), T0, {"domains": ("a.example", "b.example")},
         (Action.NONE, "NotDue")),
        (cert(key="rsa2048"), T0, {}, (Action.REISSUE, "KeyTypeChanged")),
        (cert(), T0 + DAY, {"force": True}, (Action.RENEW, "Forced")),
        # lifetime rule: 90 days -> renew with 30 left, at day 60
        (cert(), T0 + 59 * DAY, {}, (Action.NONE, "NotDue")),
        (cert(), T0 + 60 * DAY, {}, (Action.RENEW, "Due")),
        (cert(), T0 + 91 * DAY, {}, (Action.RENEW, "Expired")),
        # before_expiry as a duration
        (cert(), T0 + 69 * DAY, {"before": 20 * DAY}, (Action.NONE, "NotDue")),
        (cert(), T0 + 70 * DAY, {"before": 20 * DAY}, (Action.RENEW, "Due")),
        # short-lived (6 days): half the lifetime, at day 3
        (cert(lifetime=6 * DAY), T0 + 2 * DAY, {}, (Action.NONE, "NotDue")),
        (cert(lifetime=6 * DAY), T0 + 3 * DAY, {}, (Action.RENEW, "Due")),
        # a before_expiry longer than the lifetime falls back to the lifetime rule (no loop)
        (cert(lifetime=6 * DAY), T0 + 1 * DAY, {"before": 30 * DAY}, (Action.NONE, "NotDue")),
    ],
)
def test_decision_table(c: ObservedCert | None, now: datetime, kw: dict[str, object],
                        expected: tuple[Action, str]) -> None:
    assert decide(c, now, **kw) == expected  # type: ignore[arg-type]


def test_a_renewed_short_lived_certificate_is_not_due_again() -> None:
    """The 6-day profile: renewing at half-life gives a fresh certificate that is not due."""
    now = T0 + 3 * DAY
    assert decide(cert(lifetime=6 * DAY), now)[0] is Action.RENEW
    renewed = ObservedCert(serial=2, not_before=now, not_after=now + 6 * DAY, domains=("a.example",),
                           key_type="ecdsa", issuer="CN=test", fingerprint="f2")
    assert decide(renewed, now + timedelta(minutes=1))[0] is Action.NONE


def window(start_day: float, end_day: float) -> AriWindow:
    return AriWindow(T0 + start_day * DAY, T0 + end_day * DAY, retry_after=T0 + 400 * DAY)


def test_ari_moment_is_chosen_inside_the_window_once() -> None:
    c = cert()
    w = window(50, 52)
    first = sched(c, T0 + DAY, ari=w)
    assert first.rule == "ari" and first.chosen is not None
    assert w.start <= first.renew_at <= w.end
    # remembered: the same moment comes back and nothing new must be stored
    again = sched(c, T0 + 2 * DAY, ari=w, chosen=first.chosen, seed=99)
    assert again.renew_at == first.renew_at and again.chosen is None


def test_ari_moment_is_re_chosen_when_the_window_moves_away() -> None:
    c = cert()
    old = sched(c, T0, ari=window(50, 52))
    moved = sched(c, T0, ari=window(40, 41), chosen=old.chosen)
    assert moved.chosen is not None and T0 + 40 * DAY <= moved.renew_at <= T0 + 41 * DAY


def test_ari_window_in_the_past_means_renew_now() -> None:
    """A revoked certificate: the CA moves the window into the past."""
    c = cert()
    now = T0 + 10 * DAY
    assert decide(c, now, ari=window(9, 9.5)) == (Action.RENEW, "Due")


def test_ari_choice_never_lies_in_the_past_of_now() -> None:
    c = cert()
    now = T0 + 51 * DAY
    for seed in range(50):
        s = sched(c, now, ari=window(50, 52), seed=seed)
        assert now <= s.renew_at <= T0 + 52 * DAY


def test_an_ari_window_past_expiry_is_cut_before_it() -> None:
    """A 1-day certificate whose CA window ends after expiry: never a moment past not_after."""
    c = cert(lifetime=DAY)
    w = AriWindow(start=T0 + DAY * 0.5, end=T0 + DAY * 1.5, retry_after=T0)
    for seed in range(50):
        s = sched(c, T0, ari=w, seed=seed)
        assert s.rule == "ari" and T0 + DAY * 0.5 <= s.renew_at <= c.not_after - DAY * 0.1
    late = AriWindow(start=T0 + DAY * 0.95, end=T0 + DAY * 2, retry_after=T0)
    fallback = sched(c, T0, ari=late)
    assert fallback.rule == "lifetime" and fallback.renew_at == policy.lifetime_renew_at(c)


def test_ari_overrides_the_lifetime_rule_but_before_expiry_overrides_ari() -> None:
    c = cert()
    assert sched(c, T0, ari=window(80, 81)).rule == "ari"
    assert sched(c, T0, ari=window(80, 81), before=10 * DAY).rule == "before_expiry"


@pytest.mark.parametrize(("failures", "low", "high"), [
    (1, timedelta(seconds=54), timedelta(seconds=66)),
    (2, timedelta(minutes=9), timedelta(minutes=11)),
    (3, timedelta(minutes=90), timedelta(minutes=110)),
    (4, timedelta(hours=21.6), timedelta(hours=26.4)),
    (9, timedelta(hours=21.6), timedelta(hours=26.4)),
])
def test_backoff_steps(failures: int, low: timedelta, high: timedelta) -> None:
    for seed in range(20):
        at = policy.backoff(failures, random.Random(seed), None, T0)
        assert low <= at - T0 <= high


def test_rate_limit_retry_after_is_a_floor() -> None:
    later = T0 + 3 * DAY
    assert policy.backoff(1, random.Random(1), later, T0) == later


# -- decide_site: the whole site decision from one Observation (pure, fixed clock) -----------------

CFG = config.parse("sites: {a: {domains: [a.example]}}\n")
SITE = CFG.sites["a"]
HASH = policy.site_hash(CFG, SITE)
OK = SiteState(config_hash=HASH)
FAILING = SiteState(config_hash=HASH, failures=2, next_attempt=T0 + DAY, last_error="boom",
                    last_reason="CAUnreachable")
PLACEHOLDER = cert(placeholder=True, fp="p1")


def observed(lineage: ObservedCert | None = None, published: ObservedCert | None = None,
             complete: bool | None = None, state: SiteState = OK) -> Observation:
    return Observation(lineage, published, complete, state)


@pytest.mark.parametrize(
    ("obs", "now", "opts", "expected"),
    [
        # nothing at all: issue; with a deliverer, bootstrap a placeholder first
        (observed(), T0, {}, (Action.ISSUE, "NoCertificate", False)),
        (observed(), T0, {"delivers": True}, (Action.ISSUE, "NoCertificate", True)),
        # only a placeholder published, no lineage yet
        (observed(published=PLACEHOLDER), T0, {"delivers": True}, (Action.ISSUE, "NoCertificate", True)),
        # failing and backing off: wait, also with only a placeholder; --force goes anyway
        (observed(state=FAILING), T0, {}, (Action.WAIT, "BackingOff", False)),
        (observed(published=PLACEHOLDER, state=FAILING), T0, {"delivers": True},
         (Action.WAIT, "BackingOff", False)),
        (observed(state=FAILING), T0, {"force": True}, (Action.ISSUE, "NoCertificate", False)),
        (observed(state=FAILING), T0 + DAY, {}, (Action.ISSUE, "NoCertificate", False)),
        # a changed config resets the backoff (another certificate is wanted now)
        (observed(state=replace(FAILING, config_hash="old")), T0, {}, (Action.ISSUE, "NoCertificate", False)),
        # a valid, published lineage: nothing to do; a real certificate published is no bootstrap
        (observed(cert(), cert()), T0 + DAY, {}, (Action.NONE, "NotDue", False)),
        (observed(cert(), cert()), T0 + 60 * DAY, {"delivers": True}, (Action.RENEW, "Due", False)),
        (observed(cert(), PLACEHOLDER, complete=True), T0 + DAY, {}, (Action.PUBLISH, "NotPublished", False)),
        (observed(cert(), None, complete=True), T0 + DAY, {}, (Action.PUBLISH, "NotPublished", False)),
        (observed(cert(), None, complete=False), T0 + DAY, {}, (Action.NONE, "NotDue", False)),
        # published but never verified as served: deliver again (only with a deliverer)
        (observed(cert(), cert()), T0 + DAY, {"delivers": True}, (Action.PUBLISH, "NotDelivered", False)),
        (observed(cert(), cert(), state=replace(OK, delivered="f1")), T0 + DAY, {"delivers": True},
         (Action.NONE, "NotDue", False)),
        # a failed --force on a valid certificate: nothing due, so nothing to wait for
        (observed(cert(), cert(), state=replace(FAILING, delivered="f1")), T0 + DAY, {"delivers": True},
         (Action.NONE, "NotDue", False)),
    ],
)
def test_site_decision_table(obs: Observation, now: datetime, opts: dict[str, bool],
                             expected: tuple[Action, str, bool]) -> None:
    v = policy.decide_site(SITE, obs, CFG, now, **opts)
    assert (v.decision.action, v.decision.reason, v.bootstrap) == expected


def test_deciding_changes_nothing_it_was_given_and_says_what_to_remember() -> None:
    window = AriWindow(T0 + 60 * DAY, T0 + 62 * DAY, retry_after=T0 + DAY)
    obs = Observation(cert(), cert(), None, OK, AriAnswer(window))
    v = policy.decide_site(SITE, obs, CFG, T0)
    assert obs.state == OK  # the observation is untouched
    assert v.state.ari == window and v.state.ari_for == "f1"
    assert v.state.chosen_for == "f1" and v.state.chosen_renewal is not None
    assert window.start <= v.state.chosen_renewal <= window.end
    assert v.decision.renew_at == v.state.chosen_renewal
    # decided again with what was remembered: the same moment, and nothing new to save
    again = policy.decide_site(SITE, replace(obs, state=v.state, ari=None), CFG, T0 + DAY)
    assert again.state == v.state and again.decision.renew_at == v.decision.renew_at


def test_a_failure_that_no_longer_matters_is_cleared() -> None:
    """Issue 10 point 3: nothing due, published and served: `failing` does not stick."""
    obs = observed(cert(), cert(), state=replace(FAILING, delivered="f1"))
    v = policy.decide_site(SITE, obs, CFG, T0 + DAY, delivers=True)
    assert v.decision.action is Action.NONE
    assert (v.state.failures, v.state.next_attempt, v.state.last_error) == (0, None, None)
    # not delivered yet: the failure stands until the delivery succeeds
    v = policy.decide_site(SITE, observed(cert(), cert(), state=FAILING), CFG, T0 + DAY, delivers=True)
    assert v.decision.reason == "NotDelivered" and v.state.failures == FAILING.failures


def test_nothing_to_remember_keeps_the_very_same_state() -> None:
    state = replace(OK, delivered="f1")
    fixed = config.parse("renewal: {before_expiry: 30d}\nsites: {a: {domains: [a.example]}}\n")
    obs = Observation(cert(), cert(), None, replace(state, config_hash=policy.site_hash(fixed, SITE)))
    v = policy.decide_site(fixed.sites["a"], obs, fixed, T0 + DAY, delivers=True)
    assert v.state is obs.state and v.decision.reason == "NotDue"
