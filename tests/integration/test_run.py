"""`tlsbridge run` end to end: real Pebble, real certbot, the daemon as a real process.

Schedules that span days run under $TLSBRIDGE_FAKE_RATE (the daemon's clock runs that many times
faster than real time; certbot and Pebble are untouched), so a six-day certificate's renewal or
a day of backoff takes seconds.
"""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from runkit import ARTIFACTS, Daemon, TcpProxy, wait_for
from servers import PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.certinfo import key_matches_cert, parse_pem

DAY = 86400
RUN_ID = secrets.token_hex(2)


@pytest.fixture(scope="module")
def ca() -> Iterator[PebbleServer]:
    """This module's own Pebble (its own HTTP-01 port: other suites may use 5002 meanwhile)."""
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


def m_site(name: str, site: str, **labels: str) -> str:
    """A series key as prometheus-client prints it (labels sorted by name)."""
    pairs = sorted({**labels, "site": site}.items())
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def screenshot(url: str, out: Path) -> str:
    """Headless Chromium: save a screenshot of `url` into `out`; return the DOM it rendered."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/setup.sh installs Debian's chromium)"
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--hide-scrollbars", "--window-size=1200,600"]
    with tempfile.TemporaryDirectory(prefix="tbrun-chromium-") as profile:
        subprocess.run([chromium, *flags, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=90)
        dom = subprocess.run([chromium, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
                             check=True, capture_output=True, text=True, timeout=90)
    assert out.stat().st_size > 5000, "the screenshot is empty"
    print(f"status page screenshot: {out}")
    return dom.stdout


def test_run_issues_serves_endpoints_reloads_config_and_stops(tmp_path: Path, ca: PebbleServer) -> None:
    # Unique names: containers of other suites labelled tlsbridge.site=<name> are not ours.
    alpha, beta, blocked, gamma = (f"{n}-{RUN_ID}" for n in ("alpha", "beta", "blocked", "gamma"))
    env = TbEnv(tmp_path, ca, {
        alpha: {"domains": ["alpha.example.com", "www.alpha.example.com"]},
        beta: {"domains": ["beta.example.org"]},
        blocked: {"domains": ["blocked-domain.example"]},  # Pebble refuses it: fails, others go on
    })
    with Daemon(env) as d:
        healthy = wait_for("/healthz", lambda: d.get("/healthz")[0] == 200 and time.monotonic(), 10,
                           every=0.01, on_timeout=d.tail) - d.started
        print(f"started to healthy in {healthy:.3f} s")
        assert healthy < 5
        d.wait_ready(120)

        # first pass: both issued and published; metrics say what is published
        m = d.metrics()
        for site in (alpha, beta):
            cert = parse_pem(env.published(site))
            assert m[m_site("tlsbridge_certificate_not_after_seconds", site)] == cert.not_after.timestamp()
            assert m[m_site("tlsbridge_certificate_not_before_seconds", site)] == cert.not_before.timestamp()
            renew = m[m_site("tlsbridge_certificate_renewal_time_seconds", site)]
            assert cert.not_before.timestamp() < renew < cert.not_after.timestamp()
            assert m[m_site("tlsbridge_issuances_total", site)] == 1
            assert m[m_site("tlsbridge_site_consecutive_failures", site)] == 0
            assert m[m_site("tlsbridge_last_success_time_seconds", site)] > time.time() - 300
            assert m[m_site("tlsbridge_next_wakeup_time_seconds", site)] == renew
        assert m['tlsbridge_passes_total{scope="all"}'] == 1
        assert m[m_site("tlsbridge_site_consecutive_failures", blocked)] == 1
        assert m[m_site("tlsbridge_next_wakeup_time_seconds", blocked)] > time.time()  # backoff
        assert parse_pem(env.published(blocked)).placeholder  # nginx could start; no real cert
        assert m["tlsbridge_docker_events_connected"] == 1

        status, body, headers = d.get("/healthz")
        assert status == 200 and b'"status": "ok"' in body
        status, page, headers = d.get("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert b"<script" not in page
        for text in (b"alpha.example.com", b"www.alpha.example.com", b"beta.example.org",
                     b"Pebble Intermediate CA", b"issued (NoCertificate)", b"failed (CertbotFailed)",
                     b"blocked-domain.example"):
            assert text in page, text
        assert d.get("/nope")[0] == 404

        dom = screenshot(d.base + "/", ARTIFACTS / "run-status-page.png")
        assert "alpha.example.com" in dom and "days left" in dom

        # SIGHUP with a broken config: logged, the running config kept
        good = env.config_path.read_text()
        env.config_path.write_text(good + "\nbogus_key: 1\n")
        d.send(signal.SIGHUP)
        wait_for("a rejected reload", lambda: d.metric('tlsbridge_config_reloads_total{result="error"}'), 15,
                 on_timeout=d.tail)
        assert d.logged("the config is invalid, keeping the running one")
        assert d.get("/healthz")[0] == 200

        # SIGHUP with a valid config that adds a site: issued by the pass that follows
        env.sites[gamma] = {"domains": ["gamma.example.net"]}
        env.write()
        d.send(signal.SIGHUP)
        wait_for("gamma issued", lambda: d.metric(m_site("tlsbridge_issuances_total", gamma)), 90,
                 on_timeout=d.tail)
        assert parse_pem(env.published(gamma)).domains == ("gamma.example.net",)
        assert d.metric(m_site("tlsbridge_issuances_total", alpha)) == 1  # not re-issued

        rc, took = d.stop(signal.SIGTERM)
        assert rc == 0 and took < 10, (rc, took)

    logs = d.logs()  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= rec.keys() for rec in logs)
    assert any(rec.get("site") == gamma and "published" in rec["msg"] for rec in logs)
    assert "PRIVATE KEY" not in d.text()
    assert logs[-1]["msg"] == "run: stopped"


def test_a_six_day_certificate_renews_on_time_under_an_accelerated_clock(tmp_path: Path) -> None:
    """check_interval 30d: only the site's own wake-up job can renew it on time."""
    rate = 21600  # six hours per second
    with PebbleServer(http_01_port=free_port(), validity_period=6 * DAY) as pebble:
        env = TbEnv(tmp_path, pebble, {"short": {"domains": ["short.example.com"]}},
                    extra={"renewal": {"check_interval": "30d", "jitter": "1h"}}, docker_engine=False)
        with Daemon(env, extra_env={"TLSBRIDGE_FAKE_RATE": str(rate)}) as d:
            real0, virtual0 = time.time(), time.time()  # the daemon's clock starts at real time
            d.wait_ready(120)
            first = parse_pem(env.published("short"))
            assert first.lifetime.total_seconds() == pytest.approx(6 * DAY, abs=120)
            planned = d.metric(m_site("tlsbridge_certificate_renewal_time_seconds", "short"))
            assert planned is not None and first.not_before.timestamp() < planned < first.not_after.timestamp()
            wait = (planned - virtual0) / rate - (time.time() - real0)
            print(f"renewal planned {datetime.fromtimestamp(planned):%Y-%m-%d %H:%M} (virtual), "
                  f"in {wait:.1f} s real")
            wait_for("the renewal", lambda: d.metric(m_site("tlsbridge_issuances_total", "short")) == 2,
                     wait + 60, on_timeout=d.tail)
            second = parse_pem(env.published("short"))
            assert second.serial != first.serial
            # the gauges follow right after the counters (the pass's refresh)
            key = m_site("tlsbridge_certificate_not_after_seconds", "short")
            wait_for("the new gauges", lambda: d.metric(key) == second.not_after.timestamp(), 5)
            m = d.metrics()
            assert m['tlsbridge_passes_total{scope="all"}'] == 1  # no periodic pass did it
            assert m['tlsbridge_passes_total{scope="sites"}'] >= 1
            # The new plan belongs to the new certificate. It need not be later than the old plan:
            # Pebble stamps certificates with real time while the daemon's clock runs 21,600x, so
            # the new certificate's renewal moment can fall before the old (virtual) one.
            replanned = m[m_site("tlsbridge_certificate_renewal_time_seconds", "short")]
            assert replanned != planned
            assert second.not_before.timestamp() < replanned < second.not_after.timestamp()
            rc, _ = d.stop()
            assert rc == 0
    # the pass that renewed started at the planned moment (virtual time), give or take 3 h
    passes = [r["msg"] for r in d.logs() if r["msg"].startswith("run: pass (due: short)")
              and "1 (short) issued" in r["msg"]]
    assert passes, d.tail()
    started = re.search(r"started (\S+Z)", passes[0])
    assert started is not None
    late = datetime.fromisoformat(started.group(1).replace("Z", "+00:00")).timestamp() - planned
    print(f"renewal pass started {late / 3600:+.2f} h (virtual) after the planned moment")
    assert -60 <= late <= 3 * 3600


