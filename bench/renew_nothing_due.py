#!/usr/bin/env python3
"""Benchmark: a pass over N certbot lineages when nothing is due (issue 2, item 10).

    .venv/bin/python bench/renew_nothing_due.py [--n 200] [--rounds 15] [--workers 16]
                                                [--rebuild] [--no-profile]

1. Starts a Pebble (tests/integration/servers.py) with PEBBLE_VA_ALWAYS_VALID=1 and builds N
   certbot lineages site000..site{N-1} (domains siteNNN.example.com) in ONE certbot config dir:
   one ACME account is registered first and copied into W worker trees, W certbot processes
   issue in parallel (each worker has its own --config-dir/--work-dir/--logs-dir, since certbot
   locks them), then live/, archive/, renewal/ and accounts/ are merged into one tree and the
   absolute paths inside renewal/*.conf are rewritten. The result is cached in
   bench/out/tree-N/ and reused while its ARI caches are still fresh (see --min-fresh).
2. Writes bench/out/tree-N/tlsbridge.yaml for those sites and runs `tlsbridge renew` once
   (publishes everything, fills the ARI cache) and `certbot renew` once (stores certbot's ARI
   Retry-After in each renewal conf); checks that a second `tlsbridge renew` says NotDue for all.
3. Measures whole processes, interleaved (order shuffled each round), after warm-up runs:
   (a) tlsbridge -c CFG renew    (b) certbot renew ... --no-random-sleep-on-renew
   (c) tlsbridge -c CFG validate  (d) python -c pass (the interpreter floor)
   Wall time (median, p90, min), CPU time (user+sys of the child) and max RSS per command;
   counts the ACME requests Pebble saw during the measured rounds (expected: 0 for both).
4. Unless --no-profile: runs bench/profile_tlsbridge.py (import times and cProfile).

Results: bench/out/renew_nothing_due.json and bench/out/renew_nothing_due.md (the table; --json
moves both).

Why the cache can go stale: Pebble keeps everything in memory and gets a new CA key on every
start, so after a restart it no longer knows the cached certificates (renewalInfo answers 404).
The measured runs never contact the CA as long as both tools hold a cached ARI answer (Pebble
sends Retry-After: 21600, i.e. 6 h; certbot also caches failures for 6 h); a tree is reused
only while both caches stay valid for at least --min-fresh minutes, else it is rebuilt.

Bytecode: the session environment sets PYTHONDONTWRITEBYTECODE=1 and the editable tlsbridge
checkout has no .pyc files, so every tlsbridge process would compile its sources. A real
install has .pyc files, so by default the measured processes run with
PYTHONPYCACHEPREFIX=bench/out/pycache (written during warm-up) and bytecode writing on, for
every command alike. --bytecode inherit keeps the environment as it is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import queue
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.servers import PebbleServer, free_port  # noqa: E402

OUT = ROOT / "bench" / "out"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
CERTBOT = str(VENV_BIN / "certbot")
TLSBRIDGE = str(VENV_BIN / "tlsbridge")
TREE_FORMAT = 1  # bump when the tree layout changes (forces a rebuild)


# ----------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def site_name(i: int) -> str:
    return f"site{i:03d}"


def bench_env(mode: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if mode == "prefix":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    env.update(extra or {})
    return env


def run(argv: list[str], env: dict[str, str], check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}\n"
                           f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")
    return proc


def timed(argv: list[str], env: dict[str, str], sink: Path) -> dict[str, Any]:
    """Run one process; wall time, child CPU time (user+sys), max RSS and exit code."""
    with open(sink, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
            "rc": proc.returncode}


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    # p90 by linear interpolation between closest ranks (statistics' "inclusive" method)
    p90 = statistics.quantiles(s, n=10, method="inclusive")[8] if len(s) > 1 else s[0]
    return {"median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1],
            "mean": statistics.fmean(s), "n": len(s)}


# ----------------------------------------------------------------------------------------------
# the certbot tree


class Tree:
    """bench/out/tree-N: certbot/{config,work,logs}, publish/, state/, tlsbridge.yaml, meta.json."""

    def __init__(self, n: int, root: Path | None = None) -> None:
        self.n = n
        self.root = root or OUT / f"tree-{n}"
        self.certbot = self.root / "certbot"
        self.config_dir = self.certbot / "config"
        self.work_dir = self.certbot / "work"
        self.logs_dir = self.certbot / "logs"
        self.publish_dir = self.root / "publish"
        self.state_dir = self.root / "state"
        self.cfg = self.root / "tlsbridge.yaml"
        self.ca_bundle = self.root / "pebble-ca.pem"
        self.meta_path = self.root / "meta.json"

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(self.meta_path)

    def certbot_dirs(self) -> list[str]:
        return ["--config-dir", str(self.config_dir), "--work-dir", str(self.work_dir),
                "--logs-dir", str(self.logs_dir)]

    def complete(self) -> str | None:
        """None when the tree holds all N lineages, else why not."""
        meta = self.meta()
        if meta.get("format") != TREE_FORMAT or meta.get("n") != self.n or not meta.get("complete"):
            return "no complete tree"
        for i in range(self.n):
            name = site_name(i)
            if not (self.config_dir / "live" / name / "cert.pem").exists():
                return f"{name} has no certificate"
            if not (self.config_dir / "renewal" / f"{name}.conf").exists():
                return f"{name} has no renewal conf"
        return None

    # -- ARI freshness: both tools must keep their cached ARI answer through the measurement --
    def tlsbridge_ari_expiry(self) -> tuple[dt.datetime | None, int]:
        """Earliest ARI retry_after in tlsbridge's state, and how many sites have one."""
        db_path = self.state_dir / "state.sqlite3"
        if not db_path.exists():
            return None, 0
        db = sqlite3.connect(db_path, timeout=10)
        try:
            rows = db.execute("SELECT site, data FROM site_state").fetchall()
        finally:
            db.close()
        earliest, count = None, 0
        for _, data in rows:
            ari = json.loads(data).get("ari")
            if not ari:
                continue
            at = dt.datetime.fromisoformat(ari["retry_after"])
            count += 1
            earliest = at if earliest is None or at < earliest else earliest
        return earliest, count

    def certbot_ari_expiry(self) -> tuple[dt.datetime | None, int]:
        """Earliest `ari_retry_after` in the renewal confs (naive local time, as certbot writes)."""
        earliest, count = None, 0
        for conf in (self.config_dir / "renewal").glob("*.conf"):
            m = re.search(r"^ari_retry_after\s*=\s*(\S+)", conf.read_text(), re.MULTILINE)
            if not m:
                continue
            at = dt.datetime.fromisoformat(m.group(1)).astimezone(dt.UTC)  # naive = local
            count += 1
            earliest = at if earliest is None or at < earliest else earliest
        return earliest, count

    def fresh_for(self) -> dt.timedelta | None:
        """How long both ARI caches stay valid for all N sites (None: some site has none)."""
        now = dt.datetime.now(dt.UTC)
        t_at, t_n = self.tlsbridge_ari_expiry()
        c_at, c_n = self.certbot_ari_expiry()
        if t_at is None or c_at is None or t_n < self.n or c_n < self.n:
            return None
        return min(t_at, c_at) - now


