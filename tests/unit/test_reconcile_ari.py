"""When the CA offers no ARI, or it fails, the answer is remembered: no CA contact per pass.

The reconciler asks the CA only when `policy.ari_due` says so and remembers the answer through
`policy.remember`; these tests drive exactly that sequence, pass after pass, with a fixed clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from helpers import T0

from tlsbridge import config, policy
from tlsbridge.errors import AriError
from tlsbridge.model import AriAnswer, AriWindow, Observation, ObservedCert, SiteState
from tlsbridge.policy import ARI_RETRY, NO_ARI_RETRY

CERT = ObservedCert(serial=1, not_before=T0, not_after=T0 + timedelta(days=90), domains=("a.example",),
                    key_type="ecdsa", issuer="CN=x", fingerprint="f1", ari_cert_id="k.s")
CFG = config.parse("sites: {a: {domains: [a.example]}}\n")
SITE = CFG.sites["a"]


class Source:
    """A renewalInfo source that answers from a script and counts the questions."""

    def __init__(self, *answers: AriWindow | None | AriError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def window(self, cert_id: str, now: datetime, ca: str | None = None) -> AriWindow | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, AriError):
            raise answer
        return answer


def one_pass(src: Source, state: SiteState, now: datetime, cert: ObservedCert = CERT) -> SiteState:
    """What a pass does about ARI: ask when due (as Reconciler.observe), then remember."""
    answer = None
    if policy.ari_due(cert, state, CFG.renewal.before_expiry, now):
        try:
            answer = AriAnswer(src.window("k.s", now))
        except AriError as exc:
            answer = AriAnswer(None, error=str(exc))
    state, _ = policy.remember(SITE, Observation(cert, cert, None, state, answer), CFG, now)
    return state


def test_a_ca_without_ari_is_asked_again_only_a_day_later() -> None:
    src = Source(None, None)
    state = one_pass(src, SiteState(), T0)
    assert state.ari is None and state.ari_retry_at == T0 + NO_ARI_RETRY
    again = one_pass(src, state, T0 + timedelta(hours=23))
    assert again == state and src.calls == 1  # nothing new to remember: nothing saved
    one_pass(src, state, T0 + NO_ARI_RETRY)
    assert src.calls == 2


def test_a_failed_request_is_retried_after_six_hours_then_the_window_is_kept() -> None:
    window = AriWindow(T0 + timedelta(days=60), T0 + timedelta(days=61), retry_after=T0 + timedelta(days=2))
    src = Source(AriError("HTTP 500"), window)
    state = one_pass(src, SiteState(), T0)
    state = one_pass(src, state, T0 + timedelta(hours=1))
    assert src.calls == 1
    state = one_pass(src, state, T0 + ARI_RETRY)
    assert state.ari == window and state.ari_retry_at is None
    assert state.chosen_renewal is not None and window.start <= state.chosen_renewal <= window.end
    one_pass(src, state, T0 + timedelta(days=1))
    assert src.calls == 2  # inside the CA's Retry-After


def test_a_new_certificate_forgets_the_old_answer() -> None:
    src = Source(None, None)
    state = one_pass(src, SiteState(), T0)
    renewed = ObservedCert(**{**CERT.__dict__, "fingerprint": "f2"})
    state = one_pass(src, state, T0 + timedelta(minutes=1), renewed)
    assert src.calls == 2 and state.ari_for == "f2"


def test_no_question_with_a_fixed_before_expiry_or_without_an_ari_id() -> None:
    fixed = config.parse("renewal: {before_expiry: 30d}\nsites: {a: {domains: [a.example]}}\n")
    assert not policy.ari_due(CERT, SiteState(), fixed.renewal.before_expiry, T0)
    no_id = ObservedCert(**{**CERT.__dict__, "ari_cert_id": None})
    assert not policy.ari_due(no_id, SiteState(), None, T0)
    assert policy.ari_due(CERT, SiteState(), None, T0)