def test_the_ca_goes_away_and_comes_back(tmp_path: Path, ca: PebbleServer) -> None:
    """Failures back off (1m, 10m, 100m, 1d: seconds at this rate) and issuance resumes."""
    proxy = TcpProxy(("127.0.0.1", ca.acme_port))  # down: connections are refused
    env = TbEnv(tmp_path, ca, {"flaky": {"domains": ["flaky.example.com"]}},
                acme={"directory": f"https://127.0.0.1:{proxy.port}/dir"}, docker_engine=False)
    try:
        with Daemon(env, extra_env={"TLSBRIDGE_FAKE_RATE": "3000"}) as d:
            d.wait_ready(120)  # the first pass finished, even though it failed
            key = m_site("tlsbridge_failures_total", "flaky", reason="CAUnreachable")
            wait_for("two failed attempts", lambda: (d.metric(key) or 0) >= 2, 60, on_timeout=d.tail)
            assert d.metric(m_site("tlsbridge_site_consecutive_failures", "flaky")) >= 2
            assert b"failed (CAUnreachable)" in d.get("/")[1]
            assert d.get("/healthz")[0] == 200 and d.get("/readyz")[0] == 200
            proxy.up()
            wait_for("issuance once the CA is back",
                     lambda: d.metric(m_site("tlsbridge_issuances_total", "flaky")), 90, on_timeout=d.tail)
            wait_for("the failures gauge back to 0",
                     lambda: d.metric(m_site("tlsbridge_site_consecutive_failures", "flaky")) == 0, 5)
            assert parse_pem(env.published("flaky")).domains == ("flaky.example.com",)
            assert d.stop()[0] == 0
    finally:
        proxy.down()
    errors = [r for r in d.logs() if r["level"] == "ERROR" and r.get("site") == "flaky"]
    assert errors and "CAUnreachable" in errors[0]["msg"]


