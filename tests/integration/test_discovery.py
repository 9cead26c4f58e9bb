"""Discovery end to end: nginx from the generated compose file (discovery on), a real Pebble,
`tlsbridge run` on the host, and app containers started with `docker run --label
tlsbridge.domains=...` on the stack's network.

An app gets a Pebble certificate and its content over HTTPS through nginx within seconds of
`docker run`; a stopped app's server block goes after the grace period and its certificate is
reused when it comes back; bad labels are skipped with one line each while the others are
served; 20 apps started at once are all served with exactly one order each.
"""

from __future__ import annotations

import os
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from composekit import compose_cmd, http_get, run, served_cert
from cryptography import x509
from runkit import Daemon, wait_for
from servers import PebbleServer, free_port
from tbenv import TLSBRIDGE, TbEnv

from tlsbridge.adapters.publish import Publisher
from tlsbridge.placeholder import make_placeholder

GRACE = 3  # seconds: discovery.grace in this test
APP_CONF = """server {
    listen 80 default_server;
    location / {
        default_type text/plain;
        return 200 "app $hostname\\n";
    }
}
"""


@dataclass
class Stack:
    root: Path
    tag: str
    env: TbEnv
    daemon: Daemon
    pebble: PebbleServer
    http_port: int
    https_port: int
    compose_env: dict[str, str]
    ctx: ssl.SSLContext
    apps: list[str] = field(default_factory=list)
    last: str = ""  # the last answer served() got

    def tail(self) -> str:
        logs = subprocess.run(["docker", "logs", "--tail", "6", f"{self.tag}-nginx-1"],
                              capture_output=True, text=True, timeout=30)
        return f"last answer: {self.last}\nnginx: {logs.stdout[-1500:]}{logs.stderr[-1500:]}\n" + self.daemon.tail()

    @property
    def network(self) -> str:
        return f"{self.tag}_default"

    def domain(self, name: str) -> str:
        return f"{name}.{self.tag}.example.com"

    def app(self, name: str, domains: str | None = None, labels: dict[str, str] | None = None,
            network: bool = True) -> str:
        """`docker run -d` an app; returns the container's name."""
        cname = f"{self.tag}-{name}"
        argv = ["docker", "run", "-d", "--name", cname, "--hostname", cname,
                "--label", f"tlsbridge-test={self.tag}",
                "--label", f"tlsbridge.domains={domains or self.domain(name)}",
                "-v", f"{self.root / 'app-conf'}:/etc/nginx/conf.d:ro"]
        if network:
            argv += ["--network", self.network]
        for k, v in (labels or {}).items():
            argv += ["--label", f"{k}={v}"]
        run([*argv, self.nginx_image])
        self.apps.append(cname)
        return cname

    nginx_image: str = ""

    def orders(self) -> int:
        return self.pebble.pebble_log.read_text(errors="replace").count("Added order")

    def served(self, domain: str, container: str) -> x509.Certificate | None:
        """The Pebble certificate served for `domain` when the app's content comes through."""
        try:
            r = http_get(self.https_port, domain, "/", tls=self.ctx)
        except (OSError, ssl.SSLError) as exc:
            self.last = f"{domain}: {exc}"
            return None
        self.last = f"{domain}: {r.status} {r.body[:200]!r}"
        if r.status != 200 or f"app {container}".encode() not in r.body:
            return None
        return served_cert(self.https_port, domain, self.ctx)

    def block(self, site: str) -> Path:
        return self.root / "discovered" / f"{site}.conf"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nginx_image: str) -> Iterator[Stack]:
    tag = f"tbd{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp(tag)
    http_port, https_port = free_port(), free_port()
    with PebbleServer(http_01_port=http_port) as pebble:
        yaml_site = f"{tag}-yaml"
        env = TbEnv(root, pebble, {yaml_site: {"domains": [f"yaml.{tag}.example.com"]}},
                    challenge={"method": "webroot", "webroot": str(root / "webroot")},
                    extra={"discovery": {"enabled": True, "grace": f"{GRACE}s",
                                         "dir": str(root / "discovered")}})
        for sub in ("webroot", "certs", "discovered", "app-conf"):
            (root / sub).mkdir()
        (root / "app-conf" / "app.conf").write_text(APP_CONF)
        env.write()
        # nginx needs the YAML site's files to start: a placeholder, as `run` would publish
        Publisher(root / "certs").publish(yaml_site, make_placeholder(
            yaml_site, (f"yaml.{tag}.example.com",), datetime.now(UTC)))
        compose_file = root / "compose.yaml"
        run([TLSBRIDGE, "-c", str(env.config_path), "compose", "-o", str(compose_file),
             "--image", nginx_image])
        compose_env = {"TLSBRIDGE_HTTP_PORT": f"127.0.0.1:{http_port}",
                       "TLSBRIDGE_HTTPS_PORT": f"127.0.0.1:{https_port}"}
        ctx = ssl.create_default_context(cadata=pebble.root_pem().decode())
        ctx.check_hostname = True
        daemon = Daemon(env)
        s = Stack(root, tag, env, daemon, pebble, http_port, https_port, compose_env, ctx,
                  nginx_image=nginx_image)
        try:
            run([*compose_cmd(), "-p", tag, "-f", str(compose_file), "up", "-d"], env=compose_env)
            daemon.start()
            daemon.wait_ready(120)
            yield s
        finally:
            daemon.__exit__()
            if s.apps:
                subprocess.run(["docker", "rm", "-f", *s.apps], capture_output=True, timeout=120)
            down = run([*compose_cmd(), "-p", tag, "-f", str(compose_file), "down", "-v",
                        "--remove-orphans", "-t", "2"], env=compose_env, check=False)
            if down.returncode != 0:
                print(down.stdout, down.stderr, file=sys.stderr)
            if not os.environ.get("TBD_KEEP"):  # keep the folder to look into a failure
                shutil.rmtree(root, ignore_errors=True)


