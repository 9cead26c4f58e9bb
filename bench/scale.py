#!/usr/bin/env python3
"""Benchmark: tlsbridge at 200, 1,000 and 2,000 sites, side by side with certbot (issue 16).

    .venv/bin/python bench/scale.py [--n 200,1000,2000] [--rounds 5] [--passes 12] [--gets 15]
                                    [--rebuild] [--no-readme]

Per N, one run:

1. Tree (cached in bench/out/scale-N/, rebuilt when the lineages near their renewal or with
   --rebuild): N certbot lineages `site0000`.. made directly with `cryptography` (a throw-away CA,
   ECDSA P-256 leaves valid 90 days, issued 10 days ago), in certbot's layout: `archive/<site>/
   {cert,chain,fullchain,privkey}1.pem`, `live/<site>/*.pem` as relative links into archive,
   `renewal/<site>.conf` with the fields certbot reads (version, archive_dir, the four paths,
   [renewalparams] account, authenticator, server, key_type). Their `server` is an ACME directory
   nobody listens on (127.0.0.1:9). The same N sites in `tlsbridge.yaml`, published with
   tlsbridge's Publisher, and a state store as a real pass leaves it (ARI window cached).
2. Set-up checks: `certbot renew --no-random-sleep-on-renew` accepts every lineage and says none
   is due (its ARI request fails against the dead directory, so it caches a 6 h retry in each
   renewal conf, as it does in production, and falls back to the lifetime rule); `tlsbridge
   renew` says NotDue for every site.
3. Whole processes, `--rounds` interleaved rounds (shuffled order): `tlsbridge renew`, `certbot
   renew --no-random-sleep-on-renew`, `tlsbridge status --json`, `python -c pass`.
4. In-process: `Reconciler.run_pass()` and the sidecar's after-pass refresh (`status.collect`).
5. The sidecar: `tlsbridge run` on the tree with an accelerated clock (TLSBRIDGE_FAKE_RATE=60,
   check_interval 1m, no jitter: a full pass every wall second; nothing becomes due in the
   minutes of clock that elapse). Start to /readyz; pass durations from its JSON log (`--passes` passes after the
   first), then `--gets` timed GETs of `/` and `/metrics`, then VmRSS from /proc/PID/status.

Medians throughout. Writes bench/out/scale.json, the table into bench/README.md (between the
`scale:begin/end` markers; --no-readme skips it) and the plot bench/scale.png (needs matplotlib:
`pip install -e '.[bench]'`). Goals at 2,000 sites: renew <= 1/10 of certbot renew, sidecar pass
< 60 ms, sidecar RSS < 60 MiB, `/` and `/metrics` < 100 ms each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
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
BIN = ROOT / ".venv" / "bin"
PYTHON, CERTBOT, TLSBRIDGE = str(BIN / "python"), str(BIN / "certbot"), str(BIN / "tlsbridge")
DEAD_DIRECTORY = "https://127.0.0.1:9/dir"  # nothing listens: neither tool may need the CA
ACCOUNT = "0" * 32
TREE_FORMAT = 1
MIB = 1024 * 1024
README = ROOT / "bench" / "README.md"
PNG = ROOT / "bench" / "scale.png"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def name_of(i: int) -> str:
    return f"site{i:04d}"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------------------------
# the tree


def build_tree(root: Path, n: int) -> Path:
    """N certbot lineages and the matching tlsbridge config, publish folder and state store."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cfg_path = root / "tlsbridge.yaml"
    meta = root / "meta.json"
    now = datetime.now(UTC)
    try:
        m = json.loads(meta.read_text())
        if m["format"] == TREE_FORMAT and m["n"] == n and datetime.fromisoformat(m["fresh_until"]) > now:
            return cfg_path
    except (OSError, ValueError, KeyError):
        pass
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    conf_dir = root / "certbot" / "config"
    for sub in ("live", "archive", "renewal", "renewal-hooks/pre", "renewal-hooks/deploy",
                "renewal-hooks/post"):
        (conf_dir / sub).mkdir(parents=True)
    (root / "certbot" / "work").mkdir()
    (root / "certbot" / "logs").mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench scale CA")])
    ca_pem = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    base = str(root / "certbot")
    sites_yaml = []
    for i in range(n):
        name = name_of(i)
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
        pem = cert.public_bytes(serialization.Encoding.PEM)
        files = {"cert": pem, "chain": ca_pem, "fullchain": pem + ca_pem,
                 "privkey": key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())}
        archive, live = conf_dir / "archive" / name, conf_dir / "live" / name
        archive.mkdir(mode=0o700)
        live.mkdir()
        for kind, data in files.items():
            (archive / f"{kind}1.pem").write_bytes(data)
            os.symlink(f"../../archive/{name}/{kind}1.pem", live / f"{kind}.pem")
        (archive / "privkey1.pem").chmod(0o600)
        (conf_dir / "renewal" / f"{name}.conf").write_text(
            "# renew_before_expiry = 30 days\n"
            "version = 5.8.0\n"
            f"archive_dir = {base}/config/archive/{name}\n"
            f"cert = {base}/config/live/{name}/cert.pem\n"
            f"privkey = {base}/config/live/{name}/privkey.pem\n"
            f"chain = {base}/config/live/{name}/chain.pem\n"
            f"fullchain = {base}/config/live/{name}/fullchain.pem\n\n"
            "# Options used in the renewal process\n"
            "[renewalparams]\n"
            f"account = {ACCOUNT}\n"
            "authenticator = standalone\n"
            f"server = {DEAD_DIRECTORY}\n"
            "key_type = ecdsa\n")
        sites_yaml += [f"  {name}:", f"    domains: [{domain}]"]
    cfg_path.write_text("\n".join([
        "# Generated by bench/scale.py",
        "acme:", f"  directory: {DEAD_DIRECTORY}", "  key_type: ecdsa",
        "certbot:", f"  config_dir: {conf_dir}", f"  work_dir: {base}/work", f"  logs_dir: {base}/logs",
        "challenge:", "  method: standalone", "  http_port: 5002",
        "publish:", f"  dir: {root / 'publish'}",
        "state:", f"  dir: {root / 'state'}",
        "renewal:", "  check_interval: 1m", "  jitter: 0s",  # only `run` reads these
        "docker:", f"  host: unix://{root}/no-docker.sock",  # no engine: nothing else's containers
        "sites:", *sites_yaml]) + "\n")
    fill_state(cfg_path, now)
    meta.write_text(json.dumps({"format": TREE_FORMAT, "n": n, "built": now.isoformat(),
                                "build_seconds": round(time.perf_counter() - t0, 1),
                                # the lifetime rule (renew at 2/3) makes them due after day 60
                                "fresh_until": (now + timedelta(days=40)).isoformat()}) + "\n")
    log(f"built {n} lineages in {time.perf_counter() - t0:.1f} s")
    return cfg_path


