"""The certbot adapter under real conditions (real Pebble, certbot, bind9): the EAB key never on
argv or disk, certbot dies with tlsbridge, a CA that forgot the account, which domain failed,
an untrusted CA."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bindserver import BindServer
from runkit import wait_for
from servers import PebbleServer, free_port, make_tls_material
from tbenv import TLSBRIDGE, TbEnv

from tlsbridge.certinfo import parse_pem


def tbenv(root: Path, pebble: PebbleServer, sites: dict[str, Any], **kw: Any) -> TbEnv:
    return TbEnv(root, pebble, sites, docker_engine=False, **kw)


def cmdlines() -> dict[int, bytes]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
    return out


def certbot_children(parent: int) -> list[int]:
    found = []
    for pid, cmd in cmdlines().items():
        if b"tlsbridge.adapters.certbot_main" not in cmd:
            continue
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(pid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(env: TbEnv, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env.write()
    return subprocess.Popen([TLSBRIDGE, "-c", str(env.config_path), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TLSBRIDGE_RETRY_SCALE": "0", **(extra_env or {})})


# ---- issue 12.1: the EAB HMAC key ------------------------------------------------------------------

@pytest.fixture
def eab_pebble() -> Iterator[tuple[PebbleServer, str, str]]:
    kid = "kid-" + secrets.token_hex(4)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    with PebbleServer(http_01_port=free_port(), eab_keys={kid: key}) as pebble:
        yield pebble, kid, key


def test_the_eab_hmac_key_is_in_no_argv_and_no_file(tmp_path: Path, eab_pebble: tuple[PebbleServer, str, str]) -> None:
    pebble, kid, key = eab_pebble
    # the config reads the key from the environment, as the README advises
    env = tbenv(tmp_path, pebble, {"eab": {"domains": ["eab.example.com"]}},
                acme={"eab": {"kid": kid, "hmac_key": "${TB_TEST_EAB_KEY}"}})
    proc = start(env, "renew", extra_env={"TB_TEST_EAB_KEY": key})
    seen_certbot, leaks = False, []
    while proc.poll() is None:
        for pid, cmd in cmdlines().items():
            seen_certbot = seen_certbot or b"tlsbridge.adapters.certbot_main" in cmd
            if key.encode() in cmd:
                leaks.append((pid, cmd))
        time.sleep(0.005)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert seen_certbot and not leaks
    assert "--eab-kid " + kid in err and "--config /dev/fd/" in err  # the INFO line with certbot's argv
    # registered with EAB (Pebble requires it) and issued
    assert parse_pem(env.published("eab")).domains == ("eab.example.com",)
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert key.encode() not in path.read_bytes(), path
    logs = tmp_path / "logs"
    assert oct(logs.stat().st_mode & 0o777) == "0o700"


# ---- issue 11.3: certbot dies with tlsbridge -------------------------------------------------------

@pytest.fixture
def slow_dns_env(tmp_path: Path, bind9: BindServer, dns_pebble: PebbleServer) -> TbEnv:
    """A DNS-01 site whose certbot sits 60 s in its propagation wait, with its TXT record set."""
    creds = bind9.credentials(tmp_path / "rfc2136.ini")
    name = f"s{secrets.token_hex(3)}.example.test"
    return tbenv(tmp_path, dns_pebble, {"slow": {"domains": [name], "challenge": {
        "method": "dns", "dns_plugin": "rfc2136", "dns_credentials": str(creds), "dns_propagation": "60s"}}})


def _in_propagation_wait(env: TbEnv, bind9: BindServer, proc: subprocess.Popen[str]) -> int:
    name = "_acme-challenge." + env.sites["slow"]["domains"][0]
    wait_for("certbot to add its TXT record", lambda: bind9.txt(name) or proc.poll() is not None, 60)
    assert proc.poll() is None, proc.communicate()
    kids = certbot_children(proc.pid)
    assert len(kids) == 1
    return kids[0]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130),
                                      (signal.SIGKILL, -signal.SIGKILL)], ids=["SIGTERM", "SIGINT", "kill-9"])
def test_certbot_stops_with_tlsbridge(slow_dns_env: TbEnv, bind9: BindServer, sig: signal.Signals,
                                      code: int) -> None:
    env = slow_dns_env
    proc = start(env, "renew")
    certbot = _in_propagation_wait(env, bind9, proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    took = time.monotonic() - t0
    print(f"{sig.name}: tlsbridge exited {proc.returncode} after {took:.2f} s")
    assert proc.returncode == code  # -15 / -9: killed by the signal (a shell shows 143 / 137)
    wait_for("certbot to be gone", lambda: not alive(certbot), 20)
    print(f"{sig.name}: certbot gone {time.monotonic() - t0:.2f} s after the signal")
    # certbot ended by SIGTERM (directly or through PR_SET_PDEATHSIG) removes its TXT record
    name = "_acme-challenge." + env.sites["slow"]["domains"][0]
    wait_for("the TXT record to be removed", lambda: bind9.txt(name) == [], 20)
    cert = env.publish_dir / "slow" / "cert.pem"
    assert not cert.exists() or parse_pem(cert.read_bytes()).placeholder  # nothing was issued


# ---- issue 11.6: a CA that forgot the account ------------------------------------------------------

def test_a_reset_ca_gets_a_new_account_once_and_the_order_goes_through(tmp_path: Path) -> None:
    pebble = PebbleServer(http_01_port=free_port()).start()
    try:
        env = tbenv(tmp_path, pebble, {"one": {"domains": ["one.example.com"]},
                                       "two": {"domains": ["two.example.com"]}})
        assert env.run("renew").returncode == 0
        first = env.published("one")
        pebble.stop(keep_workdir=True)
        pebble.start()  # same URL, fresh state: every account is gone
        r = env.run("renew", "--force")
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("no longer knows the ACME account") == 1  # once per run, logged
        assert parse_pem(env.published("one")).serial_hex != parse_pem(first).serial_hex
        gone = list((env.config_dir / "accounts-gone").iterdir())
        assert len(gone) == 1 and oct((env.config_dir / "accounts-gone").stat().st_mode & 0o777) == "0o700"
    finally:
        pebble.stop()


# ---- issue 11.7: which domain failed; issue 10.7: an untrusted CA ---------------------------------

def test_validation_failed_names_the_domain(tmp_path: Path, dns_pebble: PebbleServer) -> None:
    # webroot: nobody serves it on Pebble's HTTP-01 port, so the CA's request is refused
    name = f"v{secrets.token_hex(3)}.web.test"
    env = tbenv(tmp_path, dns_pebble, {"v": {"domains": [name]}},
                challenge={"method": "webroot", "webroot": str(tmp_path / "webroot")})
    r = env.run("renew")
    assert r.returncode == 1
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site v failed")]
    assert len(line) == 1 and "(ValidationFailed)" in line[0] and f"could not validate {name} (" in line[0], r.stderr


def test_an_untrusted_ca_is_one_clear_line_and_not_retried(tmp_path: Path, pebble: PebbleServer) -> None:
    other_ca, _, _ = make_tls_material(tmp_path / "other-ca")
    env = tbenv(tmp_path, pebble, {"u": {"domains": ["u.example.com"]}}, acme={"ca_bundle": str(other_ca)})
    r = env.run("renew")
    assert r.returncode == 1
    assert r.stderr.count("running certbot") == 1  # not retried
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site u failed")]
    assert line == [f"tlsbridge: site u failed (CAUntrusted): site=u: the CA's certificate is not trusted "
                    f"({pebble.directory_url}): set acme.ca_bundle to the PEM file of the CA that signed the "
                    f"ACME server's HTTPS certificate"], r.stderr
    assert "certificate is not trusted" in (env.status()["u"]["last_error"] or "")