def build_tree(tree: Tree, pebble: PebbleServer, workers: int, env: dict[str, str]) -> dict[str, Any]:
    """Issue N lineages with `workers` parallel certbot processes and merge them into `tree`."""
    t_start = time.monotonic()
    if tree.root.exists():
        shutil.rmtree(tree.root)
    build = OUT / f"tree-{tree.n}.build"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    cenv = {**env, **pebble.env}

    def certbot(base: Path, *args: str) -> list[str]:
        return [CERTBOT, *args, "--server", pebble.directory_url,
                "--config-dir", str(base / "config"), "--work-dir", str(base / "work"),
                "--logs-dir", str(base / "logs"), "--non-interactive"]

    # One account for every lineage: renewal confs name it in [renewalparams] account = ...
    account = build / "account"
    run(certbot(account, "register", "--agree-tos", "--register-unsafely-without-email"), cenv)
    accounts = account / "config" / "accounts"

    workers = max(1, min(workers, tree.n))
    wdirs = [build / f"w{k:02d}" for k in range(workers)]
    for w in wdirs:
        (w / "config").mkdir(parents=True)
        shutil.copytree(accounts, w / "config" / "accounts")

    todo: queue.Queue[int] = queue.Queue()
    for i in range(tree.n):
        todo.put(i)
    done = 0
    lock = threading.Lock()
    failures: list[str] = []

    def worker(w: Path) -> None:
        nonlocal done
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            name = site_name(i)
            argv = certbot(w, "certonly", "--cert-name", name, "-d", f"{name}.example.com",
                           "--key-type", "ecdsa", "--elliptic-curve", "secp256r1",
                           # Pebble skips validation (always-valid): the hook only has to succeed
                           "--manual", "--manual-auth-hook", "/bin/true",
                           "--preferred-challenges", "http")
            for attempt in (1, 2):
                proc = run(argv, cenv, check=False)
                if proc.returncode == 0:
                    break
                if attempt == 2:
                    with lock:
                        failures.append(f"{name}: {proc.stdout[-500:]}{proc.stderr[-500:]}")
            with lock:
                done += 1
                if done % 25 == 0 or done == tree.n:
                    log(f"issued {done}/{tree.n} ({time.monotonic() - t_start:.0f} s)")

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, wdirs))
    if failures:
        raise RuntimeError(f"{len(failures)} issuances failed, first: {failures[0]}")
    t_issued = time.monotonic()

    # Merge into tree-N.tmp, then rename into place.
    tmp = Tree(tree.n, OUT / f"tree-{tree.n}.tmp")
    if tmp.root.exists():
        shutil.rmtree(tmp.root)
    for d in (tmp.config_dir / "live", tmp.config_dir / "archive", tmp.config_dir / "renewal",
              tmp.work_dir, tmp.logs_dir):
        d.mkdir(parents=True)
    shutil.copytree(accounts, tmp.config_dir / "accounts")
    for hook in ("pre", "deploy", "post"):
        (tmp.config_dir / "renewal-hooks" / hook).mkdir(parents=True)
    final_base = str(tree.certbot)  # paths inside renewal confs must name the final location
    for w in wdirs:
        wconf = w / "config"
        if (wconf / "live" / "README").exists() and not (tmp.config_dir / "live" / "README").exists():
            shutil.copy2(wconf / "live" / "README", tmp.config_dir / "live" / "README")
        for conf in sorted((wconf / "renewal").glob("*.conf")):
            name = conf.stem
            text = conf.read_text()
            # config_dir/work_dir/logs_dir and archive_dir/cert/privkey/chain/fullchain
            text = text.replace(f"{w}/", f"{final_base}/")
            if str(w) in text:
                raise RuntimeError(f"{conf}: unexpected reference to {w}")
            (tmp.config_dir / "renewal" / conf.name).write_text(text)
            os.rename(wconf / "live" / name, tmp.config_dir / "live" / name)  # relative links
            os.rename(wconf / "archive" / name, tmp.config_dir / "archive" / name)
    tmp.root.rename(tree.root)
    shutil.rmtree(build)
    # live/ links are relative (../../archive/...): check they resolve in the merged tree
    for i in range(tree.n):
        live = tree.config_dir / "live" / site_name(i)
        for f in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
            if not (live / f).resolve().is_file():
                raise RuntimeError(f"{live / f} does not resolve after the merge")
    meta = {
        "format": TREE_FORMAT, "n": tree.n, "complete": True, "workers": workers,
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "issue_seconds": round(t_issued - t_start, 1),
        "build_seconds": round(time.monotonic() - t_start, 1),
        "directory": pebble.directory_url,
        "certbot": run([CERTBOT, "--version"], env).stdout.strip(),
    }
    tree.write_meta(meta)
    log(f"built {tree.n} lineages in {meta['build_seconds']} s with {workers} workers")
    return meta