def fill_state(cfg_path: Path, now: datetime) -> None:
    """Publish every site and leave the state store as a real pass does (ARI cached 25 days)."""
    from tlsbridge import config
    from tlsbridge.model import AriWindow, SiteState
    from tlsbridge.policy import site_hash
    from tlsbridge.wiring import build_ports

    cfg = config.load(cfg_path)
    ports = build_ports(cfg)
    certstore, publisher, store = ports.certs, ports.publisher, ports.store
    rng = random.Random(1)
    for site in cfg.sites.values():
        files, observed = certstore.files(site.name), certstore.current_cert(site.name)
        assert files is not None and observed is not None
        publisher.publish(site.name, files)
        start = observed.not_after - timedelta(days=30)
        window = AriWindow(start, start + timedelta(days=2), retry_after=now + timedelta(days=25))
        store.save(site.name, SiteState(
            chosen_renewal=start + timedelta(hours=48 * rng.random()), chosen_for=observed.fingerprint,
            ari=window, ari_for=observed.fingerprint, config_hash=site_hash(cfg, site),
            delivered=observed.fingerprint))
    store.close()


def certbot_argv(root: Path) -> list[str]:
    base = root / "certbot"
    return [CERTBOT, "renew", "--config-dir", str(base / "config"), "--work-dir", str(base / "work"),
            "--logs-dir", str(base / "logs"), "--no-random-sleep-on-renew"]


