#!/usr/bin/env python3
"""Benchmark: publication -> new certificate verified as served by nginx in Docker (issue 3, item 9).

    .venv/bin/python bench/deliver.py [--renewals 20] [--clients 2] [--modes sighup,exec]

Starts one nginx container (the local test image) on its own bridge network, serving one site
from a published folder mounted read-only. Each renewal publishes a fresh certificate made with
`cryptography` (a local CA, a new P-256 key: no ACME round trip), then runs the real
`DockerDeliverer.deliver` (nginx -t, reload, verification by fresh TLS connections until the new
leaf is served and old workers are gone). Measured per renewal: publish, deliver and the total
from the start of publication to verified-served.

Meanwhile `--clients` threads drive HTTPS as a new-connection load generator: every request is a
new TCP + TLS connection, `GET /` with `Connection: close`; any exception or non-200 answer is a
failed request.

Modes: `sighup` (the deliverer's choice when PID 1 is nginx's master: SIGHUP through the API)
and `exec` (`nginx -s reload` through docker exec, for comparison).

Results: a table on stdout and bench/out/deliver.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import secrets
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from tlsbridge import config  # noqa: E402
from tlsbridge.adapters.publish import CertFiles, Publisher  # noqa: E402
from tlsbridge.adapters.tlsprobe import served_leaf  # noqa: E402
from tlsbridge.certinfo import parse_pem  # noqa: E402
from tlsbridge.delivery.containers import DockerDeliverer  # noqa: E402
from tlsbridge.delivery.verify import fingerprint  # noqa: E402
from tlsbridge.targets import ContainerInfo  # noqa: E402

SITE, DOMAIN = "bench", "bench.example.com"
OUT = ROOT / "bench" / "out" / "deliver.json"
NGINX_CONF = f"""server {{
    listen 443 ssl;
    server_name {DOMAIN};
    ssl_certificate /etc/tlsbridge/certs/{SITE}/fullchain.pem;
    ssl_certificate_key /etc/tlsbridge/certs/{SITE}/privkey.pem;
    location / {{ return 200 "ok\\n"; }}
}}
"""


class LocalCA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsbridge bench CA")])

    def issue(self) -> CertFiles:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=7))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
                .sign(self.key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return CertFiles(fullchain=pem, privkey=key_pem, chain=b"", cert=pem)


class ExecReload(DockerDeliverer):
    """The comparison mode: `nginx -s reload` through docker exec instead of SIGHUP."""

    def _reload(self, c: ContainerInfo) -> str:
        code, out = self.docker.exec(c.id, ["nginx", "-s", "reload"], c.name)
        assert code == 0, out
        return "nginx -t passed; nginx -s reload"


class Load:
    """New-connection HTTPS clients in threads; counts requests and failures."""

    def __init__(self, host: str, clients: int) -> None:
        self.host, self.clients = host, clients
        self.ok = self.failed = 0
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(clients)]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def request(self) -> None:
        with (socket.create_connection((self.host, 443), timeout=5) as raw,
              self.ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"answer {data[:40]!r}")

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.request()
                with self.lock:
                    self.ok += 1
            except Exception as exc:  # every failure counts, whatever it is
                with self.lock:
                    self.failed += 1
                    key = type(exc).__name__
                    self.errors[key] = self.errors.get(key, 0) + 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_mode(mode: str, renewals: int, clients: int, client: Any, image: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tbdeliver-bench-"))
    prefix = f"tbdeliver-bench-{secrets.token_hex(3)}"
    network = client.networks.create(prefix, driver="bridge")
    container = None
    try:
        conf, certs = work / "conf.d", work / "certs"
        conf.mkdir()
        certs.mkdir()
        (conf / "site.conf").write_text(NGINX_CONF)
        ca = LocalCA()
        publisher = Publisher(certs)
        publisher.publish(SITE, ca.issue())
        container = client.containers.run(
            image, detach=True, name=f"{prefix}-nginx", network=network.name,
            volumes={str(conf): {"bind": "/etc/nginx/conf.d", "mode": "ro"},
                     str(certs): {"bind": "/etc/tlsbridge/certs", "mode": "ro"}})
        cfg = config.parse(f"""