def retarget(tree: Tree, pebble: PebbleServer) -> None:
    """Point a reused tree at this Pebble: `server =` in renewal confs and the accounts folder.

    Pebble does not know the cached account or certificates (it forgets everything on restart);
    this only makes every URL in the tree name the running Pebble, so that any request a tool
    might make shows up in its log instead of going to a port that is now closed or reused.
    """
    meta = tree.meta()
    old = meta.get("directory")
    new = pebble.directory_url
    if not old or old == new:
        return
    for conf in (tree.config_dir / "renewal").glob("*.conf"):
        text = conf.read_text()
        conf.write_text(text.replace(f"server = {old}\n", f"server = {new}\n"))
    old_host, new_host = old.split("/")[2], new.split("/")[2]
    acc = tree.config_dir / "accounts"
    if (acc / old_host).exists() and not (acc / new_host).exists():
        os.rename(acc / old_host, acc / new_host)
    meta["directory"] = new
    tree.write_meta(meta)


def write_config(tree: Tree, pebble: PebbleServer) -> None:
    shutil.copyfile(pebble.ca_bundle, tree.ca_bundle)  # outlives Pebble's temp dir
    lines = [
        "# Generated by bench/renew_nothing_due.py: N certbot lineages, nothing due.",
        "acme:",
        f"  directory: {pebble.directory_url}",
        f"  ca_bundle: {tree.ca_bundle}",
        "  key_type: ecdsa",
        "certbot:",
        f"  config_dir: {tree.config_dir}",
        f"  work_dir: {tree.work_dir}",
        f"  logs_dir: {tree.logs_dir}",
        "challenge:",
        "  method: standalone",
        f"  http_port: {pebble.http_01_port}",
        "publish:",
        f"  dir: {tree.publish_dir}",
        "state:",
        f"  dir: {tree.state_dir}",
        "sites:",
    ]
    for i in range(tree.n):
        name = site_name(i)
        lines += [f"  {name}:", f"    domains: [{name}.example.com]"]
    tree.cfg.write_text("\n".join(lines) + "\n")


