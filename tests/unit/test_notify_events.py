"""Notifications: the pure decision (status rows + what was sent + now -> events, new memory),
the messages, the config section and the memory's (de)serialisation. Fixed clock, no I/O but a
temporary SQLite file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsbridge import config
from tlsbridge.adapters.notify import SentStore, decode, encode, redact, target_name
from tlsbridge.errors import ConfigError
from tlsbridge.model import ObservedCert, SiteState
from tlsbridge.notify.events import (
    EXPIRING,
    FAILING,
    NO_CERT,
    RECOVERED,
    RENEWED,
    UNDELIVERED,
    SiteMemory,
    Standing,
    decide,
)
from tlsbridge.notify.messages import render
from tlsbridge.notify.settings import NotifyConfig
from tlsbridge.status import SiteStatus

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CFG = NotifyConfig(urls=("json://127.0.0.1/x",))


def cert(serial: int = 0xAB, left: timedelta = 60 * DAY, lifetime: timedelta = 90 * DAY,
         placeholder: bool = False) -> ObservedCert:
    return ObservedCert(serial=serial, not_before=NOW + left - lifetime, not_after=NOW + left,
                        domains=("a.example",), key_type="ecdsa", issuer="CA", fingerprint=f"fp{serial}",
                        placeholder=placeholder)


def row(state: str = "valid", c: ObservedCert | None = None, failures: int = 0,
        error: str | None = None, reason: str | None = None) -> SiteStatus:
    st = SiteState(failures=failures, last_error=error, last_reason=reason,
                   next_attempt=NOW + timedelta(minutes=10) if failures else None)
    return SiteStatus(name="shop", domains=("a.example", "www.a.example"), cert=c if c is not None else cert(),
                      renew_after=NOW + 30 * DAY, published="/certs/shop", state=state, last_error=error,
                      site_state=st)


def mem(serial: str | None = "ab", **problems: tuple[timedelta, timedelta]) -> SiteMemory:
    """problems: kind=(first sent ago, last sent ago)."""
    return SiteMemory({k: Standing(NOW - a, NOW - b) for k, (a, b) in problems.items()}, serial)


FAIL2 = row("failing", failures=2, error="CA down", reason="CAUnreachable")

CASES = [
    # (name, row, memory before, config, expected events (kind, problem, repeat), problems kept)
    ("healthy, nothing remembered", row(), None, CFG, [], {}),
    ("healthy, remembered", row(), mem(), CFG, [], {}),
    ("one failure is silent", row("failing", failures=1), mem(), CFG, [], {}),
    ("two failures: failing", FAIL2, mem(), CFG, [(FAILING, None, False)], {FAILING}),
    ("after_failures 1", row("failing", failures=1), mem(), replace(CFG, after_failures=1),
     [(FAILING, None, False)], {FAILING}),
    ("failing, sent 3 h ago: silent", FAIL2, mem(failing=(3 * DAY, timedelta(hours=3))), CFG, [], {FAILING}),
    ("failing, sent a day ago: repeated", FAIL2, mem(failing=(3 * DAY, DAY)), CFG, [(FAILING, None, True)],
     {FAILING}),
    ("failing is over: recovered once", row(), mem(failing=(DAY, DAY)), CFG, [(RECOVERED, FAILING, False)], set()),
    ("undelivered", row("undelivered", error="serves the old one"), mem(), CFG,
     [(UNDELIVERED, None, False)], {UNDELIVERED}),
    ("delivered again", row(), mem(undelivered=(DAY, DAY)), CFG, [(RECOVERED, UNDELIVERED, False)], set()),
    ("90-day cert, 8 days left: not yet (7d cap)", row(c=cert(left=8 * DAY)), mem(), CFG, [], {}),
    ("90-day cert, 6 days left: expiring", row(c=cert(left=6 * DAY)), mem(), CFG, [(EXPIRING, None, False)],
     {EXPIRING}),
    ("6-day cert, 2 days left: not yet (a quarter: 36 h)", row(c=cert(left=2 * DAY, lifetime=6 * DAY)), mem(),
     CFG, [], {}),
    ("6-day cert, 30 h left: expiring", row(c=cert(left=timedelta(hours=30), lifetime=6 * DAY)), mem(), CFG,
     [(EXPIRING, None, False)], {EXPIRING}),
    ("expiry_warning 10d", row(c=cert(left=8 * DAY)), mem(), replace(CFG, expiry_warning=10 * DAY),
     [(EXPIRING, None, False)], {EXPIRING}),
    ("expired counts as expiring", row("expired", c=cert(left=-DAY)), mem(), CFG, [(EXPIRING, None, False)],
     {EXPIRING}),
    ("placeholder: no expiry warning", row("placeholder", c=cert(left=DAY, placeholder=True)), mem(NO_CERT),
     CFG, [], {}),
    ("renewed after expiring: recovery, no success message", row(c=cert(serial=0xCD)),
     mem(expiring=(DAY, DAY)), replace(CFG, on_success=True), [(RECOVERED, EXPIRING, False)], set()),
    ("failing and expiring: both", replace(FAIL2, cert=cert(left=DAY)), mem(), CFG,
     [(FAILING, None, False), (EXPIRING, None, False)], {FAILING, EXPIRING}),
    ("new serial, on_success off", row(c=cert(serial=0xCD)), mem(), CFG, [], {}),
    ("new serial, on_success on", row(c=cert(serial=0xCD)), mem(), replace(CFG, on_success=True),
     [(RENEWED, None, False)], {}),
    ("first issuance, on_success on", row(c=cert(serial=0xCD)), mem(NO_CERT), replace(CFG, on_success=True),
     [(RENEWED, None, False)], {}),
    ("never seen before, on_success on: silent", row(c=cert(serial=0xCD)), None, replace(CFG, on_success=True),
     [], {}),
    ("same serial, on_success on", row(), mem(), replace(CFG, on_success=True), [], {}),
]


@pytest.mark.parametrize(("name", "status", "before", "cfg", "expected", "kept"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, status: SiteStatus, before: SiteMemory | None, cfg: NotifyConfig,
                expected: list[tuple[str, str | None, bool]], kept: set[str]) -> None:
    events, after = decide([status], {"shop": before} if before else {}, NOW, cfg)
    assert [(e.kind, e.problem, e.repeat) for e in events] == expected
    assert set(after["shop"].problems) == set(kept)
    for e in events:  # every event renders
        m = render(e, NOW, None)
        assert m.body.startswith("Site shop (a.example, www.a.example): ")


def test_one_message_per_event_not_per_pass() -> None:
    memory: dict[str, SiteMemory] = {}
    sent = []
    for hour in range(0, 60, 6):  # a pass every 6 h for 2.5 days, failing all along
        events, memory = decide([FAIL2], memory, NOW + timedelta(hours=hour), CFG)
        sent += [(hour, e.kind, e.repeat) for e in events]
    assert sent == [(0, FAILING, False), (24, FAILING, True), (48, FAILING, True)]
    events, memory = decide([row()], memory, NOW + timedelta(hours=60), CFG)
    assert [(e.kind, e.problem) for e in events] == [(RECOVERED, FAILING)]
    assert decide([row()], memory, NOW + timedelta(hours=66), CFG)[0] == []


def test_a_site_gone_from_the_config_is_forgotten() -> None:
    _, after = decide([], {"old": mem(failing=(DAY, DAY))}, NOW, CFG)
    assert after == {}


def test_the_failing_message_says_what_next_and_what_to_check() -> None:
    events, _ = decide([FAIL2], {}, NOW, CFG)
    m = render(events[0], NOW, None)
    assert m.title == "tlsbridge: shop: renewal failing" and m.level == "failure"
    assert "failed 2 times in a row (CAUnreachable): CA down." in m.body
    assert "Next: tlsbridge tries again at 2026-06-10 12:10 UTC" in m.body
    assert "expires 2026-08-09 12:00 UTC, in 60.0 days" in m.body
    assert "Check: that this host reaches the CA's ACME directory" in m.body
    repeat = render(replace(events[0], since=NOW - DAY), NOW, None)
    assert "(still, since 2026-06-09 12:00 UTC)" in repeat.title
    undelivered, _ = decide([row("undelivered", error="nginx serves serial 12")], {}, NOW, CFG)
    u = render(undelivered[0], NOW, NOW + timedelta(hours=12))
    assert "not served: nginx serves serial 12." in u.body and "next pass (2026-06-11 00:00 UTC)" in u.body


@pytest.mark.parametrize(("text", "problem"), [
    ("notify: {urls: [nope]}", "notify.urls[0]: expected an Apprise URL"),
    ("notify: {urls: ['json://h/${NOTIFY_NOT_SET}']}", "notify.urls[0]: environment variable NOTIFY_NOT_SET"),
    ("notify: {urls: [json://h/p], after_failures: 0}", "notify.after_failures"),
    ("notify: {urls: [json://h/p], expiry_warning: -1d}", "notify.expiry_warning"),
    ("notify: {urls: [json://h/p], timeout: 1h}", "notify.timeout: must be between 1s and 5m"),
    ("notify: {urls: [json://h/p], on_succes: true}", "notify"),
])
def test_config_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(text)
    assert problem in str(err.value)


def test_config_reads_notify_with_interpolation_and_keeps_urls_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "t0ken-secret")
    cfg = config.parse("notify: {urls: ['json://h/${HOOK_TOKEN}', 'mailto://u:p@example.com'], "
                       "after_failures: 3, expiry_warning: 10d, on_success: true}")
    n = cfg.notify
    assert n.urls == ("json://h/t0ken-secret", "mailto://u:p@example.com")
    assert (n.after_failures, n.expiry_warning, n.on_success) == (3, 10 * DAY, True)
    assert "t0ken" not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        config.parse("notify: {urls: ['json://h/${HOOK_TOKEN} x']}")
    assert "t0ken" not in str(err.value)
    assert config.parse("{}").notify == NotifyConfig() and not NotifyConfig().enabled


def test_targets_are_named_without_their_url_and_errors_redacted() -> None:
    url = "json://hooks.example.net:8080/path/s3cr3t?token=abcdef"
    assert target_name(0, url) == "#1 (json)"
    text = "Failed to send to hooks.example.net:8080/path/s3cr3t?token=abcdef (timeout)"
    clean = redact(text, [url])
    assert "s3cr3t" not in clean and "abcdef" not in clean and "hooks.example" not in clean
    assert clean.endswith("(timeout)")


def test_the_memory_round_trips_through_its_table(tmp_path: Path) -> None:
    m = mem(failing=(DAY, timedelta(hours=1)))
    assert decode(encode(m)) == m
    store = SentStore(tmp_path)
    assert store.load() == {}
    assert not (tmp_path / "state.sqlite3").exists()  # reading creates nothing
    store.save({"shop": m, "blog": SiteMemory(serial=NO_CERT)})
    assert SentStore(tmp_path).load() == {"shop": m, "blog": SiteMemory(serial=NO_CERT)}
    store.save({"blog": SiteMemory(serial="12")})
    assert SentStore(tmp_path).load() == {"blog": SiteMemory(serial="12")}


def test_validate_and_a_quiet_pass_never_import_apprise(tmp_path: Path) -> None:
    """Apprise is imported only when a message goes out: not by `validate`, not by the
    sidecar's modules, not by a pass with nothing to say (a fresh interpreter checks)."""
    import subprocess
    import sys

    (tmp_path / "c.yaml").write_text(f"state: {{dir: {tmp_path}/state}}\npublish: {{dir: {tmp_path}/certs}}\n"
                                     "notify: {urls: ['json://127.0.0.1:9/x']}\n")
    code = f"""
import sys
from tlsbridge.cli import main
assert main(["-c", "{tmp_path}/c.yaml", "validate"]) == 0
import tlsbridge.sidecar.loop, tlsbridge.notify.dispatch
from tlsbridge import config
from tlsbridge.notify.dispatch import Notifier
cfg = config.load(__import__("pathlib").Path("{tmp_path}/c.yaml"))
assert Notifier(cfg.notify, cfg.state.dir, background=True).after_pass([], __import__("datetime").datetime.now()) == []
print("apprise" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
