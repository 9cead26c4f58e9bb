#!/usr/bin/env python3
"""Benchmark: the sidecar's resident memory after a pass that issued (issue 16).

    .venv/bin/python bench/idle_rss.py [--sites 1,200] [--idle 10] [--runs 3] [--no-trace]

Per site count: a Pebble (tests/integration/servers.py, validation skipped), a config like the
integration tests' (standalone challenge, no Docker engine: `docker.host` points at nothing), and
`tlsbridge run` as a whole process. With 1 site, its first pass issues the certificate through
certbot. With 200, 199 lineages are made with `cryptography` first (bench/scale.py's tree,
published, ARI cached) and the first pass issues the 200th and parses all 200 (no certificate
memo yet: a first start). `--idle` seconds after /readyz (the first pass done), VmRSS and RssAnon
from /proc/PID/status (median of `--runs` starts, each on a fresh tree).

Then, unless --no-trace, one more start under tracemalloc (`python -X tracemalloc=40`, through
this script's --child mode) that dumps, on SIGUSR1 after the idle time: the traced Python heap by
package (each allocation charged to the innermost frame outside importlib, so a module's code
objects count for the module that imported it) and the packages in sys.modules. For each package
loaded, the RSS a fresh interpreter gains by importing it alone is measured too.

Results: printed, and bench/out/idle_rss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

OUT = ROOT / "bench" / "out"
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python")
# Packages whose import cost is measured alone (those the sidecar may hold).
PACKAGES = ["tlsbridge.sidecar.loop", "apscheduler.schedulers.background", "prometheus_client",
            "yaml", "sqlite3", "ssl", "cryptography.x509", "docker", "requests", "urllib3",
            "tlsbridge.delivery.containers", "tlsbridge.placeholder", "http.client", "json"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def make_env(root: Path, pebble: Any, n: int) -> Path:
    import yaml

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    sites: dict[str, Any] = {}
    cfg_path = root / "tlsbridge.yaml"
    if n > 1:
        import scale

        premade = root / "premade"
        scale.build_tree(premade, n - 1)
        doc = yaml.safe_load((premade / "tlsbridge.yaml").read_text())
        sites, certbot, publish, state = (doc["sites"], doc["certbot"], doc["publish"], doc["state"])
        (premade / "state" / "certs-memo.json").unlink(missing_ok=True)  # a first start parses all
    else:
        certbot = {"config_dir": str(root / "letsencrypt"), "work_dir": str(root / "work"),
                   "logs_dir": str(root / "logs")}
        publish, state = {"dir": str(root / "certs")}, {"dir": str(root / "state")}
    sites[f"site{n - 1:04d}"] = {"domains": [f"site{n - 1:04d}.example.com"]}
    doc = {"acme": {"directory": pebble.directory_url, "email": "admin@example.com",
                    "ca_bundle": str(pebble.ca_bundle)},
           "certbot": {**certbot, "timeout": "2m"},
           "challenge": {"method": "standalone", "http_port": pebble.http_01_port},
           "publish": publish, "state": state,
           "docker": {"host": f"unix://{root}/no-docker.sock"}, "sites": sites}
    cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg_path


def one_start(cfg: Path, idle: float, trace: Path | None) -> dict[str, Any]:
    from servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    cli = ["-c", str(cfg), "run", "--listen", f"127.0.0.1:{port}", "--log-format", "json"]
    if trace:
        argv = [PYTHON, "-X", "tracemalloc=40", __file__, "--child", str(trace), *cli]
    else:
        argv = [str(BIN / "tlsbridge"), *cli]
    logf = cfg.parent / "run.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
    try:
        t0 = time.monotonic()
        while not ready(f"http://127.0.0.1:{port}/readyz"):
            if time.monotonic() - t0 > 300 or proc.poll() is not None:
                raise RuntimeError(f"not ready; log {logf}")
            time.sleep(0.1)
        first = time.monotonic() - t0
        text = logf.read_text()
        if '"issued serial=' not in text and "issued serial=" not in text:
            raise RuntimeError(f"the first pass issued nothing; log {logf}")
        time.sleep(idle)
        mem = proc_status(proc.pid)
        result: dict[str, Any] = {"first_pass_done_s": round(first, 1), **mem}
        if trace:
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 60
            while not trace.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            result["trace"] = json.loads(trace.read_text())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def import_costs() -> dict[str, float]:
    """VmRSS a fresh interpreter gains by importing each package alone (MiB)."""
    costs = {}
    code = ("import sys, importlib\n"
            "def rss():\n"
            "    t = open('/proc/self/status').read()\n"
            "    return int(t.split('VmRSS:')[1].split()[0])\n"
            "a = rss(); importlib.import_module(sys.argv[1]); print(rss() - a)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    for pkg in PACKAGES:
        vals = []
        for _ in range(3):
            out = subprocess.run([PYTHON, "-c", code, pkg], capture_output=True, text=True, env=env,
                                 cwd=ROOT)
            if out.returncode == 0:
                vals.append(int(out.stdout) / 1024)
        costs[pkg] = round(statistics.median(vals), 1) if vals else -1
    return costs


# -- the traced child ---------------------------------------------------------------------------


def child(dump_to: Path, cli: list[str]) -> int:
    import tracemalloc

    def dump(signum: int, frame: object) -> None:
        snap = tracemalloc.take_snapshot()
        by_pkg: dict[str, int] = {}
        for stat in snap.statistics("traceback"):
            by_pkg[_charge(stat.traceback)] = by_pkg.get(_charge(stat.traceback), 0) + stat.size
        top = sorted(by_pkg.items(), key=lambda kv: -kv[1])[:25]
        mods: dict[str, int] = {}
        for name in list(sys.modules):
            top_name = name.split(".")[0]
            mods[top_name] = mods.get(top_name, 0) + 1
        doc = {"traced_mib": round(sum(by_pkg.values()) / 2**20, 2),
               "by_package_kib": {k: round(v / 1024) for k, v in top},
               "modules_by_package": dict(sorted(mods.items(), key=lambda kv: -kv[1])),
               "modules_total": len(sys.modules)}
        tmp = dump_to.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.rename(dump_to)

    signal.signal(signal.SIGUSR1, dump)
    from tlsbridge.cli import main

    return int(main(cli) or 0)


def _charge(tb: Any) -> str:
    for frame in reversed(list(tb)):  # most recent first
        f = frame.filename
        if "importlib" in f or f.startswith("<frozen"):
            continue
        return _package(f)
    return "<import machinery>"


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/tlsbridge/" in filename:
        parts = filename.split("/tlsbridge/")[1].split("/")
        return "tlsbridge." + (parts[0].removesuffix(".py"))
    if "/lib/python3" in filename:
        return "stdlib:" + filename.split("/lib/python3")[1].split("/")[1].removesuffix(".py")
    return filename


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(Path(sys.argv[2]), sys.argv[3:])
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sites", default="1,200")
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-trace", action="store_true")
    ap.add_argument("--no-imports", action="store_true", help="skip the per-package import costs")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from servers import PebbleServer, free_port

    OUT.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"loadavg_start": os.getloadavg(), "idle_s": args.idle}
    with PebbleServer(free_port(), always_valid=True) as pebble:
        for n in (int(x) for x in args.sites.split(",")):
            runs = []
            for i in range(args.runs):
                cfg = make_env(OUT / f"idle-{n}", pebble, n)
                runs.append(one_start(cfg, args.idle, None))
                log(f"{n} site(s), run {i + 1}: {runs[-1]}")
            r: dict[str, Any] = {"runs": runs, "VmRSS_median": statistics.median(x["VmRSS"] for x in runs),
                                 "RssAnon_median": statistics.median(x["RssAnon"] for x in runs)}
            if not args.no_trace:
                cfg = make_env(OUT / f"idle-{n}", pebble, n)
                dump = OUT / f"idle-{n}-trace.json"
                dump.unlink(missing_ok=True)
                r["traced"] = one_start(cfg, args.idle, dump)
                log(f"{n} site(s), traced: {json.dumps(r['traced'])[:1500]}")
            result[str(n)] = r
    if not args.no_imports:
        result["import_rss_mib"] = import_costs()
        log(f"import costs (MiB of VmRSS, alone): {result['import_rss_mib']}")
    (OUT / "idle_rss.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: (v["VmRSS_median"] if isinstance(v, dict) and "VmRSS_median" in v else v)
                      for k, v in result.items() if k not in ("loadavg_start",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