def pebble_ari_requests(pebble: PebbleServer) -> int:
    try:
        text = pebble.pebble_log.read_text(errors="replace")
    except OSError:
        return 0
    return text.count("renewalInfo")


def pebble_requests(pebble: PebbleServer) -> int:
    try:
        text = pebble.pebble_log.read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(r"(GET|POST|HEAD) /\S* -> calling handler", text))


# ----------------------------------------------------------------------------------------------
# main


def commands(tree: Tree) -> dict[str, list[str]]:
    return {
        "tlsbridge_renew": [TLSBRIDGE, "-c", str(tree.cfg), "renew"],
        "certbot_renew": [CERTBOT, "renew", *tree.certbot_dirs(), "--no-random-sleep-on-renew"],
        "tlsbridge_validate": [TLSBRIDGE, "-c", str(tree.cfg), "validate"],
        "python_floor": [PYTHON, "-c", "pass"],
    }


LABELS = {
    "tlsbridge_renew": "(a) tlsbridge renew",
    "certbot_renew": "(b) certbot renew",
    "tlsbridge_validate": "(c) tlsbridge validate",
    "python_floor": "(d) python -c pass",
}


def check_not_due(proc: subprocess.CompletedProcess[str], n: int) -> None:
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    not_due = {ln.split(":", 1)[0] for ln in lines if re.match(r"^site\d{3}: NotDue: ", ln)}
    want = {site_name(i) for i in range(n)}
    if proc.returncode != 0 or not_due != want:
        others = [ln for ln in lines if not re.match(r"^site\d{3}: NotDue: ", ln)][:5]
        raise RuntimeError(f"tlsbridge renew: exit {proc.returncode}, {len(not_due)}/{n} NotDue; "
                           f"other lines: {others}; stderr: {proc.stderr[-1500:]}")


