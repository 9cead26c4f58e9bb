"""When the CA offers no ARI, or it fails, the answer is remembered: no CA contact per pass."""

from __future__ import annotations

from datetime import datetime, timedelta

from helpers import T0

from tlsbridge import config
from tlsbridge.clock import FixedClock
from tlsbridge.errors import AriError
from tlsbridge.model import AriWindow, ObservedCert, SiteState
from tlsbridge.reconcile import ARI_RETRY, NO_ARI_RETRY, Reconciler

CERT = ObservedCert(serial=1, not_before=T0, not_after=T0 + timedelta(days=90), domains=("a.example",),
                    key_type="ecdsa", issuer="CN=x", fingerprint="f1", ari_cert_id="k.s")


class Source:
    """A renewalInfo source that answers from a script and counts the questions."""

    def __init__(self, *answers: AriWindow | None | AriError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def window(self, cert_id: str, now: datetime) -> AriWindow | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, AriError):
            raise answer
        return answer


def reconciler(source: Source) -> Reconciler:
    cfg = config.parse("sites: {a: {domains: [a.example]}}\n")
    return Reconciler(cfg, FixedClock(T0), ari=source)


def test_a_ca_without_ari_is_asked_again_only_a_day_later() -> None:
    src = Source(None, None)
    rec, state = reconciler(src), SiteState()
    assert rec.refresh_ari("a", CERT, state, T0) is True
    assert rec.refresh_ari("a", CERT, state, T0 + timedelta(hours=23)) is False
    assert src.calls == 1
    rec.refresh_ari("a", CERT, state, T0 + NO_ARI_RETRY)
    assert src.calls == 2


def test_a_failed_request_is_retried_after_six_hours_then_the_window_is_kept() -> None:
    window = AriWindow(T0 + timedelta(days=60), T0 + timedelta(days=61), retry_after=T0 + timedelta(days=2))
    src = Source(AriError("HTTP 500"), window)
    rec, state = reconciler(src), SiteState()
    rec.refresh_ari("a", CERT, state, T0)
    rec.refresh_ari("a", CERT, state, T0 + timedelta(hours=1))
    assert src.calls == 1
    rec.refresh_ari("a", CERT, state, T0 + ARI_RETRY)
    assert state.ari == window and state.ari_retry_at is None
    rec.refresh_ari("a", CERT, state, T0 + timedelta(days=1))
    assert src.calls == 2  # inside the CA's Retry-After


def test_a_new_certificate_forgets_the_old_answer() -> None:
    src = Source(None, None)
    rec, state = reconciler(src), SiteState()
    rec.refresh_ari("a", CERT, state, T0)
    renewed = ObservedCert(**{**CERT.__dict__, "fingerprint": "f2"})
    rec.refresh_ari("a", renewed, state, T0 + timedelta(minutes=1))
    assert src.calls == 2
