"""nginx containers for delivery tests: a private network, site snippets, probes, cleanup.

Everything is named with a unique `tbdeliver-<hex>` prefix and removed by `NginxBox.close()`.
Containers join the box's own bridge network (the host reaches its addresses directly).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlsbridge.adapters.tlsprobe import served_leaf
from tlsbridge.certinfo import parse_pem
from tlsbridge.delivery.verify import fingerprint

CERTS_IN_CONTAINER = "/etc/tlsbridge/certs"
WEBROOT_IN_CONTAINER = "/var/www/acme"

HTTP_SERVER = f"""server {{
    listen 80 default_server;
    location /.well-known/acme-challenge/ {{ root {WEBROOT_IN_CONTAINER}; }}
    location / {{ return 404; }}
}}
"""


def https_server(site: str, domain: str) -> str:
    return f"""server {{
    listen 443 ssl;
    server_name {domain};
    ssl_certificate {CERTS_IN_CONTAINER}/{site}/fullchain.pem;
    ssl_certificate_key {CERTS_IN_CONTAINER}/{site}/privkey.pem;
    location / {{ return 200 "{site}\\n"; }}
}}
"""


class NginxBox:
    def __init__(self, client: Any, image: str) -> None:
        self.client = client
        self.image = image
        self.prefix = f"tbdeliver-{secrets.token_hex(3)}"
        self.network = client.networks.create(self.prefix, driver="bridge")
        self.containers: list[Any] = []

    def nginx(self, name: str, conf_dir: Path, publish_dir: Path, webroot: Path, *,
              http_port: int | None = None, labels: Mapping[str, str] | None = None,
              extra: Mapping[str, str] | None = None) -> Any:
        """Create and start an nginx container; it may exit at once (no certificate yet).
        `extra`: more read-only folders, host path -> path inside."""
        ports = {"80/tcp": ("127.0.0.1", http_port)} if http_port else {}
        c = self.client.containers.run(
            self.image, detach=True, name=f"{self.prefix}-{name}", network=self.network.name,
            ports=ports, labels=dict(labels or {}),
            volumes={str(conf_dir): {"bind": "/etc/nginx/conf.d", "mode": "ro"},
                     str(publish_dir): {"bind": CERTS_IN_CONTAINER, "mode": "ro"},
                     str(webroot): {"bind": WEBROOT_IN_CONTAINER, "mode": "ro"},
                     **{k: {"bind": v, "mode": "ro"} for k, v in (extra or {}).items()}},
        )
        self.containers.append(c)
        return c

    def wait_state(self, container: Any, state: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            if container.status == state:
                return
            assert time.monotonic() < deadline, f"{container.name} is {container.status}, not {state}"
            time.sleep(0.1)

    def ip(self, container: Any) -> str:
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"])

    def served(self, container: Any, sni: str) -> bytes:
        """The leaf a fresh connection to the container's port 443 gets."""
        ip = self.ip(container)
        deadline = time.monotonic() + 10
        while True:
            try:
                return served_leaf(ip, 443, sni)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def serves(self, container: Any, sni: str, cert_pem: bytes) -> bool:
        """Whether 5 fresh connections in a row all get the leaf of `cert_pem`."""
        want = parse_pem(cert_pem).fingerprint
        return all(fingerprint(self.served(container, sni)) == want for _ in range(5))

    @staticmethod
    def reloads(container: Any) -> int:
        """How many SIGHUPs nginx's master logged (error_log at notice level)."""
        return int(container.logs().count(b"signal 1 (SIGHUP) received"))

    def close(self) -> None:
        for c in self.containers:
            with contextlib.suppress(Exception):
                c.remove(force=True)
        with contextlib.suppress(Exception):
            self.network.remove()


def site_dirs(root: Path) -> tuple[Path, Path, Path]:
    """(conf.d, publish dir, webroot) under `root`, created, readable by nginx's workers."""
    conf, certs, webroot = root / "conf.d", root / "certs", root / "webroot"
    for d in (conf, certs, webroot):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    return conf, certs, webroot
