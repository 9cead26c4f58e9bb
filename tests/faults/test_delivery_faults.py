"""Delivery under faults: the target nginx container stopped, killed (137), removed or paused
while a pass is underway (certbot running, before the delivery), and a Docker engine that cannot
be reached. Nothing published is damaged, the site fails or is delivered as docs/delivery.md
says, and the next pass repairs. Real dockerd, nginx containers, Pebble, certbot."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import ROUNDS, certbot_running, finish, orders, start, wait_until
from nginxbox import NginxBox, https_server, site_dirs
from servers import PebbleServer, ensure_docker_engine, ensure_nginx_image
from tbenv import Run, TbEnv

from tlsbridge.certinfo import key_matches_cert


@pytest.fixture(scope="module")
def box() -> Iterator[NginxBox]:
    ensure_docker_engine()
    import docker

    client = docker.from_env()
    b = NginxBox(client, ensure_nginx_image())
    try:
        yield b
    finally:
        b.close()
        client.close()


def shop(tmp_path: Path, pebble: PebbleServer, box: NginxBox, name: str) -> tuple[TbEnv, Any]:
    """One site served by one nginx container (standalone HTTP-01: delivery is all it needs)."""
    conf, certs, _ = site_dirs(tmp_path)
    domain = f"{name}.delivery.example"
    (conf / "site.conf").write_text(https_server("shop", domain))
    nginx = box.nginx(name, conf, certs, tmp_path / "webroot")
    env = TbEnv(tmp_path, pebble, {"shop": {"domains": [domain], "reload": [{"container": nginx.name}]}})
    r = env.run("renew")
    assert r.returncode == 0, r.stderr
    assert box.serves(nginx, domain, env.published("shop"))
    return env, nginx


def intact(env: TbEnv) -> None:
    """What is published is complete: the lineage, a matching key, no leftovers."""
    assert env.published("shop") == env.lineage("shop")
    assert env.published("shop", "fullchain.pem") == env.lineage("shop", "fullchain.pem")
    assert key_matches_cert(env.published("shop", "privkey.pem"), env.published("shop"))
    assert not [p for p in (env.publish_dir / "shop").iterdir() if p.name.endswith(".tmp")]


def during_certbot(env: TbEnv, fault: Callable[[], None]) -> Run:
    """`renew --force`, the fault injected while certbot runs (before the delivery)."""
    proc = start(env, "renew", "--force")
    wait_until("certbot to start", lambda: certbot_running(env.root))
    fault()
    return finish(proc)


def _stop(c: Any) -> None:
    c.stop(timeout=2)


def _kill(c: Any) -> None:
    c.kill()  # SIGKILL
    assert c.wait(timeout=10)["StatusCode"] == 137


def _remove(c: Any) -> None:
    c.remove(force=True)


def _pause(c: Any) -> None:
    c.pause()


FAULTS: dict[str, Callable[[Any], None]] = {"stopped": _stop, "killed (137)": _kill, "removed": _remove,
                                            "paused": _pause}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_target_container_that_goes_away_during_a_pass_damages_nothing_and_the_next_pass_repairs(
        tmp_path: Path, fault_pebble: PebbleServer, box: NginxBox, fault: str) -> None:
    name = fault.split()[0]
    env, nginx = shop(tmp_path, fault_pebble, box, name)
    domain = env.sites["shop"]["domains"][0]
    outcomes = []
    for i in range(ROUNDS):
        issued = orders(env, "shop")
        r = during_certbot(env, lambda c=nginx: FAULTS[fault](c))
        summary = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site")]
        print(f"{fault} #{i + 1}: exit {r.returncode}; {summary or 'delivered'}")
        outcomes.append(r.returncode)
        assert orders(env, "shop") == issued + 1  # issued and published: the container is not the CA
        intact(env)
        if fault == "killed (137)":  # an error exit: started again, then tested, reloaded, verified
            assert r.returncode == 0, r.stderr
            assert f"reloaded container {nginx.name} (started)" in r.stderr
            assert box.serves(nginx, domain, env.published("shop"))
        elif fault == "stopped":  # exit 0: stopped on purpose, left alone with a warning
            assert r.returncode == 0, r.stderr
            assert "was stopped on purpose (exit code 0); not starting it" in r.stderr
        elif fault == "removed":
            assert r.returncode == 1 and summary and "site shop failed" in summary[0], r.stderr
            assert f"container {nginx.name}" in summary[0] and "does not exist" in summary[0], r.stderr
        else:  # paused
            assert r.returncode == 1 and summary and "site shop failed" in summary[0], r.stderr
            assert "paused" in summary[0], r.stderr
        # undo the fault as an operator would; the next plain pass delivers without a new order
        if fault == "stopped":
            nginx.start()
        elif fault == "removed":
            nginx = box.nginx(name, env.root / "conf.d", env.publish_dir, env.root / "webroot")
        elif fault == "paused":
            nginx.unpause()
        repair = env.run("renew")
        assert repair.returncode == 0, repair.stderr
        assert orders(env, "shop") == issued + 1
        intact(env)
        assert box.serves(nginx, domain, env.published("shop"))
        assert env.status()["shop"]["state"] == "valid"
    print(f"{fault}: exit codes {outcomes}")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_an_unreachable_docker_engine_fails_the_site_by_name_and_loses_nothing(
        tmp_path: Path, fault_pebble: PebbleServer, box: NginxBox) -> None:
    env, nginx = shop(tmp_path, fault_pebble, box, "engine")
    domain = env.sites["shop"]["domains"][0]
    served = env.published("shop")
    dead: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("docker.host: a closed socket path", {"docker": {"host": f"unix://{tmp_path}/closed.sock"}}, {}),
        ("DOCKER_HOST: a dead address", {}, {"DOCKER_HOST": f"tcp://127.0.0.1:{_closed_port()}"}),
    ]
    (tmp_path / "closed.sock").touch()  # a path that exists but where nothing listens
    for how, extra, environ in dead:
        for i in range(ROUNDS):
            env.extra = extra
            issued = orders(env, "shop")
            r = env.run("renew", "--force", env=environ)
            print(f"{how} #{i + 1}: exit {r.returncode}; {r.stderr.strip().splitlines()[-1]}")
            assert r.returncode == 1, r.stderr
            summary = [ln for ln in r.stderr.splitlines() if ln.startswith("tlsbridge: site")]
            assert len(summary) == 1 and summary[0].startswith("tlsbridge: site shop failed"), r.stderr
            assert "(Docker)" in summary[0] and "is not reachable" in summary[0], r.stderr
            assert orders(env, "shop") == issued + 1, r.stderr
            intact(env)  # the new certificate is published, complete
            assert box.serves(nginx, domain, served)  # and nginx still serves the previous one
            # a plain renew while the engine is still away: still failing, nothing re-ordered
            again = env.run("renew", env=environ)
            assert again.returncode == 1 and orders(env, "shop") == issued + 1, again.stderr
        env.extra = {}
        repair = env.run("renew")
        assert repair.returncode == 0, repair.stderr
        intact(env)
        served = env.published("shop")
        assert box.serves(nginx, domain, served)
        assert env.status()["shop"]["state"] == "valid"