def test_an_app_gets_https_within_seconds_of_docker_run(stack: Stack) -> None:
    took = []
    for i in range(5):
        name = f"app{i}"
        t0 = time.monotonic()
        c = stack.app(name)
        wait_for(f"{name} served over HTTPS", lambda n=name, c=c: stack.served(stack.domain(n), c), 30,
                        every=0.05, on_timeout=stack.tail)
        took.append(time.monotonic() - t0)
        assert stack.block(stack.domain(name)).is_file()
    print(f"docker run -> HTTPS with a Pebble certificate: median {statistics.median(took):.2f} s, "
          f"all {[round(t, 2) for t in took]}")
    assert max(took) < 30
    status = stack.daemon.get("/")[1].decode()
    assert f"{stack.tag}-app0" in status  # the status page names the container


def test_a_stopped_app_loses_its_block_after_the_grace_and_comes_back_without_an_order(
        stack: Stack) -> None:
    name = "back"
    c = stack.app(name)
    site = stack.domain(name)
    first = wait_for("first serve", lambda: stack.served(site, c), 30, on_timeout=stack.tail)
    orders = stack.orders()
    run(["docker", "stop", "-t", "1", c])
    assert stack.block(site).is_file()  # kept during the grace period
    wait_for("the block removed after the grace", lambda: not stack.block(site).exists(), GRACE + 30,
             on_timeout=lambda: str(stack.daemon.get("/healthz")[1]) + stack.daemon.tail())
    assert stack.daemon.logged(f"site={site} discovery: its app has been gone")
    assert (stack.root / "certs" / site / "fullchain.pem").is_file()  # the certificate stays
    run(["docker", "start", c])
    again = wait_for("served again", lambda: stack.served(site, c), 30, on_timeout=stack.tail)
    assert again.serial_number == first.serial_number
    assert stack.orders() == orders


def test_new_names_on_a_recreated_app_reissue(stack: Stack) -> None:
    one = stack.domain("relabel")
    c = stack.app("relabel", labels={"tlsbridge.name": "relabel"})
    first = wait_for("relabel served", lambda: stack.served(one, c), 30, on_timeout=stack.tail)
    orders = stack.orders()
    run(["docker", "rm", "-f", c])
    two = stack.domain("www.relabel")
    c = stack.app("relabel", domains=f"{one},{two}", labels={"tlsbridge.name": "relabel"})
    again = wait_for("both names served", lambda: stack.served(two, c), 30, on_timeout=stack.tail)
    assert again.serial_number != first.serial_number
    names = again.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {one, two}
    assert stack.orders() == orders + 1


def test_bad_labels_are_skipped_with_one_line_each_while_others_are_served(stack: Stack) -> None:
    good = stack.app("good")
    wait_for("good served", lambda: stack.served(stack.domain("good"), good), 30,
             on_timeout=stack.tail)
    t = stack.tag
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("dupname", {"labels": {"tlsbridge.name": stack.domain("good")}}, "tlsbridge.name",
         "already declared by container"),
        ("yamlname", {"labels": {"tlsbridge.name": f"{t}-yaml"}}, "tlsbridge.name",
         "already a site in the config file"),
        ("yamldomain", {"domains": f"yaml.{t}.example.com"}, "tlsbridge.domains", "already a domain of"),
        ("invalid", {"domains": f"bad_name!.{t}.example.com"}, "tlsbridge.domains", "bad_name!"),
        ("wild", {"domains": f"*.wild.{t}.example.com"}, "tlsbridge.domains", "wildcard needs"),
        ("port", {"labels": {"tlsbridge.port": "http"}}, "tlsbridge.port", "not a port number"),
    ]
    names = {case: stack.app(case, **kw) for case, kw, _, _ in cases}
    for case, _, label, problem in cases:
        needle = f"container {names[case]}: label {label}: "
        lines = wait_for(f"the skip line of {case}", lambda n=needle: stack.daemon.logged(n), 30,
                         on_timeout=stack.tail)
        assert len(lines) == 1 and problem in lines[0]["msg"], lines
    page = stack.daemon.get("/")[1].decode()
    for case in names.values():
        assert case in page
    assert stack.served(stack.domain("good"), good) is not None
    assert stack.served(stack.domain("app1"), f"{t}-app1") is not None
    assert stack.daemon.proc is not None and stack.daemon.proc.poll() is None


def test_twenty_apps_at_once_are_all_served_with_one_order_each(stack: Stack) -> None:
    orders = stack.orders()
    names = [f"burst{i:02d}" for i in range(20)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        containers = list(pool.map(stack.app, names))
    for name, c in zip(names, containers, strict=True):
        wait_for(f"{name} served", lambda n=name, c=c: stack.served(stack.domain(n), c), 240,
                 on_timeout=stack.tail)
    print(f"20 apps at once: all served {time.monotonic() - t0:.1f} s after the first docker run")
    assert stack.orders() - orders == 20


def test_renew_one_shot_handles_the_discovered_sites(stack: Stack) -> None:
    r = stack.env.run("renew")
    assert r.returncode == 0, r.stderr
    assert stack.domain("app0") in r.stdout and stack.domain("burst00") in r.stdout
    status = stack.env.status()
    assert status[stack.domain("app0")]["discovered"] == f"{stack.tag}-app0"
    assert status[stack.domain("app0")]["state"] == "valid"