def check_tree(root: Path, cfg: Path, n: int, env: dict[str, str]) -> None:
    """certbot accepts every lineage and finds none due; tlsbridge finds every site NotDue."""
    proc = subprocess.run(certbot_argv(root), env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    skipped = set(re.findall(r"/live/(site\d{4})/fullchain\.pem expires on \S+ \(skipped\)", out))
    want = {name_of(i) for i in range(n)}
    if proc.returncode != 0 or skipped != want or "No renewals were attempted" not in out:
        raise RuntimeError(f"certbot renew: exit {proc.returncode}, {len(skipped)}/{n} not due:\n"
                           f"{out[-3000:]}")
    proc = subprocess.run([TLSBRIDGE, "-c", str(cfg), "renew"], env=env, capture_output=True, text=True,
                          timeout=300)
    not_due = set(re.findall(r"^(site\d{4}): NotDue: ", proc.stdout, re.MULTILINE))
    if proc.returncode != 0 or not_due != want:
        raise RuntimeError(f"tlsbridge renew: exit {proc.returncode}, {len(not_due)}/{n} NotDue:\n"
                           f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    log(f"set-up ok: certbot renew skips all {n} (not due), tlsbridge renew: {n} NotDue")


# ----------------------------------------------------------------------------------------------
# measurements


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=900)
    return time.perf_counter() - t0, proc.returncode


def processes(root: Path, cfg: Path, rounds: int, env: dict[str, str]) -> dict[str, float]:
    cmds = {"tlsbridge_renew": [TLSBRIDGE, "-c", str(cfg), "renew"],
            "certbot_renew": certbot_argv(root),
            "status_json": [TLSBRIDGE, "-c", str(cfg), "status", "--json"],
            "python_floor": [PYTHON, "-c", "pass"]}
    for argv in cmds.values():  # warm-up: bytecode caches, page cache
        timed(argv, env)
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    rng = random.Random(1)
    for _ in range(rounds):
        order = list(cmds)
        rng.shuffle(order)
        for k in order:
            wall, rc = timed(cmds[k], env)
            if rc != 0:
                raise RuntimeError(f"{' '.join(cmds[k])} exited {rc}")
            samples[k].append(wall * 1000)
    return {k: round(med(v), 1) for k, v in samples.items()}


def in_process(cfg_path: Path, rounds: int) -> dict[str, float]:
    """run_pass and the after-pass refresh in a fresh interpreter (a clean MEMO): CPU time,
    which other processes on the machine inflate less than wall time."""
    code = f"""
import json, sys, time, statistics
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from tlsbridge import config
from tlsbridge.clock import SystemClock
from tlsbridge.status import collect
from tlsbridge.wiring import build_reconciler
cfg = config.load(Path({str(cfg_path)!r})); clock = SystemClock(); rec = build_reconciler(cfg, clock)
rec.run_pass(); collect(cfg, rec.ports, clock.now())
p, r = [], []
for _ in range({rounds}):
    t = time.process_time(); rec.run_pass(); p.append((time.process_time() - t) * 1000)
    t = time.process_time(); collect(cfg, rec.ports, clock.now()); r.append((time.process_time() - t) * 1000)
print(json.dumps({{"run_pass_ms": statistics.median(p), "refresh_ms": statistics.median(r)}}))
"""
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"in-process measurement failed: {out.stderr[-2000:]}")
    return {k: round(v, 1) for k, v in json.loads(out.stdout).items()}


def get(url: str) -> tuple[int, int]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status), len(resp.read())
    except OSError:
        return 0, 0


