"""`tlsbridge compose` output checked by the real tools: Compose v2 accepts every mode,
`nginx -t` passes in a real nginx container, and `docker compose up` of the generated file
serves the published certificates, redirects HTTP, answers ACME challenges (a real Pebble
issuance through the webroot) and proxies to an upstream.

Everything is named with a random `tbc<hex>` prefix (compose project, sites) and removed at
the end; ports are picked free and handed to compose through TLSBRIDGE_HTTP(S)_PORT.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from composekit import TLSBRIDGE, LocalCA, compose_cmd, http_get, insecure, run, served_cert
from cryptography import x509
from servers import PROJECT_ROOT, PebbleServer, free_port

from tlsbridge.adapters.publish import Publisher
from tlsbridge.render.nginx import MOZILLA_INTERMEDIATE_CIPHERS


@dataclass
class Stack:
    root: Path
    project: str
    config: Path
    compose_file: Path
    http_port: int
    https_port: int
    alpha: str
    beta: str
    alpha_domain: str
    beta_domain: str
    pebble_root: Path
    local_ca: LocalCA
    publisher: Publisher
    env: dict[str, str]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*compose_cmd(), "-p", self.project, "-f", str(self.compose_file),
                    "-f", str(self.root / "app.yaml"), *args], env=self.env, check=check)

    def exec_nginx(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", "nginx", *argv, check=False)

    def container(self) -> dict[str, Any]:
        cid = self.compose("ps", "-q", "nginx").stdout.strip()
        assert cid, "nginx container not running"
        info: list[dict[str, Any]] = json.loads(run(["docker", "inspect", cid]).stdout)
        return info[0]

    def published(self, site: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.root / "certs" / site / "cert.pem").read_bytes())

    def wait_served(self, site: str, domain: str, timeout: float = 10) -> x509.Certificate:
        want = self.published(site)
        deadline = time.monotonic() + timeout
        while True:
            got = served_cert(self.https_port, domain)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

APP_CONF = """server {
    listen 8080;
    location / {
        default_type text/plain;
        return 200 "app uri=$request_uri host=$host proto=$http_x_forwarded_proto\\n";
    }
}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nginx_image: str) -> Iterator[Stack]:
    tag = f"tbc{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp(tag)
    http_port, https_port = free_port(), free_port()
    with PebbleServer(http_01_port=http_port) as pebble:
        pebble_root = root / "pebble-root.pem"
        pebble_root.write_bytes(pebble.root_pem())
        alpha, beta = f"{tag}-alpha", f"{tag}-beta"
        alpha_domain, beta_domain = f"alpha.{tag}.example.com", f"beta.{tag}.example.com"
        doc = {
            "acme": {"directory": pebble.directory_url, "email": "admin@example.com",
                     "ca_bundle": str(pebble.ca_bundle)},
            "certbot": {"config_dir": "./letsencrypt", "work_dir": "./work", "logs_dir": "./logs"},
            "challenge": {"method": "webroot", "webroot": "./webroot"},
            "publish": {"dir": "./certs"},
            "state": {"dir": "./state"},
            "sites": {
                alpha: {"domains": [alpha_domain, f"www.{alpha_domain}"]},
                beta: {"domains": [beta_domain], "upstream": "http://app:8080/base/", "hsts": True},
            },
        }
        config = root / "tlsbridge.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        (root / "app-conf").mkdir()
        (root / "app-conf" / "app.conf").write_text(APP_CONF)
        (root / "app.yaml").write_text(
            f'services:\n  app:\n    image: "{nginx_image}"\n    volumes:\n'
            f'      - "./app-conf:/etc/nginx/conf.d:ro"\n')

        ca = LocalCA()
        publisher = Publisher(root / "certs")
        # nginx cannot start without its certificates: a self-signed placeholder for the site
        # Pebble will issue, a locally made certificate for the other.
        publisher.publish(alpha, ca.issue([alpha_domain], issuer_self=True))
        publisher.publish(beta, ca.issue([beta_domain]))

        compose_file = root / "compose.yaml"
        run([TLSBRIDGE, "-c", str(config), "compose", "-o", str(compose_file),
             "--image", nginx_image])
        env = {"TLSBRIDGE_HTTP_PORT": f"127.0.0.1:{http_port}",
               "TLSBRIDGE_HTTPS_PORT": f"127.0.0.1:{https_port}", "TLSBRIDGE_RETRY_SCALE": "0"}
        s = Stack(root, tag, config, compose_file, http_port, https_port, alpha, beta,
                  alpha_domain, beta_domain, pebble_root, ca, publisher, env)
        try:
            s.compose("up", "-d")
            served_cert(https_port, alpha_domain)  # nginx is up
            # A real issuance: Pebble validates HTTP-01 through the generated port-80 server.
            renew = run([TLSBRIDGE, "-c", str(config), "renew", "--site", alpha], env=env,
                        check=False, timeout=180)
            assert renew.returncode == 0, f"renew failed:\n{renew.stdout}\n{renew.stderr}"
            reload = s.exec_nginx("nginx", "-s", "reload")
            assert reload.returncode == 0, reload.stderr
            yield s
        finally:
            down = s.compose("down", "-v", "--remove-orphans", "-t", "2", check=False)
            if down.returncode != 0:
                print(down.stdout, down.stderr, file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)