def test_sigterm_during_a_certbot_run_exits_promptly_and_leaves_nothing_half_done(
        tmp_path: Path, ca: PebbleServer) -> None:
    """A CA that accepts connections and never answers keeps certbot waiting: SIGTERM must still
    end the daemon within 10 s, kill certbot, and leave the placeholder intact."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # the kernel completes handshakes; nobody ever answers the TLS hello
    env = TbEnv(tmp_path, ca, {"slow": {"domains": ["slow.example.com"]}},
                acme={"directory": f"https://127.0.0.1:{hole.getsockname()[1]}/dir"}, docker_engine=False)
    try:
        with Daemon(env) as d:
            wait_for("certbot to start", lambda: d.logged("running certbot"), 60, on_timeout=d.tail)
            time.sleep(1.0)
            assert certbot_processes(env) > 0
            rc, took = d.stop(signal.SIGTERM)
            print(f"SIGTERM during certbot: exit {rc} after {took:.2f} s")
            assert rc == 0 and took < 10
    finally:
        hole.close()
    assert certbot_processes(env) == 0
    assert d.logged("abandoned the pass underway")
    published = parse_pem(env.published("slow"))
    assert published.placeholder  # what was published before is complete and untouched
    assert key_matches_cert(env.published("slow", "privkey.pem"), env.published("slow", "fullchain.pem"))


def certbot_processes(env: TbEnv) -> int:
    """certbot processes working on this test's tree (their command line names its config dir)."""
    out = subprocess.run(["pgrep", "-f", "-c", f"config-dir {env.config_dir}"], capture_output=True,
                         text=True)
    return int(out.stdout.strip() or 0)


def test_daemon_tls_is_kept_and_its_expiry_exported(tmp_path: Path, ca: PebbleServer) -> None:
    from cryptography import x509

    out = tmp_path / "engine"
    env = TbEnv(tmp_path, ca, {}, extra={"daemon_tls": {"out": str(out), "hostnames": ["docker.example.com"],
                                                         "clients": ["ci"]}}, docker_engine=False)
    with Daemon(env) as d:
        d.wait_ready(30)
        server = x509.load_pem_x509_certificate((out / "server-cert.pem").read_bytes())
        got = d.metric('tlsbridge_daemon_tls_not_after_seconds{cert="server"}')
        assert got == server.not_valid_after_utc.timestamp()
        assert (out / "daemon.json").exists() and (out / "clients" / "ci" / "cert.pem").exists()
        assert d.logged("dockerd reads them only when it starts")
        assert d.stop()[0] == 0
