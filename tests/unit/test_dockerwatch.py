"""Which sites a container start concerns (pure: the event's name and labels against the config)."""

from __future__ import annotations

from tlsbridge.adapters.docker import DockerEvent
from tlsbridge.config import parse
from tlsbridge.sidecar.watch import sites_of_container

CONFIG = """
sites:
  shop:
    domains: [shop.example.com]
    reload:
      - container: web
  blog:
    domains: [blog.example.com]
    reload:
      - label: com.example.role=frontend
  api:
    domains: [api.example.com]
"""


def event(name: str, **labels: str) -> DockerEvent:
    return DockerEvent(type="container", action="start", id="f" * 64, name=name,
                       attributes={"name": name, **labels})


def test_a_container_start_concerns_the_sites_it_serves() -> None:
    cfg = parse(CONFIG)
    assert sites_of_container(cfg, event("web")) == ["shop"]
    assert sites_of_container(cfg, event("x", **{"com.example.role": "frontend"})) == ["blog"]
    assert sites_of_container(cfg, event("x", **{"tlsbridge.site": "api, shop"})) == ["shop", "api"]
    assert sites_of_container(cfg, event("web", **{"tlsbridge.site": "blog"})) == ["shop", "blog"]
    assert sites_of_container(cfg, event("other")) == []
    assert sites_of_container(cfg, event("x", **{"com.example.role": "backend"})) == []
