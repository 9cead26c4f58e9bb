"""Pure target resolution: names, labels, the tlsbridge.site label, addresses, start decisions."""

from __future__ import annotations

import pytest

from tlsbridge.config import ReloadTarget, Site
from tlsbridge.targets import (
    ContainerInfo,
    label_lists_site,
    probe_address,
    resolve,
    sni_for,
    start_decision,
)


def ct(name: str, state: str = "running", status: str = "Up 1 second", **labels: str) -> ContainerInfo:
    return ContainerInfo(id=f"id-{name}", name=name, state=state, status=status,
                         labels={k.replace("__", "."): v for k, v in labels.items()},
                         networks={"front": f"172.20.0.{len(name)}"})


def site(name: str = "shop", *reload: ReloadTarget, domains: tuple[str, ...] = ("shop.example.com",)) -> Site:
    return Site(name=name, domains=domains, reload=reload)


ALL = [ct("nginx"), ct("edge", role="front"), ct("edge2", role="front"), ct("other", role="back"),
       ct("multi", tlsbridge__site="blog, shop"), ct("blogonly", tlsbridge__site="blog")]


def test_named_labelled_and_site_labelled_containers_each_once_in_name_order() -> None:
    s = site("shop", ReloadTarget(container="nginx"), ReloadTarget(label="role=front"),
             ReloadTarget(container="edge"))
    res = resolve(s, ALL)
    assert [c.name for c in res.targets] == ["edge", "edge2", "multi", "nginx"]
    assert res.errors == () and res.warnings == ()


def test_a_missing_named_container_is_an_error_and_an_empty_label_a_warning() -> None:
    res = resolve(site("shop", ReloadTarget(container="gone"), ReloadTarget(label="role=none")), ALL)
    assert [c.name for c in res.targets] == ["multi"]
    assert len(res.errors) == 1 and "container gone (reload[0]) does not exist" in res.errors[0]
    assert "sites.shop.reload[0].container" in res.errors[0]
    assert res.warnings == ("no container has the label role=none (reload[1])",)


def test_a_site_without_reload_entries_finds_only_its_label() -> None:
    assert [c.name for c in resolve(site("blog"), ALL).targets] == ["blogonly", "multi"]
    assert resolve(site("nobody"), ALL).targets == ()


@pytest.mark.parametrize(("value", "name", "expected"), [
    ("shop", "shop", True), ("blog,shop", "shop", True), (" blog , shop ", "shop", True),
    ("shopping", "shop", False), ("", "shop", False),
    ("*", "shop", True), (" * ", "any", True),  # every site (a generated sidecar stack)
])
def test_label_lists_site(value: str, name: str, expected: bool) -> None:
    assert label_lists_site(value, name) is expected


def test_probe_address_prefers_a_shared_network() -> None:
    c = ContainerInfo(id="x", name="x", state="running", networks={"a": "10.0.0.2", "b": "10.1.0.2", "c": ""})
    assert probe_address(c, None) == "10.0.0.2"  # on the host: any bridge address
    assert probe_address(c, frozenset({"b"})) == "10.1.0.2"
    assert probe_address(c, frozenset({"c", "z"})) is None
    host = ContainerInfo(id="h", name="h", state="running", network_mode="host")
    assert probe_address(host, None) == "127.0.0.1"
    assert probe_address(host, frozenset({"a"})) is None


def test_sni_is_the_first_domain_with_a_wildcard_made_concrete() -> None:
    assert sni_for(site(domains=("a.example.com", "b.example.com"))) == "a.example.com"
    assert sni_for(site(domains=("*.example.com",))) == "tlsbridge-verify.example.com"


@pytest.mark.parametrize(("state", "status", "action"), [
    ("created", "Created", "start"),
    ("exited", "Exited (1) 3 seconds ago", "start"),  # nginx: certificate missing
    ("exited", "Exited (137) 1 minute ago", "start"),
    ("exited", "Exited (0) 2 hours ago", "skip"),  # docker stop: on purpose
    ("restarting", "Restarting (1) 1 second ago", "wait"),
    ("paused", "Up 1 minute (Paused)", "fail"),
    ("dead", "Dead", "fail"),
])
def test_start_decision(state: str, status: str, action: str) -> None:
    got, why = start_decision(ct("n", state=state, status=status))
    assert got == action
    assert bool(why) == (action in ("skip", "fail"))
