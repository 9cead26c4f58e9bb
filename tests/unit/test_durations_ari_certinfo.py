from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from helpers import T0, cert_files, make_cert

from tlsbridge.adapters.ari import parse_time, retry_after
from tlsbridge.certinfo import key_matches_cert, parse_pem
from tlsbridge.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1d12h", 129600), ("1w", 604800),
    (" 2H 30M ", 9000),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "3x", "d", "12", "1d-2h", "1.5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("30d", "1d12h", "5m", "1h0m1s"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_parse_time_handles_nanoseconds_and_z() -> None:
    assert parse_time("2026-11-30T00:44:06.123456789Z") == datetime(2026, 11, 30, 0, 44, 6, 123456, tzinfo=UTC)
    assert parse_time("2026-11-30T01:44:06+01:00") == datetime(2026, 11, 30, 0, 44, 6, tzinfo=UTC)


def test_retry_after_forms_and_clamps() -> None:
    assert retry_after(None, T0) == timedelta(hours=6)
    assert retry_after("21600", T0) == timedelta(hours=6)
    assert retry_after("1", T0) == timedelta(minutes=1)
    assert retry_after("9999999", T0) == timedelta(days=1)
    assert retry_after("Mon, 01 Jun 2026 02:00:00 GMT", T0) == timedelta(hours=2)
    assert retry_after("soon", T0) == timedelta(hours=6)


def test_parse_pem_reads_domains_key_type_and_ari_id() -> None:
    c, _ = make_cert(("a.example", "b.example"), serial=0x87654321)
    obs = parse_pem(c.public_bytes(serialization.Encoding.PEM))
    assert obs.domains == ("a.example", "b.example")
    assert obs.key_type == "ecdsa"
    assert obs.not_before == T0 and obs.serial_hex == "87654321"
    assert not obs.placeholder
    aki, serial = obs.ari_cert_id.split(".")  # type: ignore[union-attr]
    # a serial with the top bit set gets a leading zero byte (DER INTEGER)
    assert base64.urlsafe_b64decode(serial + "==") == b"\x00\x87\x65\x43\x21"


def test_key_matches_cert() -> None:
    a, b = cert_files(), cert_files()
    assert key_matches_cert(a.privkey, a.cert)
    assert not key_matches_cert(b.privkey, a.cert)
