"""The served-certificate tracker: consecutive fresh matches after nginx retired its old workers."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding
from helpers import make_cert

from tlsbridge.delivery.verify import ServedTracker, describe, fingerprint

NEW, _ = make_cert(("new.example.com",), serial=0xABC)
OLD, _ = make_cert(("old.example.com",), serial=0xDEF)
NEW_DER, OLD_DER = NEW.public_bytes(Encoding.DER), OLD.public_bytes(Encoding.DER)


def tracker() -> ServedTracker:
    return ServedTracker(want=fingerprint(NEW_DER), since=100.0, need=3, settle=0.15)


def test_three_matches_after_the_settle_time_verify() -> None:
    t = tracker()
    assert not t.record_probe(100.16, NEW_DER)
    assert not t.record_probe(100.18, NEW_DER)
    assert t.record_probe(100.20, NEW_DER)


def test_matches_before_old_workers_retire_do_not_count() -> None:
    t = tracker()
    for at in (100.02, 100.04, 100.06, 100.08, 100.10):  # new, new, new... while old ones still accept
        assert not t.record_probe(at, NEW_DER)
    assert not t.record_probe(100.16, NEW_DER) and not t.record_probe(100.18, NEW_DER)
    assert t.record_probe(100.20, NEW_DER)


def test_the_old_certificate_or_a_failed_connection_resets_the_run() -> None:
    t = tracker()
    t.record_probe(100.2, NEW_DER)
    t.record_probe(100.22, NEW_DER)
    assert not t.record_probe(100.24, OLD_DER)
    t.record_probe(100.26, NEW_DER)
    t.record_probe(100.28, NEW_DER)
    assert not t.record_probe(100.30, None, "ConnectionRefusedError: refused")
    assert t.run == 0


def test_failure_names_what_was_served_instead() -> None:
    t = tracker()
    t.record_probe(100.2, OLD_DER)
    msg = t.failure()
    assert msg.startswith("serves serial def (subject CN=old.example.com, names old.example.com, "
                          "issuer CN=unit test CA)")
    assert "instead of the published certificate" in msg
    t.record_probe(100.3, NEW_DER)
    assert "answered 1 of 2 probes" in t.failure()


def test_failure_without_any_certificate_names_the_connection_error() -> None:
    t = tracker()
    t.record_probe(100.2, None, "ConnectionRefusedError: [Errno 111] Connection refused")
    assert t.failure() == "did not complete a TLS handshake (ConnectionRefusedError: [Errno 111] Connection refused)"


def test_describe_survives_garbage() -> None:
    assert describe(b"not a certificate").startswith("an unparsable certificate")


def test_without_stale_after_another_certificate_never_ends_the_wait() -> None:
    t = tracker()
    for i in range(10):
        assert not t.record_probe(100.2 + i / 100, OLD_DER)
    assert not t.stale


def test_after_a_start_three_others_in_a_row_are_stale() -> None:
    t = ServedTracker(want=fingerprint(NEW_DER), since=100.0, settle=0.0, stale_after=3)
    t.record_probe(100.01, OLD_DER)
    t.record_probe(100.02, OLD_DER)
    assert not t.stale
    t.record_probe(100.03, None, "ConnectionResetError")  # not an answer: the count starts again
    t.record_probe(100.04, OLD_DER)
    t.record_probe(100.05, NEW_DER)
    t.record_probe(100.06, OLD_DER)
    t.record_probe(100.07, OLD_DER)
    assert not t.stale
    assert not t.record_probe(100.08, OLD_DER)
    assert t.stale
    assert "instead of the published certificate" in t.failure()


def test_others_before_the_settle_time_are_not_stale_yet() -> None:
    t = ServedTracker(want=fingerprint(NEW_DER), since=100.0, settle=0.15, stale_after=3)
    for at in (100.02, 100.04, 100.06, 100.08):
        t.record_probe(at, OLD_DER)
    assert not t.stale