def vmrss(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


def sidecar(cfg: Path, passes: int, gets: int, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logf = OUT / f"scale-run-{cfg.parent.name}.log"
    renv = {**env, "TLSBRIDGE_FAKE_RATE": "60"}  # check_interval 1m -> a pass every wall second
    t0 = time.perf_counter()
    with open(logf, "wb") as out:
        proc = subprocess.Popen([TLSBRIDGE, "-c", str(cfg), "run", "--listen", f"127.0.0.1:{port}",
                                 "--log-format", "json"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=renv)
    try:
        while get(base + "/readyz")[0] != 200:
            if time.perf_counter() - t0 > 120 or proc.poll() is not None:
                raise RuntimeError(f"the sidecar did not get ready; log: {logf}")
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0
        deadline = time.monotonic() + 120 + passes * 5
        durations: list[float] = []
        while len(durations) < passes + 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the sidecar did not run {passes + 1} passes; log: {logf}")
            time.sleep(0.2)
            durations = pass_durations(logf)
        steady = durations[1:passes + 1]  # the first pass loads the memo and warms every cache
        rss_passes = vmrss(proc.pid)
        page, metrics, sizes = [], [], {}
        for _ in range(gets):
            for path, sink in (("/", page), ("/metrics", metrics)):
                t0 = time.perf_counter()
                status, size = get(base + path)
                sink.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status}; log: {logf}")
                sizes[path] = size
        time.sleep(2)
        rss_end = vmrss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"ready_s": round(ready_s, 2), "pass_ms": round(med(steady), 1), "pass_min_ms": min(steady), "first_pass_ms": durations[0],
            "pass_samples_ms": steady, "page_ms": round(med(page), 1),
            "metrics_ms": round(med(metrics), 1), "page_bytes": sizes["/"],
            "metrics_bytes": sizes["/metrics"], "rss_after_passes_mib": round(rss_passes, 1),
            "rss_mib": round(max(rss_passes, rss_end), 1)}


_PASS = re.compile(r"run: pass .* over \d+ site\(s\) in ([\d.]+) ms")


def pass_durations(logf: Path) -> list[float]:
    out = []
    for line in logf.read_text(errors="replace").splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        m = _PASS.search(msg)
        if m:
            out.append(float(m.group(1)))
    return out


# ----------------------------------------------------------------------------------------------
# output

ROWS = [  # key, label, goal at the largest N
    ("tlsbridge_renew", "`tlsbridge renew`, nothing due (ms)", None),
    ("certbot_renew", "`certbot renew --no-random-sleep-on-renew` (ms)", None),
    ("ratio", "certbot / tlsbridge", ">= 10"),
    ("status_json", "`tlsbridge status --json` (ms)", None),
    ("python_floor", "`python -c pass` (ms)", None),
    ("pass_ms", "sidecar pass, nothing due (ms, from its log)", "< 60"),
    ("pass_min_ms", "sidecar pass, the fastest of the run (ms)", None),
    ("run_pass_ms", "in-process `run_pass`, CPU time (ms)", None),
    ("refresh_ms", "in-process after-pass refresh, CPU time (ms)", None),
    ("page_ms", "GET `/` status page (ms)", "< 100"),
    ("metrics_ms", "GET `/metrics` (ms)", "< 100"),
    ("page_kib", "status page size (KiB)", None),
    ("rss_mib", "sidecar VmRSS after passes and GETs (MiB)", "< 60"),
    ("ready_s", "sidecar start to `/readyz` 200 (s; first pass on a warm memo)", None),
]


def flat(r: dict[str, Any]) -> dict[str, float]:
    f = {**r["processes"], **r["in_process"], **{k: v for k, v in r["sidecar"].items()
                                                  if isinstance(v, int | float)}}
    f["ratio"] = round(f["certbot_renew"] / f["tlsbridge_renew"], 1)
    f["page_kib"] = round(r["sidecar"]["page_bytes"] / 1024, 1)
    return f


def table(results: list[dict[str, Any]], when: str, load: tuple[float, float, float]) -> str:
    ns = [r["n"] for r in results]
    flats = [flat(r) for r in results]
    lines = ["| N sites | " + " | ".join(f"{n:,}" for n in ns) + " | goal at the largest N |",
             "|---|" + "---:|" * len(ns) + "---|"]
    for key, label, goal in ROWS:
        cells = [f"{f[key]:g}" for f in flats]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal or ''} |")
    lines += ["", f"Measured {when} on 2 cores, load average at the start {load[0]:.1f} / {load[1]:.1f} / "
              f"{load[2]:.1f} (1/5/15 min); medians. Plot: [scale.png](scale.png)."]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    flats = [flat(r) for r in results]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [2, 1]})
    for key, label, style in (("certbot_renew", "certbot renew", "o-"),
                              ("tlsbridge_renew", "tlsbridge renew", "s-"),
                              ("status_json", "tlsbridge status --json", "^-"),
                              ("pass_ms", "sidecar pass (nothing due)", "D-"),
                              ("page_ms", "GET / (status page)", "v-"),
                              ("metrics_ms", "GET /metrics", "x-")):
        ax.plot(ns, [f[key] for f in flats], style, label=label)
    ax.axhline(60, color="grey", ls=":", lw=1)
    ax.axhline(100, color="grey", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="sites", ylabel="milliseconds (median)",
           title="Time per operation (goals: pass < 60 ms dotted, pages < 100 ms dashed)")
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_xticks([], minor=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    bx.plot(ns, [f["rss_mib"] for f in flats], "o-", label="sidecar VmRSS")
    bx.axhline(60, color="grey", ls="--", lw=1, label="goal at 2,000 (60 MiB)")
    bx.set(xscale="log", xlabel="sites", ylabel="MiB", title="Sidecar memory", ylim=(0, None))
    bx.set_xticks(ns, [f"{n:,}" for n in ns])
    bx.set_xticks([], minor=True)
    bx.grid(True, alpha=0.3)
    bx.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(PNG, dpi=100)
    plt.close(fig)


def write_readme(text: str) -> None:
    doc = README.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.DOTALL)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", default="200,1000,2000", help="comma-separated site counts")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the whole-process commands")
    ap.add_argument("--passes", type=int, default=12, help="sidecar passes measured (after the first)")
    ap.add_argument("--gets", type=int, default=15, help="timed GETs of / and of /metrics")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached trees")
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md and the plot")
    ap.add_argument("--replot", action="store_true",
                    help="only rewrite the table and the plot from bench/out/scale.json")
    args = ap.parse_args()
    if args.replot:
        doc = json.loads((OUT / "scale.json").read_text())
        write_readme(table(doc["results"], doc["when"], tuple(doc["loadavg_start"])))  # type: ignore[arg-type]
        plot(doc["results"])
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a real install has .pyc files: cache them
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    load = os.getloadavg()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for n in (int(x) for x in args.n.split(",")):
        root = OUT / f"scale-{n}"
        if args.rebuild and root.exists():
            shutil.rmtree(root)
        cfg = build_tree(root, n)
        check_tree(root, cfg, n, env)
        r: dict[str, Any] = {"n": n, "processes": processes(root, cfg, args.rounds, env)}
        log(f"N={n} processes: {r['processes']}")
        r["in_process"] = in_process(cfg, 15)
        log(f"N={n} in-process: {r['in_process']}")
        r["sidecar"] = sidecar(cfg, args.passes, args.gets, env)
        log(f"N={n} sidecar: { {k: v for k, v in r['sidecar'].items() if k != 'pass_samples_ms'} }")
        results.append(r)
    last = flat(results[-1])
    goals = {"renew_ratio_ge_10": last["ratio"] >= 10, "pass_lt_60ms": last["pass_ms"] < 60,
             "rss_lt_60mib": last["rss_mib"] < 60, "page_lt_100ms": last["page_ms"] < 100,
             "metrics_lt_100ms": last["metrics_ms"] < 100}
    doc = {"when": when, "loadavg_start": load, "loadavg_end": os.getloadavg(), "results": results,
           "goals_at_largest_n": goals}
    (OUT / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = table(results, when, load)
    print(text)
    print(json.dumps(goals))
    if not args.no_readme:
        write_readme(text)
        plot(results)
        log(f"wrote {README} and {PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