def git_state() -> dict[str, Any]:
    """Which tlsbridge was measured: HEAD, uncommitted files under tlsbridge/, a source digest."""
    import hashlib

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()

    digest = hashlib.sha256()
    for f in sorted((ROOT / "tlsbridge").rglob("*.py")):
        digest.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return {"head": git("rev-parse", "--short", "HEAD"),
            "dirty_tlsbridge_files": len(git("status", "--porcelain", "--", "tlsbridge").splitlines()),
            "tlsbridge_sources_sha256": digest.hexdigest()[:16]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of lineages/sites (default 200)")
    ap.add_argument("--rounds", type=int, default=15, help="measured rounds per command (default 15)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured runs per command first (default 2)")
    ap.add_argument("--workers", type=int, default=16, help="parallel certbot processes while building")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached tree")
    ap.add_argument("--min-fresh", type=float, default=30,
                    help="reuse a tree only if its ARI caches stay valid this many minutes (default 30)")
    ap.add_argument("--bytecode", choices=("prefix", "inherit"), default="prefix",
                    help="prefix: .pyc files in bench/out/pycache (default); inherit: environment as is")
    ap.add_argument("--seed", type=int, default=1, help="seed for the per-round order")
    ap.add_argument("--no-profile", action="store_true", help="skip bench/profile_tlsbridge.py")
    ap.add_argument("--json", type=Path, default=OUT / "renew_nothing_due.json",
                    help="where the results go (the table goes next to it, as .md)")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    env = bench_env(args.bytecode)
    tree = Tree(args.n)
    result: dict[str, Any] = {
        "benchmark": "renew_nothing_due", "n": args.n, "rounds": args.rounds,
        "warmup": args.warmup, "bytecode": args.bytecode,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                 "python": platform.python_version(), "platform": platform.platform()},
    }

    with PebbleServer(free_port(), always_valid=True) as pebble:
        log(f"Pebble at {pebble.directory_url} (started in {pebble.startup_seconds:.1f} s)")
        cenv = {**env, **pebble.env}  # REQUESTS_CA_BUNDLE for certbot (and harmless for tlsbridge)

        # 1. the tree -----------------------------------------------------------------------
        reason = "--rebuild" if args.rebuild else tree.complete()
        if reason is None:
            fresh = tree.fresh_for()
            if fresh is None:
                reason = "its ARI caches are incomplete"
            elif fresh < dt.timedelta(minutes=args.min_fresh):
                reason = f"its ARI caches expire in {fresh.total_seconds() / 60:.0f} min"
        if reason is not None:
            log(f"building tree-{args.n} ({reason}) with {args.workers} workers")
            build_tree(tree, pebble, args.workers, env)
            result["tree"] = {"reused": False, "why_built": reason, **tree.meta()}
        else:
            log(f"reusing {tree.root} (ARI caches valid for {tree.fresh_for()})")
            retarget(tree, pebble)
            result["tree"] = {"reused": True, **tree.meta()}

        # 2. config, publish everything, fill the ARI caches ------------------------------------
        write_config(tree, pebble)
        ari0 = pebble_ari_requests(pebble)
        t0 = time.perf_counter()
        first = run(commands(tree)["tlsbridge_renew"], cenv, check=False)
        result["setup_tlsbridge_renew_seconds"] = round(time.perf_counter() - t0, 2)
        if first.returncode != 0:
            raise RuntimeError(f"setup tlsbridge renew exited {first.returncode}:\n{first.stderr[-3000:]}")
        published = sum(1 for ln in first.stdout.splitlines() if ": published serial " in ln)
        log(f"setup: tlsbridge renew exit 0 in {result['setup_tlsbridge_renew_seconds']} s, "
            f"{published} published")
        ari1 = pebble_ari_requests(pebble)
        t0 = time.perf_counter()
        run(commands(tree)["certbot_renew"], cenv)
        result["setup_certbot_renew_seconds"] = round(time.perf_counter() - t0, 2)
        ari2 = pebble_ari_requests(pebble)
        second = run(commands(tree)["tlsbridge_renew"], cenv, check=False)
        check_not_due(second, args.n)
        # Who asked the CA for renewalInfo during set-up (0 on a reused tree: cached answers)
        result["setup_ari_requests"] = {"tlsbridge_first_renew": ari1 - ari0,
                                        "certbot_first_renew": ari2 - ari1,
                                        "tlsbridge_second_renew": pebble_ari_requests(pebble) - ari2}
        fresh = tree.fresh_for()
        if fresh is None or fresh < dt.timedelta(minutes=5):
            raise RuntimeError(f"ARI caches not filled (fresh for {fresh}); measured runs would fetch")
        log(f"setup ok: {args.n}/{args.n} NotDue, ARI caches valid for {fresh}")
        result["ari_cache_valid_for_minutes"] = round(fresh.total_seconds() / 60)
        result["setup_published"] = published

        # 3. measure ------------------------------------------------------------------------
        cmds = commands(tree)
        sink = OUT / "last_run.out"
        for name, argv in cmds.items():
            for _ in range(args.warmup):
                r = timed(argv, cenv, sink)
                if r["rc"] != 0:
                    raise RuntimeError(f"warm-up {name} exited {r['rc']}: {sink.read_text()[-2000:]}")
        ari_before, req_before = pebble_ari_requests(pebble), pebble_requests(pebble)
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in cmds}
        rng = random.Random(args.seed)
        for rnd in range(args.rounds):
            order = list(cmds)
            rng.shuffle(order)
            for name in order:
                r = timed(cmds[name], cenv, sink)
                if r["rc"] != 0:
                    raise RuntimeError(f"{name} exited {r['rc']}: {sink.read_text()[-2000:]}")
                samples[name].append(r)
            log(f"round {rnd + 1}/{args.rounds}: "
                + ", ".join(f"{k} {samples[k][-1]['wall'] * 1000:.0f} ms" for k in cmds))
        result["ca_requests_during_measurement"] = pebble_requests(pebble) - req_before
        result["ari_requests_during_measurement"] = pebble_ari_requests(pebble) - ari_before
        last = run(cmds["tlsbridge_renew"], cenv, check=False)
        check_not_due(last, args.n)  # still nothing due afterwards

    stats: dict[str, Any] = {}
    for name, rs in samples.items():
        stats[name] = {
            "argv": cmds[name],
            "wall_s": summary([r["wall"] for r in rs]),
            "cpu_s": summary([r["cpu"] for r in rs]),
            "maxrss_mib": statistics.median(r["maxrss_kib"] for r in rs) / 1024,
            "samples_wall_s": [round(r["wall"], 4) for r in rs],
        }
    result["results"] = stats
    a, b, c = (stats[k]["wall_s"]["median"] for k in ("tlsbridge_renew", "certbot_renew", "tlsbridge_validate"))
    floor = stats["python_floor"]["wall_s"]["median"]
    result["ratio_tlsbridge_over_certbot"] = a / b
    result["ratio_tlsbridge_over_certbot_cpu"] = (stats["tlsbridge_renew"]["cpu_s"]["median"]
                                                  / stats["certbot_renew"]["cpu_s"]["median"])
    result["goals"] = {
        "renew_ratio_goal": 1 / 8, "renew_ratio": round(a / b, 4), "renew_ratio_met": a / b <= 1 / 8,
        "validate_goal_s": 0.150, "validate_median_s": round(c, 4), "validate_met": c < 0.150,
        "renew_above_floor_s": round(a - floor, 4), "validate_above_floor_s": round(c - floor, 4),
    }
    result["host"]["loadavg_end"] = os.getloadavg()
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    table = render_table(result)
    print(table)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(table + "\n")
    log(f"wrote {args.json} and {args.json.with_suffix('.md')}")

    if not args.no_profile:
        prof = [PYTHON, str(ROOT / "bench" / "profile_tlsbridge.py"), "--n", str(args.n),
                "--bytecode", args.bytecode]
        log("profiling: " + " ".join(prof))
        subprocess.run(prof, check=True)
    return 0