# -- tests ------------------------------------------------------------------------------------------

CONFIG_TWO = """
publish: {dir: /var/lib/tbc/certs}
challenge: {webroot: /var/lib/tbc/acme}
sites:
  one:
    domains: [one.example.com, www.one.example.com]
    hsts: true
  two:
    domains: [two.example.org]
    upstream: http://app:3000
"""


@pytest.mark.parametrize("mode", [[], ["--sidecar"], ["--socket-proxy"], ["--sidecar", "--http2", "on"]],
                         ids=["host", "sidecar", "socket-proxy", "http2-on"])
def test_compose_v2_accepts_every_mode(tmp_path: Path, mode: list[str]) -> None:
    (tmp_path / "tlsbridge.yaml").write_text(CONFIG_TWO)
    out = tmp_path / "compose.yaml"
    run([TLSBRIDGE, "-c", str(tmp_path / "tlsbridge.yaml"), "compose", "-o", str(out), *mode])
    run([*compose_cmd(), "-p", "tbcconfig", "-f", str(out), "config", "-q"])
    normal = yaml.safe_load(run([*compose_cmd(), "-p", "tbcconfig", "-f", str(out), "config"]).stdout)
    nginx_svc = normal["services"]["nginx"]
    # With a sidecar every site ("*"): adding a site does not recreate nginx.
    assert nginx_svc["labels"] == {"tlsbridge.site": "*" if mode else "one,two"}
    for m in nginx_svc["volumes"]:
        assert m["read_only"] is True
        assert not m["target"].endswith(".pem")
    if mode:
        assert set(normal["volumes"]) >= {"certs", "acme-webroot", "letsencrypt", "state"}


def test_compose_v2_accepts_the_deploy_example() -> None:
    run([*compose_cmd(), "-p", "tbcdeploy", "-f", str(PROJECT_ROOT / "deploy" / "compose.yaml"),
         "config", "-q"])


def test_nginx_t_passes_in_the_container(stack: Stack) -> None:
    test = stack.exec_nginx("nginx", "-t")
    assert test.returncode == 0, test.stderr
    assert "test is successful" in test.stderr
    health = stack.container()["Config"]["Healthcheck"]["Test"]
    assert health == ["CMD", "nginx", "-t", "-q"]
    quiet = stack.exec_nginx(*health[1:])
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


DEBIAN_STYLE_BASE = """user www-data;
worker_processes 1;
pid /run/nginx.pid;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE
    ssl_prefer_server_ciphers on;
    include /etc/nginx/conf.d/*.conf;
}
"""


