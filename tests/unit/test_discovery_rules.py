"""Discovery's pure rules: labels -> a site or a skip, conflicts, scope, grace; and its config,
server block and compose parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsbridge import config
from tlsbridge.config import ChallengeConfig, ReloadTarget, Site
from tlsbridge.discovery import rules
from tlsbridge.discovery.rules import Skip, discover, grace, is_app, is_our_nginx, is_ours, site_of
from tlsbridge.errors import ConfigError
from tlsbridge.render import compose, discovered
from tlsbridge.targets import ContainerInfo, Mount

WEBROOT = ChallengeConfig()
DNS = ChallengeConfig(method="dns", dns_plugin="rfc2136")
NGINX = (ReloadTarget(container="stack-nginx-1"),)
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def app(cname: str = "web", state: str = "running", ports: tuple[int, ...] = (80,),
        networks: tuple[str, ...] = ("stack_default",), **labels: str) -> ContainerInfo:
    return ContainerInfo(id=f"id-{cname}", name=cname, state=state,
                         labels={f"tlsbridge.{k}": v for k, v in labels.items()},
                         networks={n: "172.20.0.5" for n in networks}, ports=ports)


# -- one container's labels ---------------------------------------------------------------------
SITES = [
    # id, container, challenge, expected (name, domains, upstream, hsts)
    ("defaults", app(domains="app.example.com"), WEBROOT,
     ("app.example.com", ("app.example.com",), "http://web:80", False)),
    ("several names, spaces", app(domains=" a.example.com , www.a.example.com "), WEBROOT,
     ("a.example.com", ("a.example.com", "www.a.example.com"), "http://web:80", False)),
    ("single exposed port", app(ports=(3000,), domains="a.example.com"), WEBROOT,
     ("a.example.com", ("a.example.com",), "http://web:3000", False)),
    ("two exposed ports: 80", app(ports=(80, 443), domains="a.example.com"), WEBROOT,
     ("a.example.com", ("a.example.com",), "http://web:80", False)),
    ("no exposed port: 80", app(ports=(), domains="a.example.com"), WEBROOT,
     ("a.example.com", ("a.example.com",), "http://web:80", False)),
    ("explicit port, name, hsts, scheme", app(domains="a.example.com", port="8443", name="shop",
                                              hsts="true", scheme="https"), WEBROOT,
     ("shop", ("a.example.com",), "https://web:8443", True)),
    ("unicode name", app(domains="bücher.example"), WEBROOT,
     ("xn--bcher-kva.example", ("xn--bcher-kva.example",), "http://web:80", False)),
    ("wildcard with dns", app(domains="*.apps.example.com"), DNS,
     ("wildcard.apps.example.com", ("*.apps.example.com",), "http://web:80", False)),
]


@pytest.mark.parametrize(("c", "challenge", "want"), [s[1:] for s in SITES], ids=[s[0] for s in SITES])
def test_labels_give_a_site(c: ContainerInfo, challenge: ChallengeConfig,
                            want: tuple[str, tuple[str, ...], str, bool]) -> None:
    got = site_of(c, challenge, NGINX)
    assert isinstance(got, Site), got
    assert (got.name, got.domains, got.upstream, got.hsts) == want
    assert got.discovered == c.name and got.reload == NGINX and got.challenge == challenge


SKIPS = [
    ("empty domains", app(domains=" , "), "tlsbridge.domains", "no domain names"),
    ("invalid domain", app(domains="bad_name!.example.com"), "tlsbridge.domains", "bad_name!"),
    ("wildcard without dns", app(domains="*.example.com"), "tlsbridge.domains", "wildcard needs"),
    ("listed twice", app(domains="a.example.com,A.example.com"), "tlsbridge.domains", "listed twice"),
    ("ip address", app(domains="10.0.0.1"), "tlsbridge.domains", "10.0.0.1"),
    ("port not a number", app(domains="a.example.com", port="http"), "tlsbridge.port", "not a port"),
    ("port out of range", app(domains="a.example.com", port="70000"), "tlsbridge.port", "not a port"),
    ("bad name", app(domains="a.example.com", name="../etc"), "tlsbridge.name", "site name"),
    ("bad hsts", app(domains="a.example.com", hsts="maybe"), "tlsbridge.hsts", "true or false"),
    ("bad scheme", app(domains="a.example.com", scheme="ftp"), "tlsbridge.scheme", "http or https"),
]


@pytest.mark.parametrize(("c", "label", "problem"), [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS])
def test_bad_labels_give_one_skip_naming_container_label_problem(c: ContainerInfo, label: str,
                                                                 problem: str) -> None:
    got = site_of(c, WEBROOT, NGINX)
    assert isinstance(got, Skip), got
    assert got.label == label and problem in got.problem
    line = str(got)
    assert line.startswith(f"container {c.name}: label {label}: ") and line.endswith("; skipped")
    assert "\n" not in line


# -- conflicts between containers ----------------------------------------------------------------
YAML = {"blog": Site("blog", ("blog.example.com",))}


def test_conflicts_skip_the_newcomer_and_keep_the_others() -> None:
    apps = [
        app("a", domains="a.example.com"),
        app("b", domains="b.example.com", name="a.example.com"),  # same name, other domains
        app("c", domains="c.example.com", name="blog"),  # a YAML site's name
        app("d", domains="blog.example.com"),  # a YAML site's domain
        app("e", domains="e.example.com,a.example.com", name="e"),  # a discovered site's domain
        app("f", domains="a.example.com"),  # a replica of a: not a conflict
        app("g", domains="g.example.com", port="x"),
    ]
    found = discover(apps, YAML, WEBROOT, NGINX)
    assert list(found.sites) == ["a.example.com"]
    assert found.sites["a.example.com"].discovered == "a"
    skipped = {s.container: (s.label, s.problem) for s in found.skips}
    assert set(skipped) == {"b", "c", "d", "e", "g"}
    assert skipped["b"] == ("tlsbridge.name", "site a.example.com is already declared by container a "
                                              "with other domains")
    assert skipped["c"] == ("tlsbridge.name", "site blog is already a site in the config file")
    assert skipped["d"] == ("tlsbridge.domains", "blog.example.com is already a domain of config site blog")
    assert "site a.example.com of container a" in skipped["e"][1]


def test_the_incumbent_keeps_its_site() -> None:
    apps = [app("a", domains="x.example.com", name="x"), app("z", domains="y.example.com", name="x")]
    assert discover(apps, {}, WEBROOT, NGINX).sites["x"].discovered == "a"
    found = discover(apps, {}, WEBROOT, NGINX, incumbents={"x": "z"})
    assert found.sites["x"].discovered == "z" and [s.container for s in found.skips] == ["a"]


# -- which containers count ----------------------------------------------------------------------
@pytest.mark.parametrize(("state", "present"), [("running", True), ("restarting", True), ("paused", True),
                                                 ("exited", False), ("created", False), ("dead", False)])
def test_present_states(state: str, present: bool) -> None:
    assert is_app(app(state=state, domains="a.example.com")) is present
    assert not is_app(app(state=state))  # no tlsbridge.domains: ignored


def test_scope_an_app_is_ours_when_it_shares_a_dns_network_with_our_nginx() -> None:
    nginx = ContainerInfo("n", "stack-nginx-1", "running", networks={"stack_default": "1", "bridge": "2"})
    assert is_ours(app(networks=("stack_default",)), [nginx])
    assert not is_ours(app(networks=("other_default",)), [nginx])
    assert not is_ours(app(networks=("bridge",)), [nginx])  # no name resolution there
    assert not is_ours(app(), [])


def test_our_nginx_mounts_our_folder() -> None:
    label = {rules.NGINX_LABEL: "true"}
    host = ContainerInfo("n", "n", "running", labels=label,
                         mounts=(Mount("bind", "/srv/tb/discovered", discovered.NGINX_DIR),))
    assert is_our_nginx(host, Path("/srv/tb/discovered"), None)
    assert not is_our_nginx(host, Path("/srv/other/discovered"), None)
    assert not is_our_nginx(ContainerInfo("n", "n", "running", mounts=host.mounts), Path("/srv/tb/discovered"), None)
    vol = ContainerInfo("n", "n", "running", labels=label,
                        mounts=(Mount("volume", "/var/lib/docker/volumes/s_discovered/_data",
                                      discovered.NGINX_DIR, name="s_discovered"),))
    ours = Mount("volume", "/var/lib/docker/volumes/s_discovered/_data", "/var/lib/tlsbridge/discovered",
                 name="s_discovered")
    theirs = Mount("volume", "/x", "/var/lib/tlsbridge/discovered", name="t_discovered")
    assert is_our_nginx(vol, Path("/var/lib/tlsbridge/discovered"), ours)
    assert not is_our_nginx(vol, Path("/var/lib/tlsbridge/discovered"), theirs)


# -- grace ---------------------------------------------------------------------------------------
GRACE = timedelta(minutes=5)
GRACES = [
    # id, served, present, gone_since, now offset, kept, removed, wake offset
    ("all present", {"a"}, {"a"}, {}, 0, {}, set(), None),
    ("just gone", {"a"}, set(), {}, 0, {"a": 0}, set(), 300),
    ("within grace", {"a"}, set(), {"a": 0}, 299, {"a": 0}, set(), 300),
    ("grace over", {"a"}, set(), {"a": 0}, 300, {}, {"a"}, None),
    ("came back", {"a"}, {"a"}, {"a": 0}, 100, {}, set(), None),
    ("two, earliest wakes", {"a", "b"}, set(), {"a": 60}, 100, {"a": 60, "b": 100}, set(), 360),
]


@pytest.mark.parametrize(("served", "present", "since", "now", "kept", "removed", "wake"),
                         [g[1:] for g in GRACES], ids=[g[0] for g in GRACES])
def test_grace(served: set[str], present: set[str], since: dict[str, int], now: int, kept: dict[str, int],
               removed: set[str], wake: int | None) -> None:
    def at(s: int) -> datetime:
        return T0 + timedelta(seconds=s)

    g = grace(served, present, {k: at(v) for k, v in since.items()}, at(now), GRACE)
    assert dict(g.gone_since) == {k: at(v) for k, v in kept.items()}
    assert g.remove == removed
    assert g.wake_at == (at(wake) if wake is not None else None)


# -- config, server block, compose ---------------------------------------------------------------
def test_discovery_config() -> None:
    cfg = config.parse("discovery: {enabled: true, grace: 30s, dir: /srv/blocks}\n")
    assert cfg.discovery == config.DiscoveryConfig(True, timedelta(seconds=30), Path("/srv/blocks"))
    assert cfg.sites == {}
    assert config.parse("{}").discovery == config.DiscoveryConfig()
    with pytest.raises(ConfigError, match="discovery.enabled"):
        config.parse("discovery: {enabled: maybe}\n")
    with pytest.raises(ConfigError, match="discovery.grace"):
        config.parse("discovery: {grace: soon}\n")
    with pytest.raises(ConfigError, match="discovery.nope"):
        config.parse("discovery: {nope: 1}\n")


def test_the_block_is_the_yaml_sites_block_proxying_by_name() -> None:
    site = Site("shop", ("shop.example.com",), upstream="http://web:3000", hsts=True, discovered="web")
    text = discovered.render_block(site, "tlsbridge.yaml")
    assert text.startswith("# Generated by `tlsbridge compose`") and "container web" in text
    for needle in ("listen 443 ssl", "include /etc/nginx/conf.d/tlsbridge-tls.inc;",
                   "location ^~ /.well-known/acme-challenge/", "return 301 https://shop.example.com",
                   "resolver 127.0.0.11", "set $tlsbridge_upstream http://web:3000;",
                   "proxy_pass $tlsbridge_upstream;", "Strict-Transport-Security",
                   "/etc/tlsbridge/certs/shop/fullchain.pem"):
        assert needle in text, needle
    assert "include /etc/tlsbridge/discovered/*.conf;" in discovered.render_include("x.yaml")


def test_compose_mounts_the_blocks_and_labels_nginx() -> None:
    host = compose.render(compose.ComposeSpec("t.yaml", [], "./nginx", "./webroot",
                                              discovery=("./certs", "./discovered")))
    assert 'tlsbridge.discovery: "true"' in host and "docker run -d --network <project>_default" in host
    assert 'source: "./discovered"' in host and 'target: "/etc/tlsbridge/discovered"' in host
    assert 'source: "./certs"' in host and 'source: "./webroot"' in host
    paths = compose.SidecarPaths("/p", "/w", "/c", "/s", discovery_dir="/var/lib/tlsbridge/discovered")
    side = compose.render(compose.ComposeSpec("t.yaml", [], "./nginx", "", sidecar=True, inside=paths,
                                              discovery=("", "")))
    assert "  discovered: {}" in side and 'target: "/var/lib/tlsbridge/discovered"' in side
    plain = compose.render(compose.ComposeSpec("t.yaml", [], "./nginx", "./webroot"))
    assert "discover" not in plain
