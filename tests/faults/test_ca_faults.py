"""The CA fails in every way a network and a CA can: refused, black-holed (certbot.timeout hit),
a nonce storm, failed validations. Each: exit 1, the published files untouched, the failure
recorded and backed off, and the next success repairs. Real Pebble and certbot."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import ROUNDS, deployment, orders
from runkit import TcpProxy
from servers import PebbleServer, free_port
from tbenv import TbEnv

from tlsbridge.certinfo import key_matches_cert

NAMES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


@pytest.fixture(scope="module")
def storm_pebble() -> Iterator[PebbleServer]:
    """A CA that rejects every nonce (PEBBLE_WFE_NONCEREJECT=100): certbot's one retry and
    tlsbridge's whole attempts all meet badNonce."""
    with PebbleServer(http_01_port=free_port(), nonce_reject=100) as server:
        yield server


def published_state(env: TbEnv, site: str) -> dict[str, Any]:
    """What a reader sees: the bytes of every public name and where `current` points."""
    folder = env.publish_dir / site
    return {"current": os.readlink(folder / "current"), **{n: env.published(site, n) for n in NAMES}}


def refused(env: TbEnv, ctx: dict[str, Any]) -> None:
    proxy = TcpProxy(("127.0.0.1", env.pebble.acme_port))  # never up: connections are refused
    env.acme["directory"] = f"https://127.0.0.1:{proxy.port}/dir"


def black_hole(env: TbEnv, ctx: dict[str, Any]) -> None:
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # the kernel completes handshakes; nobody ever answers the TLS hello
    ctx["close"] = hole.close
    env.acme["directory"] = f"https://127.0.0.1:{hole.getsockname()[1]}/dir"
    # certbot would wait for its own HTTP timeouts; certbot.timeout (the runner's, >= 10s) ends it
    env.extra["certbot"] = {"config_dir": str(env.config_dir), "work_dir": str(env.root / "work"),
                            "logs_dir": str(env.root / "logs"), "timeout": "10s"}


def nonce_storm(env: TbEnv, ctx: dict[str, Any]) -> None:
    storm: PebbleServer = ctx["storm"]
    env.acme.update({"directory": storm.directory_url, "ca_bundle": str(storm.ca_bundle)})


def nobody_answers_http01(env: TbEnv, ctx: dict[str, Any]) -> None:
    # Pebble's authorization reuse is off (PEBBLE_AUTHZREUSE=0): every order validates, and
    # certbot's webroot answers nothing on Pebble's HTTP-01 port
    env.challenge.update({"method": "webroot", "webroot": str(env.root / "webroot")})


FAULTS: dict[str, tuple[Callable[[TbEnv, dict[str, Any]], None], str]] = {
    "CA refuses connections": (refused, "(CAUnreachable)"),
    "CA black-holed (certbot.timeout)": (black_hole, "certbot did not finish within 10s (certbot.timeout)"),
    "nonce storm (NONCEREJECT=100)": (nonce_storm, "(CATransient)"),
    "validation fails (nobody on HTTP-01)": (nobody_answers_http01, "(ValidationFailed)"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_ca_exits_1_keeps_what_is_published_backs_off_and_the_next_success_repairs(
        tmp_path: Path, fault_pebble: PebbleServer, storm_pebble: PebbleServer, fault: str) -> None:
    """Per round: an issued site renewed by force and a new site, both against the fault."""
    inject, expected = FAULTS[fault]
    tag = fault.split()[1].strip("(")
    env = deployment(tmp_path, fault_pebble, {"one": {"domains": [f"one.{tag}.ca.example"]}})
    assert env.run("renew").returncode == 0
    good_acme, good_challenge = dict(env.acme), dict(env.challenge)
    for i in range(ROUNDS):
        new = f"new{i}"
        env.sites = {"one": env.sites["one"], new: {"domains": [f"{new}.{tag}.ca.example"]}}
        before, lineage, issued = published_state(env, "one"), env.lineage("one"), orders(env, "one")
        ctx: dict[str, Any] = {"storm": storm_pebble}
        inject(env, ctx)
        try:
            r = env.run("renew", "--force")
            status = env.status()
            again = env.run("renew")  # nothing forced: the new site is due, and backing off
        finally:
            if "close" in ctx:
                ctx["close"]()
        print(f"{fault} #{i + 1}: exit {r.returncode}, then {again.returncode}; "
              f"{r.stderr.strip().splitlines()[-1]}")
        assert r.returncode == 1, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site ")]
        assert len(lines) == len(env.sites) and all(expected in ln for ln in lines), r.stderr
        # nothing lost: the published generation, certbot's lineage, no new order, no leftovers
        assert published_state(env, "one") == before
        assert env.lineage("one") == lineage and orders(env, "one") == issued and orders(env, new) == 0
        for site in ("one", new):
            assert key_matches_cert(env.published(site, "privkey.pem"), env.published(site))
            assert not [p for p in (env.publish_dir / site).iterdir() if p.name.endswith(".tmp")]
            # recorded: the error is in status (a new site shows as its placeholder)
            assert status[site]["last_error"], status[site]
        assert (status["one"]["state"], status[new]["state"]) == ("failing", "placeholder")
        # backed off: a plain renew does not ask the CA again, and exits 1 saying so
        assert again.returncode == 1 and f"site={new} backing off until" in again.stderr, again.stderr
        assert "running certbot" not in again.stderr
        # the next success repairs
        env.acme.clear()
        env.acme.update(good_acme)
        env.challenge.clear()
        env.challenge.update(good_challenge)
        env.extra.pop("certbot", None)
        fixed = env.run("renew", "--force")
        assert fixed.returncode == 0, fixed.stderr
        assert (orders(env, "one"), orders(env, new)) == (issued + 1, 1)
        assert env.published("one") == env.lineage("one") != before["cert.pem"]
        assert env.published(new) == env.lineage(new)
        assert {row["state"] for row in env.status().values()} == {"valid"}
        assert env.run("renew").returncode == 0
