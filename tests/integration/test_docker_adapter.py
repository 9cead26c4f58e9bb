"""The Docker adapter against the real engine: `doctor`, the event stream (for `run`), tcp + mutual TLS."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from nginxbox import NginxBox
from tbenv import TLSBRIDGE

from tlsbridge.adapters.docker import DockerAdapter, DockerEvent
from tlsbridge.config import DockerConfig
from tlsbridge.errors import DockerError


def doctor(cfg: Path, *extra: str) -> tuple[int, list[str]]:
    import subprocess

    proc = subprocess.run([TLSBRIDGE, "-c", str(cfg), "doctor", *extra], capture_output=True, text=True,
                          timeout=60)
    assert not proc.stderr or "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def test_doctor_names_stale_mounts_missing_targets_and_unreachable_docker(
        tmp_path: Path, docker_engine: Any, nginx_image: str) -> None:
    publish, live = tmp_path / "certs", tmp_path / "letsencrypt" / "live" / "shop"
    (publish / "shop").mkdir(parents=True)
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_text("x")
    box = NginxBox(docker_engine, nginx_image)
    try:
        def create(name: str, volumes: dict[str, dict[str, str]], **labels: str) -> Any:
            c = docker_engine.containers.create(nginx_image, name=f"{box.prefix}-{name}", volumes=volumes,
                                                labels=labels)
            box.containers.append(c)
            return c

        good = create("good", {str(publish): {"bind": "/etc/tlsbridge/certs", "mode": "ro"}})
        single = create("single", {str(live / "fullchain.pem"): {"bind": "/etc/ssl/site.pem", "mode": "ro"}},
                        **{"tlsbridge.site": "shop"})
        dangling = create("live", {str(live): {"bind": "/etc/ssl/live", "mode": "ro"}})
        cfg = tmp_path / "tlsbridge.yaml"
        doc = {"certbot": {"config_dir": str(tmp_path / "letsencrypt")},
               "challenge": {"method": "standalone"},
               "publish": {"dir": str(publish)}, "state": {"dir": str(tmp_path / "state")},
               "sites": {"shop": {"domains": ["shop.example.com"],
                                  "reload": [{"container": good.name}, {"container": dangling.name}]},
                         "gone": {"domains": ["gone.example.com"],
                                  "reload": [{"container": f"{box.prefix}-missing"}]}}}
        cfg.write_text(yaml.safe_dump(doc))
        code, lines = doctor(cfg)
        assert code == 1
        text = "\n".join(lines)
        assert f"ERROR site=gone: container {box.prefix}-missing (reload[0]) does not exist" in text
        assert (f"ERROR site=shop: container {single.name} bind-mounts the single file {live}/fullchain.pem "
                "at /etc/ssl/site.pem: it goes stale after renewal") in text
        assert f"ERROR site=shop: container {dangling.name} mounts certbot's {live}: its files are symlinks" in text
        assert f"does not mount the published folder {publish}/shop" in text
        # The well-mounted one is only reported as not running (created, never started).
        assert [line for line in lines if good.name + " " in line] == [
            f"WARNING site=shop: container {good.name} is not running (Created). Fix: tlsbridge renew starts "
            f"it (before asking the CA when it answers the webroot challenge); if it keeps exiting see "
            f"docker logs {good.name}"]
        assert all(" Fix: " in line for line in lines)

        doc["docker"] = {"host": "unix:///nonexistent/docker.sock", "timeout": "2s"}
        cfg.write_text(yaml.safe_dump(doc))
        code, lines = doctor(cfg)
        assert code == 1
        assert lines[0].startswith("ERROR site=-: Docker is not reachable at unix:///nonexistent/docker.sock")
    finally:
        box.close()


def test_events_stream_reports_a_container_start(docker_engine: Any, nginx_image: str) -> None:
    adapter = DockerAdapter(DockerConfig())
    box = NginxBox(docker_engine, nginx_image)
    seen: list[DockerEvent] = []
    stream = adapter.events({"type": "container", "event": ["start"], "label": [f"tbdeliver.box={box.prefix}"]})

    def consume() -> None:
        for event in stream:
            seen.append(event)
            return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        c = docker_engine.containers.run(nginx_image, detach=True, name=f"{box.prefix}-ev",
                                         labels={"tbdeliver.box": box.prefix}, network=box.network.name)
        box.containers.append(c)
        reader.join(timeout=10)
        assert seen and seen[0].action == "start" and seen[0].id == c.id and seen[0].name == c.name
        assert seen[0].attributes["tbdeliver.box"] == box.prefix
    finally:
        stream.close()
        adapter.close()
        box.close()


class _MutualTlsProxy:
    """dockerd's unix socket behind a TLS listener that requires a client certificate from `ca`
    (what `dockerd --tlsverify` on :2376 does), so the adapter is tested over real mutual TLS."""

    def __init__(self, directory: Path) -> None:
        import socket
        import ssl

        from servers import free_port

        from tlsbridge.daemon_tls.pki import Names, make_ca, make_client_cert, make_server_cert

        now = datetime.now(UTC)
        ca = make_ca(now)
        server = make_server_cert(ca, Names.of([], ["127.0.0.1"]), now)
        client = make_client_cert(ca, "tlsbridge", now)
        for name, data in {"ca.pem": ca.cert_pem, "cert.pem": client.cert_pem, "key.pem": client.key_pem,
                           "server.pem": server.cert_pem, "server-key.pem": server.key_pem}.items():
            (directory / name).write_bytes(data)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
        self.ctx.load_verify_locations(directory / "ca.pem")
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.handshakes_refused = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        import socket
        import ssl

        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                tls = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshakes_refused += 1
                raw.close()
                continue
            engine = socket.socket(socket.AF_UNIX)
            engine.connect("/var/run/docker.sock")
            for a, b in ((tls, engine), (engine, tls)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.listener.close()


def test_docker_host_over_tcp_with_mutual_tls_from_the_environment(tmp_path: Path, docker_engine: Any) -> None:
    proxy = _MutualTlsProxy(tmp_path)
    host = f"tcp://127.0.0.1:{proxy.port}"
    try:
        env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
        adapter = DockerAdapter(DockerConfig(host=host, timeout=timedelta(seconds=5)), environ=env)
        names = {c.name for c in adapter.containers()}
        assert names == {c.name for c in docker_engine.containers.list(all=True)}
        adapter.close()

        # Without a client certificate the engine (here: its TLS front) refuses us: a DockerError.
        bare = DockerAdapter(DockerConfig(host=host, timeout=timedelta(seconds=5)),
                             environ={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "none")})
        with pytest.raises(DockerError, match=f"the Docker engine at {host} is not reachable"):
            bare.containers()
    finally:
        proxy.close()
