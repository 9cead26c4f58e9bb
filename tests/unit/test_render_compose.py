"""The pure renderers of `tlsbridge compose`: determinism, mounts, toggles.

The real tools (docker compose config, nginx -t, a served certificate) check the same output in
tests/integration/test_compose_generated.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tlsbridge.config import Config, parse
from tlsbridge.errors import ConfigError
from tlsbridge.render import compose, nginx

BASE = Path("/srv/tb")

CONFIGS = {
    "none": "sites: {}\n",
    "one": """
        sites:
          example:
            domains: [example.com, www.example.com]
        """,
    "many": """
        publish: {dir: ./certs}
        challenge: {webroot: ./webroot}
        sites:
          a.site:
            domains: [a.example.com]
            hsts: true
          b_site:
            domains: [b.example.com, b2.example.com]
            upstream: http://app:8080
          c-site:
            domains: [c.example.org]
            upstream: https://10.0.0.7:8443/base/
            hsts: true
        """,
}


def cfg_of(key: str) -> Config:
    return parse(textwrap.dedent(CONFIGS[key]), source=str(BASE / "tlsbridge.yaml"), base=BASE)


def spec_of(cfg: Config, *, sidecar: bool = False, socket_proxy: bool = False) -> compose.ComposeSpec:
    inside = compose.SidecarPaths(str(cfg.publish.dir), str(cfg.challenge.webroot),
                                  str(cfg.certbot.config_dir), str(cfg.state.dir))
    return compose.ComposeSpec(
        source="tlsbridge.yaml",
        sites=[compose.SiteMount(n, str(cfg.publish.dir / n)) for n in cfg.sites],
        nginx_dir="./nginx",
        webroot=str(cfg.challenge.webroot),
        sidecar=sidecar or socket_proxy,
        socket_proxy=socket_proxy,
        inside=inside if sidecar or socket_proxy else None,
    )


MODES = [dict(), dict(sidecar=True), dict(socket_proxy=True)]


@pytest.mark.parametrize("key", sorted(CONFIGS))
@pytest.mark.parametrize("mode", MODES, ids=["host", "sidecar", "socket-proxy"])
def test_same_config_same_bytes(key: str, mode: dict[str, bool]) -> None:
    a, b = cfg_of(key), cfg_of(key)
    assert a is not b
    assert compose.render(spec_of(a, **mode)) == compose.render(spec_of(b, **mode))
    opts = nginx.NginxOptions()
    assert nginx.render_all(a.sites.values(), opts) == nginx.render_all(b.sites.values(), opts)


def _services(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert "version" not in doc  # the Compose Specification has no version key
    services: dict[str, Any] = doc["services"]
    return services


@pytest.mark.parametrize("key", sorted(CONFIGS))
@pytest.mark.parametrize("mode", MODES, ids=["host", "sidecar", "socket-proxy"])
def test_no_single_file_mounts(key: str, mode: dict[str, bool]) -> None:
    cfg = cfg_of(key)
    services = _services(compose.render(spec_of(cfg, **mode)))
    folders = {str(cfg.publish.dir / n) for n in cfg.sites} | {str(cfg.challenge.webroot),
                                                                "./nginx", "."}
    for name, svc in services.items():
        for m in svc.get("volumes", []):
            assert isinstance(m, dict), f"{name}: short mount syntax {m!r}"
            assert m["type"] in ("bind", "volume")
            assert not str(m["source"]).endswith(".pem") and not str(m["target"]).endswith(".pem")
            if m["type"] == "bind" and m["source"] != compose.DOCKER_SOCKET:
                assert m["source"] in folders, f"{name}: unexpected bind source {m['source']}"
            if m["target"].startswith(nginx.CERTS_DIR):
                assert m["read_only"] is True
    nginx_svc = services["nginx"]
    targets = {m["target"]: m for m in nginx_svc["volumes"]}
    if mode:
        assert targets[nginx.CERTS_DIR]["source"] == "certs"
    else:
        for site in cfg.sites:
            assert targets[f"{nginx.CERTS_DIR}/{site}"]["source"] == str(cfg.publish.dir / site)
    assert targets[nginx.WEBROOT_DIR]["read_only"] is True
    assert targets[nginx.CONF_DIR] == {"type": "bind", "source": "./nginx",
                                       "target": nginx.CONF_DIR, "read_only": True}


def test_nginx_service_shape() -> None:
    cfg = cfg_of("many")
    svc = _services(compose.render(spec_of(cfg)))["nginx"]
    assert svc["labels"] == {"tlsbridge.site": "a.site,b_site,c-site"}
    # A sidecar stack labels nginx for every site: adding one leaves the service unchanged, so
    # `docker compose up -d` does not recreate (stop) nginx.
    side = _services(compose.render(spec_of(cfg, sidecar=True)))["nginx"]
    assert side["labels"] == {"tlsbridge.site": "*"}
    fewer = _services(compose.render(spec_of(cfg_of("one"), sidecar=True)))["nginx"]
    assert fewer == side
    assert svc["restart"] == "unless-stopped"
    assert svc["ports"] == ["${TLSBRIDGE_HTTP_PORT:-80}:80", "${TLSBRIDGE_HTTPS_PORT:-443}:443"]
    assert svc["healthcheck"]["test"] == ["CMD", "nginx", "-t", "-q"]
    assert svc["image"] == "nginx:stable"
    assert "labels" not in _services(compose.render(spec_of(cfg_of("none"))))["nginx"]


def test_sidecar_socket_and_proxy() -> None:
    cfg = cfg_of("one")
    text = compose.render(spec_of(cfg, sidecar=True))
    tb = _services(text)["tlsbridge"]
    assert tb["entrypoint"] == ["tlsbridge"]
    assert tb["command"] == ["-c", "/etc/tlsbridge/tlsbridge.yaml", "run", "--listen", "0.0.0.0:8400"]
    assert "ports" not in tb
    sock = [m for m in tb["volumes"] if m["source"] == compose.DOCKER_SOCKET]
    assert sock and sock[0]["read_only"] is True
    assert "root-equivalent" in text
    vols = {m["source"]: m["target"] for m in tb["volumes"] if m["type"] == "volume"}
    assert vols == {"certs": str(cfg.publish.dir), "acme-webroot": str(cfg.challenge.webroot),
                    "letsencrypt": str(cfg.certbot.config_dir), "state": str(cfg.state.dir)}

    services = _services(compose.render(spec_of(cfg, socket_proxy=True)))
    tb = services["tlsbridge"]
    assert tb["environment"] == {"DOCKER_HOST": "tcp://socket-proxy:2375"}
    assert all(m["source"] != compose.DOCKER_SOCKET for m in tb["volumes"])
    proxy = services["socket-proxy"]
    assert proxy["environment"] == {"CONTAINERS": "1", "EXEC": "1", "POST": "1"}
    assert [m["source"] for m in proxy["volumes"]] == [compose.DOCKER_SOCKET]


def test_dollar_and_quotes_are_escaped() -> None:
    spec = compose.ComposeSpec(source="x", sites=[compose.SiteMount("a", '/p/$HOME/"a"')],
                               nginx_dir="./n $x", webroot="/w")
    svc = _services(compose.render(spec))["nginx"]
    assert svc["volumes"][0]["source"] == '/p/$$HOME/"a"'
    assert svc["volumes"][2]["source"] == "./n $$x"


# -- nginx snippets --------------------------------------------------------------------------------

def _snippets(key: str = "many", http2: str = "listen") -> dict[str, str]:
    return nginx.render_all(cfg_of(key).sites.values(), nginx.NginxOptions(http2=http2))


def test_tls_settings_written_once_and_included_per_site() -> None:
    files = _snippets()
    tls = files[nginx.TLS_FILE]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls
    assert f"ssl_ciphers {nginx.MOZILLA_INTERMEDIATE_CIPHERS};" in tls
    assert "ssl_session_timeout 1d;" in tls
    assert "ssl_session_tickets off;" in tls
    assert "ssl_prefer_server_ciphers off;" in tls
    everything = "".join(files.values())
    assert everything.count("ssl_session_cache") == 1
    assert everything.count("ssl_protocols") == 1
    assert "ssl_stapling" not in everything
    # Not picked up by conf.d/*.conf at http level, where it would collide with the base config.
    assert not nginx.TLS_FILE.endswith(".conf")
    for name, text in files.items():
        assert nginx.is_generated(text)
        if name.startswith(nginx.SITE_PREFIX):
            assert text.count(f"include {nginx.CONF_DIR}/{nginx.TLS_FILE};") == 1
    assert "map $http_upgrade $tlsbridge_connection {" in files[nginx.PROXY_FILE]
    assert set(files) == {nginx.TLS_FILE, nginx.PROXY_FILE, "tlsbridge-site-a.site.conf",
                          "tlsbridge-site-b_site.conf", "tlsbridge-site-c-site.conf"}


def test_site_ports_paths_and_redirect() -> None:
    text = _snippets()["tlsbridge-site-b_site.conf"]
    assert text.count("server_name b.example.com b2.example.com;") == 2
    assert "listen 80;" in text and "listen 443 ssl http2;" in text
    assert "location ^~ /.well-known/acme-challenge/ {" in text
    assert f"root {nginx.WEBROOT_DIR};" in text
    assert "return 301 https://b.example.com$request_uri;" in text and "$host$request_uri" not in text
    assert text.count("server_tokens off;") == 2
    assert f"ssl_certificate     {nginx.CERTS_DIR}/b_site/fullchain.pem;" in text
    assert f"ssl_certificate_key {nginx.CERTS_DIR}/b_site/privkey.pem;" in text


def test_hsts_toggle() -> None:
    files = _snippets()
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in files[
        "tlsbridge-site-a.site.conf"]
    assert "Strict-Transport-Security" not in files["tlsbridge-site-b_site.conf"]


def test_upstream_toggle() -> None:
    files = _snippets()
    static = files["tlsbridge-site-a.site.conf"]
    assert "proxy_pass" not in static and "return 200" in static
    by_name = files["tlsbridge-site-b_site.conf"]
    assert "set $tlsbridge_upstream http://app:8080;" in by_name
    assert "proxy_pass $tlsbridge_upstream;" in by_name
    assert "resolver 127.0.0.11 ipv6=off valid=10s;" in by_name
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in by_name
    assert "rewrite" not in by_name and "return 200" not in by_name
    by_ip = files["tlsbridge-site-c-site.conf"]
    assert "resolver" not in by_ip
    assert "set $tlsbridge_upstream https://10.0.0.7:8443;" in by_ip
    assert "rewrite ^/(.*)$ /base/$1 break;" in by_ip
    assert "proxy_ssl_server_name on;" in by_ip


@pytest.mark.parametrize(("mode", "present", "absent"), [
    ("listen", "listen 443 ssl http2;", "http2 on;"),
    ("on", "http2 on;", "ssl http2"),
    ("off", "listen 443 ssl;", "http2"),
])
def test_http2_modes(mode: str, present: str, absent: str) -> None:
    text = _snippets(http2=mode)["tlsbridge-site-a.site.conf"]
    assert present in text
    assert absent not in text


@pytest.mark.parametrize("upstream", [
    'http://app:8080/a"b', "http://app:8080/a;b", "http://app:8080/$x", "http://app:8080/a{b}",
    "http://app:8080/?q=1", "http://app:99999",
])
def test_upstream_nginx_cannot_take(upstream: str) -> None:
    text = f"sites:\n  s:\n    domains: [s.example.com]\n    upstream: '{upstream}'\n"
    try:
        cfg = parse(text, source="t.yaml", base=BASE)
    except ConfigError:
        return  # the config parser already refuses it: fine too
    with pytest.raises(ConfigError, match=r"t\.yaml: sites\.s\.upstream: "):
        nginx.render_all(cfg.sites.values(), nginx.NginxOptions(source="t.yaml"))