def test_snippets_do_not_collide_with_a_debian_style_base_config(stack: Stack, nginx_image: str) -> None:
    """Debian's nginx.conf sets ssl_protocols and ssl_prefer_server_ciphers in http { }: the
    generated TLS settings must override them per server, not clash with them."""
    base = stack.root / "debian-base"
    base.mkdir(exist_ok=True)
    (base / "nginx.conf").write_text(DEBIAN_STYLE_BASE)
    certs = stack.root / "certs"
    argv = ["docker", "run", "--rm", "--network", "none", "--name", f"{stack.project}-base",
            "-v", f"{base}:/etc/nginx-base:ro", "-v", f"{stack.root / 'nginx'}:/etc/nginx/conf.d:ro"]
    for site in (stack.alpha, stack.beta):
        argv += ["-v", f"{certs / site}:/etc/tlsbridge/certs/{site}:ro"]
    proc = run([*argv, nginx_image, "nginx", "-t", "-c", "/etc/nginx-base/nginx.conf"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "[warn]" not in proc.stderr and "[emerg]" not in proc.stderr, proc.stderr


SHAPES = """
challenge: {method: dns, dns_plugin: cloudflare}
publish: {dir: ./certs}
sites:
  wild:
    domains: ["*.wild.example.com", wild.example.com]
    hsts: true
  v6:
    domains: [v6.example.com]
    upstream: http://[fd00::1]:8080/x/
  tls.up:
    domains: [tls.example.com, www.tls.example.com, bücher.example.com]
    upstream: https://backend.internal:8443
  plain_1:
    domains: [plain.example.org]
"""


@pytest.mark.parametrize(("http2", "ok"), [("listen", True), ("off", True), ("on", False)])
def test_nginx_t_accepts_every_site_shape(tmp_path: Path, nginx_image: str, http2: str,
                                          ok: bool) -> None:
    """Wildcards, IDNs, IPv6 and https upstreams, paths, HSTS: all pass nginx -t (nginx 1.22,
    which predates `http2 on;`, so that mode must fail there: it is for nginx >= 1.25.1)."""
    (tmp_path / "tlsbridge.yaml").write_text(SHAPES)
    run([TLSBRIDGE, "-c", str(tmp_path / "tlsbridge.yaml"), "compose", "-o",
         str(tmp_path / "compose.yaml"), "--http2", http2])
    ca, publisher = LocalCA(), Publisher(tmp_path / "certs")
    argv = ["docker", "run", "--rm", "--network", "none", "--name", f"tbc{uuid.uuid4().hex[:8]}",
            "-v", f"{tmp_path / 'nginx'}:/etc/nginx/conf.d:ro"]
    for site, domain in (("wild", "wild.example.com"), ("v6", "v6.example.com"),
                         ("tls.up", "tls.example.com"), ("plain_1", "plain.example.org")):
        publisher.publish(site, ca.issue([domain]))
        argv += ["-v", f"{tmp_path / 'certs' / site}:/etc/tlsbridge/certs/{site}:ro"]
    proc = run([*argv, nginx_image, "nginx", "-t"], check=False)
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert "[warn]" not in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 1 and 'unknown directive "http2"' in proc.stderr, proc.stderr


def test_serves_the_published_certificates(stack: Stack) -> None:
    # alpha: issued by Pebble through the webroot served by the generated nginx.
    served = stack.wait_served(stack.alpha, stack.alpha_domain)
    assert served == stack.published(stack.alpha)
    verified = ssl.create_default_context(cafile=str(stack.pebble_root))
    for name in (stack.alpha_domain, f"www.{stack.alpha_domain}"):
        assert served_cert(stack.https_port, name, verified) == served  # chain + name check
    # beta: a locally made certificate, chosen by SNI.
    assert served_cert(stack.https_port, stack.beta_domain) == stack.published(stack.beta)


def test_http_redirects_and_answers_challenges(stack: Stack) -> None:
    r = http_get(stack.http_port, stack.alpha_domain, "/some/path?x=1")
    assert r.status == 301
    assert r.headers["location"] == f"https://{stack.alpha_domain}/some/path?x=1"
    challenge = stack.root / "webroot" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "tbc-probe").write_text("token.thumbprint")
    (challenge / "tbc-probe").chmod(0o644)
    r = http_get(stack.http_port, stack.beta_domain, "/.well-known/acme-challenge/tbc-probe")
    assert (r.status, r.body) == (200, b"token.thumbprint")
    assert http_get(stack.http_port, stack.beta_domain, "/.well-known/acme-challenge/nope").status == 404


def test_upstream_proxy_and_hsts(stack: Stack) -> None:
    tls = insecure()
    r = http_get(stack.https_port, stack.beta_domain, "/x/y?z=1", tls)
    assert r.status == 200
    assert r.body == f"app uri=/base/x/y?z=1 host={stack.beta_domain} proto=https\n".encode()
    assert r.headers["strict-transport-security"] == "max-age=63072000"
    r = http_get(stack.https_port, stack.alpha_domain, "/", tls)
    assert r.status == 200 and b"served over HTTPS" in r.body
    assert "strict-transport-security" not in r.headers


def test_http2_and_mozilla_intermediate(stack: Stack) -> None:
    ctx = insecure()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=stack.beta_domain) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() == "TLSv1.3"
    tls12 = insecure()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw, \
            tls12.wrap_socket(raw, server_hostname=stack.beta_domain) as tls:
        cipher = tls.cipher()
        assert cipher is not None and cipher[1] == "TLSv1.2"
        assert cipher[0] in MOZILLA_INTERMEDIATE_CIPHERS.split(":")