def render_table(result: dict[str, Any]) -> str:
    ms = 1000
    rows = ["| command | wall median | wall p90 | wall min | CPU median | max RSS |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, s in result["results"].items():
        w, c = s["wall_s"], s["cpu_s"]
        rows.append(f"| {LABELS[name]} | {w['median'] * ms:.0f} ms | {w['p90'] * ms:.0f} ms | "
                    f"{w['min'] * ms:.0f} ms | {c['median'] * ms:.0f} ms | {s['maxrss_mib']:.0f} MiB |")
    g = result["goals"]
    rows += [
        "",
        f"N = {result['n']} lineages, {result['rounds']} interleaved rounds, bytecode: {result['bytecode']}, "
        f"tree {'reused' if result['tree']['reused'] else 'built'}; "
        f"ACME requests during the measured rounds: {result['ca_requests_during_measurement']} "
        f"(renewalInfo: {result['ari_requests_during_measurement']}).",
        f"tlsbridge renew / certbot renew (wall medians): {g['renew_ratio']:.3f} = 1/{1 / g['renew_ratio']:.1f} "
        f"(goal <= 1/8: {'met' if g['renew_ratio_met'] else 'NOT met'}); CPU: "
        f"{result['ratio_tlsbridge_over_certbot_cpu']:.3f}.",
        f"tlsbridge validate: {g['validate_median_s'] * ms:.0f} ms (goal < 150 ms: "
        f"{'met' if g['validate_met'] else 'NOT met'}); above the interpreter floor: renew "
        f"{g['renew_above_floor_s'] * ms:.0f} ms, validate {g['validate_above_floor_s'] * ms:.0f} ms.",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
