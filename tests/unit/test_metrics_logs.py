"""Metric names and labels, JSON logs, secret redaction, --listen parsing."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from tlsbridge.errors import UsageError
from tlsbridge.sidecar.endpoint import parse_listen
from tlsbridge.sidecar.logjson import JsonFormatter, RedactingFilter, redact
from tlsbridge.sidecar.metrics import Metrics

AT = datetime(2026, 6, 1, tzinfo=UTC)
KEY = ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
       "-----END PRIVATE KEY-----")


def test_metric_names_are_prefixed_and_per_site() -> None:
    m = Metrics()
    m.set_sites({"shop": {"not_before": AT, "not_after": AT, "renewal": AT,
                          "last_success": AT, "next_wakeup": None, "failures": 0}})
    m.passes.labels("all").inc()
    m.issuances.labels("shop").inc()
    m.failures.labels("shop", "CAUnreachable").inc()
    m.reloads.labels("shop").inc()
    m.verify_failures.labels("shop").inc()
    text = m.render().decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#") and not line.startswith(("process_", "python_"))}
    assert names == {
        "tlsbridge_build_info",
        "tlsbridge_certificate_not_before_seconds", "tlsbridge_certificate_not_after_seconds",
        "tlsbridge_certificate_renewal_time_seconds", "tlsbridge_last_success_time_seconds",
        "tlsbridge_site_consecutive_failures", "tlsbridge_passes_total",
        "tlsbridge_pass_errors_total", "tlsbridge_last_pass_duration_seconds",
        "tlsbridge_last_pass_time_seconds", "tlsbridge_issuances_total", "tlsbridge_failures_total",
        "tlsbridge_reloads_total", "tlsbridge_verification_failures_total",
        "tlsbridge_docker_events_connected",
    }
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    assert float(values['tlsbridge_certificate_not_after_seconds{site="shop"}']) == AT.timestamp()
    m.daemon_tls_not_after.labels("server").set(AT.timestamp())
    assert 'tlsbridge_daemon_tls_not_after_seconds{cert="server"}' in m.render().decode()
    assert 'tlsbridge_failures_total{reason="CAUnreachable",site="shop"} 1.0' in text
    assert "_created" not in text
    assert "process_resident_memory_bytes" in text


def test_forgotten_sites_lose_their_series() -> None:
    m = Metrics()
    m.set_sites({site: {"not_after": AT, "failures": 1} for site in ("a", "b")})
    m.issuances.labels("b").inc()
    m.failures.labels("b", "Verify").inc()
    assert 'site="b"' in m.render().decode()
    m.set_sites({"a": {"not_after": AT, "failures": 1}})
    text = m.render().decode()
    assert 'site="a"' in text and 'site="b"' not in text


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    rec = logging.LogRecord("tlsbridge.reconcile", logging.INFO, __file__, 1, msg, args, None)
    if exc:
        try:
            raise RuntimeError("boom " + KEY)
        except RuntimeError:
            import sys

            rec.exc_info = sys.exc_info()
    return rec


def test_json_lines_carry_level_logger_site_and_no_secrets() -> None:
    line = JsonFormatter().format(_record("site=%s published serial=%s; key %s", "shop", "ab", KEY,
                                          exc=True))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "INFO" and obj["logger"] == "tlsbridge.reconcile" and obj["site"] == "shop"
    assert obj["ts"].endswith("Z")
    assert "PRIVATE KEY" not in line and "MIGHAg" not in line
    assert "[redacted private key]" in obj["msg"] and "RuntimeError" in obj["exc"]


def test_redaction_of_flags_and_the_text_filter() -> None:
    assert redact("certbot --eab-hmac-key s3cr3t -d x") == "certbot --eab-hmac-key *** -d x"
    assert "s3cr3t" not in redact("{'kid': 'k', 'hmac_key': 's3cr3t'}")
    rec = _record("oops %s", KEY)
    assert RedactingFilter().filter(rec)
    assert rec.getMessage() == "oops [redacted private key]"


@pytest.mark.parametrize(("text", "want"), [("0.0.0.0:8400", ("0.0.0.0", 8400)),
                                           ("[::]:9", ("::", 9)), ("localhost:1", ("localhost", 1))])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["8400", ":8400", "host:", "host:99999", "host:http", "host:0", "::1:8400"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_listen(text)


def test_reloads_are_counted_per_container_from_the_delivery_report() -> None:
    m = Metrics()
    m.count_reloads({"shop": ("web1", "web2"), "blog": ("web1",), "idle": ()})
    m.count_reloads({"shop": ("web1",)})
    text = m.render().decode()
    assert 'tlsbridge_reloads_total{site="shop"} 3.0' in text
    assert 'tlsbridge_reloads_total{site="blog"} 1.0' in text
    assert 'site="idle"' not in text


def test_undelivered_is_a_per_site_gauge_that_clears() -> None:
    m = Metrics()
    m.set_sites({"shop": {"failures": 1, "undelivered": 1}, "blog": {"failures": 0, "undelivered": 0}})
    text = m.render().decode()
    assert 'tlsbridge_site_undelivered{site="shop"} 1.0' in text
    assert 'tlsbridge_site_undelivered{site="blog"} 0.0' in text
    m.set_sites({"shop": {"failures": 0, "undelivered": 0}})
    text = m.render().decode()
    assert 'tlsbridge_site_undelivered{site="shop"} 0.0' in text
    assert 'tlsbridge_site_consecutive_failures{site="shop"} 0.0' in text
    assert 'site="blog"' not in text
