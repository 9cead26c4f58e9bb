#!/usr/bin/env python3
"""Benchmark: the footprint of the `tlsbridge run` sidecar (issue 5).

    .venv/bin/python bench/run_footprint.py [--n 200] [--rounds 30] [--idle 5] [--runs 3]
                                            [--image tlsbridge-test/sidecar:latest]

1. Builds N sites quickly, without a CA: a throw-away CA made with `cryptography` signs N ECDSA
   certificates (90 days, issued 10 days ago), written in certbot's `live/<site>/` layout,
   published with tlsbridge's Publisher, and the state store pre-filled as after a real pass
   (an ARI window cached until next month, the chosen renewal moment, the config hash), so a
   pass finds nothing due and contacts nothing. Cached in bench/out/run-footprint-N/.
2. In-process: `Reconciler.run_pass()` over the N sites (nothing due), `--rounds` times after
   one warm-up; also the sidecar's after-pass refresh (status.collect: what feeds the metrics,
   the wake-up jobs and the status page).
3. Whole process: starts `tlsbridge run --listen 127.0.0.1:PORT` on that config and measures
   the time from spawn to the first 200 of /healthz and of /readyz, the RSS after `--idle`
   seconds of idling (VmRSS and PSS), whether the X.509 parser got loaded, and the time SIGTERM
   takes. A first, unmeasured run warms the bytecode cache and writes the certificate memo
   (state/certs-memo.json), as the first start of a real sidecar does. With --image, the same
   in the sidecar container (`docker run` to healthy; RSS of its PID 1; `docker stop`).

Goals: idle RSS < 40 MiB; a pass over 200 nothing-due sites < 15 ms in-process; startup to
healthy < 1 s. Results: printed, and bench/out/run_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.servers import free_port  # noqa: E402

OUT = ROOT / "bench" / "out"
TLSBRIDGE = str(ROOT / ".venv" / "bin" / "tlsbridge")
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_tree(tree: Path, n: int) -> Path:
    """N lineages, published, with a state store as a real pass leaves it. Returns the config."""
    import yaml
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tlsbridge import config
    from tlsbridge.model import AriWindow, SiteState
    from tlsbridge.policy import site_hash
    from tlsbridge.wiring import build_ports

    cfg_path = tree / "tlsbridge.yaml"
    if (tree / "done").exists():
        return cfg_path
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca_pem = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    sites = {}
    for i in range(n):
        name = f"site{i:03d}"
        domain = f"{name}.example.com"
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=10)).not_valid_after(now + timedelta(days=80))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256()))
        live = tree / "certbot" / "live" / name
        live.mkdir(parents=True, exist_ok=True)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        (live / "cert.pem").write_bytes(pem)
        (live / "chain.pem").write_bytes(ca_pem)
        (live / "fullchain.pem").write_bytes(pem + ca_pem)
        (live / "privkey.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (live / "privkey.pem").chmod(0o600)
        sites[name] = {"domains": [domain]}
    doc = {
        "acme": {"directory": "https://127.0.0.1:9/dir"},  # never contacted: nothing is due
        "certbot": {"config_dir": str(tree / "certbot"), "work_dir": str(tree / "work"),
                    "logs_dir": str(tree / "logs")},
        "challenge": {"method": "standalone", "http_port": 5002},
        "publish": {"dir": str(tree / "publish")},
        "state": {"dir": str(tree / "state")},
        "sites": sites,
    }
    cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = config.load(cfg_path)
    ports = build_ports(cfg)
    certstore, publisher, store = ports.certs, ports.publisher, ports.store
    rng = random.Random(1)
    for site in cfg.sites.values():
        files = certstore.files(site.name)
        observed = certstore.current_cert(site.name)
        assert files is not None and observed is not None
        publisher.publish(site.name, files)
        start = observed.not_after - timedelta(days=30)
        window = AriWindow(start, start + timedelta(days=2), retry_after=now + timedelta(days=25))
        chosen = start + timedelta(hours=48 * rng.random())
        store.save(site.name, SiteState(chosen_renewal=chosen, chosen_for=observed.fingerprint,
                                        ari=window, ari_for=observed.fingerprint,
                                        config_hash=site_hash(cfg, site),
                                        delivered=observed.fingerprint))
    store.close()
    (tree / "done").write_text(now.isoformat())
    return cfg_path


def in_process(cfg_path: Path, rounds: int) -> dict[str, Any]:
    from tlsbridge import config
    from tlsbridge.clock import SystemClock
    from tlsbridge.model import Action
    from tlsbridge.status import collect
    from tlsbridge.wiring import build_reconciler

    cfg = config.load(cfg_path)
    clock = SystemClock()
    rec = build_reconciler(cfg, clock)
    first = rec.run_pass()
    busy = [f"{o.site}: {o.plan.decision}" for o in first if not o.ok or o.plan.decision.action is not Action.NONE]
    if busy:
        raise RuntimeError(f"{len(busy)} site(s) not idle, e.g. {busy[0]}")
    passes, refreshes = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        rec.run_pass()
        passes.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        collect(cfg, rec.ports, clock.now())
        refreshes.append((time.perf_counter() - t0) * 1000)
    return {"sites": len(first), "run_pass_ms": stats(passes), "refresh_ms": stats(refreshes)}


def stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median": round(statistics.median(s), 2), "p90": round(s[int(0.9 * (len(s) - 1))], 2),
            "min": round(s[0], 2), "max": round(s[-1], 2)}


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def whole_process(cfg_path: Path, idle: float, env: dict[str, str], image: str | None) -> dict[str, Any]:
    """One `tlsbridge run` (on the host, or in the sidecar image): startup, idle memory, stop."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logf = OUT / "run_footprint.log"
    tree = str(cfg_path.parent)
    if image:  # the same tree at the same path; host network for the port; root for the tree
        argv = ["docker", "run", "-d", "--network", "host", "--user", "0", "-v", f"{tree}:{tree}",
                "-v", "/var/run/docker.sock:/var/run/docker.sock",
                "-e", f"TLSBRIDGE_LISTEN=127.0.0.1:{port}", image, "-c", str(cfg_path), "run"]
    else:
        argv = [TLSBRIDGE, "-c", str(cfg_path), "run", "--listen", f"127.0.0.1:{port}"]
    healthy = ready = None
    cid = ""
    t0 = time.perf_counter()
    with open(logf, "wb") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if image else out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        if image:
            cid = (proc.communicate(timeout=60)[0] or b"").decode().strip()
            pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", cid],
                                     capture_output=True, text=True, check=True).stdout)
        else:
            pid = proc.pid
        while time.perf_counter() - t0 < 30:
            if healthy is None and get(base + "/healthz") == 200:
                healthy = time.perf_counter() - t0
            if healthy is not None and get(base + "/readyz") == 200:
                ready = time.perf_counter() - t0
                break
            time.sleep(0.005)
        else:
            raise RuntimeError(f"tlsbridge run did not get ready; log: {logf}")
        time.sleep(idle)
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(status.split("VmRSS:")[1].split()[0]) * 1024
        threads = int(status.split("Threads:")[1].split()[0])
        pss = int(Path(f"/proc/{pid}/smaps_rollup").read_text().split("Pss:")[1].split()[0]) * 1024
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        docker = "tlsbridge_docker_events_connected 1.0" in metrics
        parser = "cryptography" in Path(f"/proc/{pid}/maps").read_text()
        t1 = time.perf_counter()
        if image:
            subprocess.run(["docker", "stop", "-t", "15", cid], capture_output=True, check=True)
            rc = int(subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", cid],
                                    capture_output=True, text=True, check=True).stdout)
        else:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=15)
        stop = time.perf_counter() - t1
    finally:
        if image and cid:
            logf.write_bytes(subprocess.run(["docker", "logs", cid], capture_output=True).stdout)
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        elif proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"startup_to_healthy_s": round(healthy or -1, 3), "startup_to_ready_s": round(ready or -1, 3),
            "idle_rss_mib": round(rss / MIB, 1), "idle_pss_mib": round(pss / MIB, 1),
            "threads": threads, "docker_events_connected": docker, "x509_parser_loaded": parser,
            "sigterm_to_exit_s": round(stop, 3), "exit_code": rc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idling before reading RSS")
    ap.add_argument("--runs", type=int, default=3, help="whole-process runs (the median is reported)")
    ap.add_argument("--image", help="also measure this sidecar image (e.g. tlsbridge-test/sidecar:latest)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tree = OUT / f"run-footprint-{args.n}"
    t = time.perf_counter()
    cfg_path = build_tree(tree, args.n)
    log(f"tree: {tree} ({time.perf_counter() - t:.1f} s)")
    inproc = in_process(cfg_path, args.rounds)
    log(f"in-process: run_pass {inproc['run_pass_ms']} ms, refresh {inproc['refresh_ms']} ms")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a real install has .pyc files: cache them
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    result_runs: dict[str, Any] = {}
    medians: dict[str, Any] = {}
    for label, image in (("host", None), ("image", args.image)):
        if label == "image" and not image:
            continue
        runs = []
        for i in range(args.runs + 1):
            # the first run is a real first start: no certificate memo yet, so it parses every
            # certificate (and writes the memo); it also warms the bytecode cache
            if not i:
                (cfg_path.parent / "state" / "certs-memo.json").unlink(missing_ok=True)
            r = whole_process(cfg_path, args.idle if i else 1.0, env, image)
            if i:
                runs.append(r)
            log(f"{label} run {i}{' (first start: parses every certificate)' if not i else ''}: {r}")
            if not i:
                result_runs[f"{label}_first_start"] = [r]
        result_runs[label] = runs
        medians[label] = {k: statistics.median(r[k] for r in runs) for k in
                          ("startup_to_healthy_s", "startup_to_ready_s", "idle_rss_mib", "idle_pss_mib",
                           "sigterm_to_exit_s")}
    goals = {
        "idle_rss_under_40_mib": all(m["idle_rss_mib"] < 40 for m in medians.values()),
        "pass_200_under_15_ms": inproc["run_pass_ms"]["median"] < 15 if args.n == 200 else None,
        "healthy_under_1_s": all(m["startup_to_healthy_s"] < 1 for m in medians.values()),
    }
    result = {"n": args.n, "in_process": inproc, "process_runs": result_runs, "process_median": medians,
              "goals": goals, "python": sys.version.split()[0], "when": datetime.now(UTC).isoformat()}
    (OUT / "run_footprint.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"in_process": inproc, "process_median": medians, "goals": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