publish: {{dir: {certs}}}
state: {{dir: {work / 'state'}}}
sites:
  {SITE}:
    domains: [{DOMAIN}]
    reload: [{{container: {container.name}}}]
""", base=work)
        site = cfg.sites[SITE]
        deliverer = (ExecReload if mode == "exec" else DockerDeliverer)(cfg)
        assert not deliverer.deliver([(site, parse_pem(publisher.read(SITE) or b""))]).failed  # warm: import, connect
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        rows: list[dict[str, float]] = []
        with Load(ip, clients) as load:
            time.sleep(0.5)
            for _ in range(renewals):
                files = ca.issue()
                cert = parse_pem(files.cert)
                t0 = time.perf_counter()
                publisher.publish(SITE, files)
                t1 = time.perf_counter()
                errors = deliverer.deliver([(site, cert)]).failed
                t2 = time.perf_counter()
                if errors:
                    raise SystemExit(f"delivery failed: {errors}")
                # After "verified": do fresh connections ever still get the old certificate?
                stale = sum(fingerprint(served_leaf(ip, 443, DOMAIN)) != cert.fingerprint for _ in range(10))
                rows.append({"publish_ms": (t1 - t0) * 1000, "deliver_ms": (t2 - t1) * 1000,
                             "total_ms": (t2 - t0) * 1000, "stale_after_verified": stale})
                time.sleep(0.3)
            time.sleep(0.5)
        hups = int(container.logs().count(b"signal 1 (SIGHUP) received"))
        totals = [r["total_ms"] for r in rows]
        return {
            "mode": mode, "renewals": renewals,
            "verified_served_ms": {"p50": statistics.median(totals), "p95": pct(totals, 95),
                                   "min": min(totals), "max": max(totals)},
            "publish_ms_p50": statistics.median(r["publish_ms"] for r in rows),
            "deliver_ms_p50": statistics.median(r["deliver_ms"] for r in rows),
            "reloads_seen_by_nginx": hups,
            "stale_probes_after_verified": sum(int(r["stale_after_verified"]) for r in rows),
            "load": {"clients": clients, "requests": load.ok + load.failed, "failed": load.failed,
                     "errors": load.errors},
            "rows": rows,
        }
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        with contextlib.suppress(Exception):
            network.remove()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--renewals", type=int, default=20)
    ap.add_argument("--clients", type=int, default=2, help="new-connection HTTPS client threads")
    ap.add_argument("--modes", default="sighup,exec", help="comma-separated: sighup, exec")
    ap.add_argument("--json", type=Path, default=OUT)
    args = ap.parse_args()

    import docker
    from servers import ensure_docker_engine, ensure_nginx_image

    ensure_docker_engine()
    image = ensure_nginx_image()
    client = docker.from_env()
    results = [run_mode(m.strip(), args.renewals, args.clients, client, image) for m in args.modes.split(",")]
    client.close()

    print(f"{'mode':<8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'deliver p50':>12} "
          f"{'reloads':>8} {'requests':>9} {'failed':>7} {'stale':>6}")
    for r in results:
        v = r["verified_served_ms"]
        print(f"{r['mode']:<8} {v['p50']:>8.0f} {v['p95']:>8.0f} {v['max']:>8.0f} {r['deliver_ms_p50']:>12.0f} "
              f"{r['reloads_seen_by_nginx']:>8} {r['load']['requests']:>9} {r['load']['failed']:>7} "
              f"{r['stale_probes_after_verified']:>6}")
    doc = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "host": platform.node(),
           "python": platform.python_version(), "goal": "verified-served p50 < 300 ms, 0 failed requests",
           "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {args.json}")
    ok = all(r["verified_served_ms"]["p50"] < 300 and r["load"]["failed"] == 0 for r in results
             if r["mode"] == "sighup")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
