"""A single-node Docker Swarm on the local engine for the Swarm delivery tests.

`swarm_node()` puts the engine in Swarm mode (`docker swarm init --advertise-addr 127.0.0.1`)
unless it already is, and leaves (`docker swarm leave --force`, then removes the
docker_gwbridge network the init created) at the end only if it did the init. Plain containers
and bridge networks of other tests are not affected by either.

This kernel has no IPVS, so the routing mesh (ingress ports, service VIPs) does not forward
here: the tests publish ports in host mode (and so update stop-first) and reach tasks through
127.0.0.1, the node's address.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tlsbridge.adapters.tlsprobe import served_leaf
from tlsbridge.certinfo import parse_pem
from tlsbridge.delivery.verify import fingerprint
from tlsbridge.targets import SITE_LABEL


@contextlib.contextmanager
def swarm_node(client: Any) -> Iterator[str]:
    """Yields the node id; the engine is a Swarm manager meanwhile."""
    state = client.info().get("Swarm", {}).get("LocalNodeState")
    created = False
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    if state != "active":
        proc = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        created = True
    if not client.networks.list(names=["docker_gwbridge"]):
        # Swarm creates docker_gwbridge only when the first task joins an overlay network; tests
        # need its address before that. Create it the way Docker documents for a custom one.
        client.networks.create("docker_gwbridge", driver="bridge", options={
            "com.docker.network.bridge.name": "docker_gwbridge",
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.enable_ip_masquerade": "true"})
    try:
        yield str(client.info()["Swarm"]["NodeID"])
    finally:
        if created:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)
            if not had_gwbridge:  # the init created it; leaving does not remove it
                subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True,
                               timeout=60)


def gateway_ip(client: Any, network: str = "bridge") -> str:
    """The host's address on a local network: where a task attached to no overlay network (so
    to `bridge`) reaches processes on the host (on docker_gwbridge for tasks on overlays)."""
    net = client.networks.get(network)
    # The bridge interface's own address, not the IPAM record: on a dockerd started for the first
    # time the default bridge's IPAM config holds only the subnet (the gateway appears after a
    # restart), so reading "Gateway" fails on exactly the fresh machines CI runs on.
    iface = net.attrs.get("Options", {}).get("com.docker.network.bridge.name") or "docker0"
    return interface_ipv4(iface)


def interface_ipv4(iface: str) -> str:
    """The IPv4 address of a network interface (SIOCGIFADDR)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])


def site_secrets(client: Any, site: str) -> dict[str, dict[str, str]]:
    """name -> labels of tlsbridge's secrets for `site`."""
    return {s.name: dict(s.attrs["Spec"].get("Labels") or {})
            for s in client.secrets.list(filters={"label": f"{SITE_LABEL}={site}"})}


def service_secret_names(client: Any, service: str) -> list[str]:
    spec = client.api.inspect_service(service)["Spec"]
    return sorted(s["SecretName"] for s in spec["TaskTemplate"]["ContainerSpec"].get("Secrets") or ())


def version(client: Any, service: str) -> int:
    return int(client.api.inspect_service(service)["Version"]["Index"])


def update_started(client: Any, service: str) -> str:
    return str((client.api.inspect_service(service).get("UpdateStatus") or {}).get("StartedAt", ""))


def wait_converged(client: Any, service: str, timeout: float = 60, after: str | None = None) -> str:
    """Until the service's last update is over (with `after`: an update that started after the
    one whose StartedAt that is); returns its UpdateStatus state ("" if none)."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.api.inspect_service(service).get("UpdateStatus") or {}
        state = str(status.get("State", ""))
        if after is not None and str(status.get("StartedAt", "")) == after:
            state = "not started"
        if state in ("", "completed", "rollback_completed", "paused", "rollback_paused"):
            running = [t for t in client.api.tasks(filters={"service": service})
                       if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
            if running:
                return state
        assert time.monotonic() < deadline, f"service {service} did not converge: {status}"
        time.sleep(0.2)


def serves(host: str, port: int, sni: str, cert_pem: bytes, times: int = 5, wait: float = 15) -> bool:
    """Whether `times` fresh connections in a row get the leaf of `cert_pem` (retrying while
    nothing answers, up to `wait` seconds)."""
    want = parse_pem(cert_pem).fingerprint
    deadline = time.monotonic() + wait
    seen = 0
    while seen < times:
        try:
            der = served_leaf(host, port, sni, timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
            continue
        if fingerprint(der) != want:
            return False
        seen += 1
    return True


def remove_all(client: Any, services: list[str], configs: list[str], sites: list[str],
               networks: list[str]) -> None:
    """Remove what a test created (services first: secrets in use cannot go)."""
    for name in services:
        with contextlib.suppress(Exception):
            client.api.remove_service(name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
            client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={n}"})
            for n in services):
        time.sleep(0.2)
    for site in sites:
        for s in client.secrets.list(filters={"label": f"{SITE_LABEL}={site}"}):
            with contextlib.suppress(Exception):
                s.remove()
    for name in configs:
        with contextlib.suppress(Exception):
            client.configs.get(name).remove()
    for name in networks:
        with contextlib.suppress(Exception):
            client.networks.get(name).remove()


def create_config(client: Any, name: str, data: str | bytes, made: list[str]) -> Any:
    """A Swarm config (recorded in `made` for cleanup)."""
    cfg = client.configs.create(name=name, data=data.encode() if isinstance(data, str) else data)
    made.append(name)
    return cfg


def config_refs(client: Any, files: Mapping[str, str], prefix: str, made: list[str]) -> list[Any]:
    """ConfigReferences for nginx snippets (file name -> text) at /etc/nginx/conf.d/<file>."""
    from docker.types import ConfigReference

    refs = []
    for i, (file, text) in enumerate(sorted(files.items())):
        cfg = create_config(client, f"{prefix}-{i}", text, made)
        refs.append(ConfigReference(cfg.id, cfg.name, f"/etc/nginx/conf.d/{file}", mode=0o444))
    return refs


class Forwarder:
    """Forward TCP connections from (listen_host, port) to `target`, in threads: how a Swarm
    task reaches a test server that listens on the host's 127.0.0.1 only."""

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen_host, 0))
        self._sock.listen(32)
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
