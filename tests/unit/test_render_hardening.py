"""The generated compose services are hardened (issue 12.7): read-only root filesystems, no
capabilities beyond what nginx needs, no-new-privileges, a pinnable socket proxy image, and the
sidecar's endpoint on the stack's network without a published port."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tlsbridge.render import compose

INSIDE = compose.SidecarPaths("/var/lib/tlsbridge/certs", "/var/lib/tlsbridge/acme-webroot",
                              "/etc/letsencrypt", "/var/lib/tlsbridge/state",
                              ("/var/lib/tlsbridge/certbot-work", "/var/log/tlsbridge"))


def _services(**kw: Any) -> dict[str, Any]:
    spec = compose.ComposeSpec(source="t.yaml", sites=[compose.SiteMount("a", "./certs/a")],
                               nginx_dir="./nginx", webroot="./webroot", inside=INSIDE, **kw)
    return dict(yaml.safe_load(compose.render(spec))["services"])


@pytest.mark.parametrize("mode", [{}, {"sidecar": True}, {"sidecar": True, "socket_proxy": True}])
def test_nginx_is_hardened_in_every_mode(mode: dict[str, bool]) -> None:
    nginx = _services(**mode)["nginx"]
    assert nginx["read_only"] is True
    assert nginx["cap_drop"] == ["ALL"]
    assert nginx["cap_add"] == ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE", "DAC_OVERRIDE"]
    assert nginx["security_opt"] == ["no-new-privileges:true"]
    assert set(nginx["tmpfs"]) == {"/run", "/var/cache/nginx", "/var/lib/nginx", "/tmp"}


def test_the_sidecar_has_no_capabilities_and_writes_only_volumes_and_tmpfs() -> None:
    tb = _services(sidecar=True)["tlsbridge"]
    assert tb["read_only"] is True and tb["cap_drop"] == ["ALL"] and "cap_add" not in tb
    assert tb["security_opt"] == ["no-new-privileges:true"]
    assert tb["tmpfs"] == ["/tmp:mode=1777",
                           "/var/lib/tlsbridge/certbot-work:uid=10001,gid=10001,mode=0700",
                           "/var/log/tlsbridge:uid=10001,gid=10001,mode=0700"]
    assert tb["command"][-2:] == ["--listen", "0.0.0.0:8400"] and "ports" not in tb


def test_socket_proxy_image_pinning() -> None:
    text = compose.render(compose.ComposeSpec("t", [], "./n", "./w", sidecar=True, socket_proxy=True,
                                              inside=INSIDE))
    assert "NOT PINNED" in text and compose.SOCKET_PROXY_IMAGE in text
    pinned = "tecnativa/docker-socket-proxy:v0.4.1@sha256:" + "a" * 64
    services = _services(sidecar=True, socket_proxy=True, socket_proxy_image=pinned)
    assert services["socket-proxy"]["image"] == pinned
    assert services["socket-proxy"]["security_opt"] == ["no-new-privileges:true"]


@pytest.mark.parametrize(("image", "pinned"), [
    ("tecnativa/docker-socket-proxy", False), ("tecnativa/docker-socket-proxy:latest", False),
    ("registry:5000/proxy", False), ("registry:5000/proxy:0.3.0", True),
    ("proxy@sha256:" + "0" * 64, True), ("proxy:latest@sha256:" + "0" * 64, True),
])
def test_is_pinned(image: str, pinned: bool) -> None:
    assert compose.is_pinned(image) is pinned