def test_mounts_are_read_only_folders(stack: Stack) -> None:
    mounts = stack.container()["Mounts"]
    assert len(mounts) == 4  # two sites, the webroot, the snippets
    for m in mounts:
        assert m["Type"] == "bind"
        assert Path(m["Source"]).is_dir(), f"{m['Source']} is not a folder"
        assert m["RW"] is False
    targets = {m["Destination"] for m in mounts}
    assert f"/etc/tlsbridge/certs/{stack.alpha}" in targets


def test_a_renewal_is_served_after_a_reload_without_recreating(stack: Stack) -> None:
    before = stack.container()["Id"]
    old = stack.published(stack.beta)
    assert stack.publisher.publish(stack.beta, stack.local_ca.issue([stack.beta_domain]))
    new = stack.published(stack.beta)
    assert new != old
    assert stack.exec_nginx("nginx", "-s", "reload").returncode == 0
    assert stack.wait_served(stack.beta, stack.beta_domain) == new
    assert stack.container()["Id"] == before


def test_nginx_runs_hardened_and_hides_its_version(stack: Stack) -> None:
    """read_only, cap_drop ALL (+ the measured few), no-new-privileges: and it still serves."""
    host = stack.container()["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted(["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE", "DAC_OVERRIDE"])
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert set(host["Tmpfs"]) == {"/run", "/var/cache/nginx", "/var/lib/nginx", "/tmp"}
    assert stack.exec_nginx("sh", "-c", "touch /etc/x").returncode != 0  # read-only for real
    for port, tls in ((stack.http_port, None), (stack.https_port, insecure())):
        r = http_get(port, stack.beta_domain, "/", tls)
        assert r.headers["server"] == "nginx", r.headers  # server_tokens off: no version


def test_the_redirect_ignores_a_foreign_host_header(stack: Stack) -> None:
    """An unknown Host lands on nginx's default server: the redirect names the site itself."""
    r = http_get(stack.http_port, "evil.example.net", "/login")
    assert r.status == 301
    assert r.headers["location"] in (f"https://{stack.alpha_domain}/login", f"https://{stack.beta_domain}/login")
