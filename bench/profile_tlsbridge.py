#!/usr/bin/env python3
"""Where a nothing-due `tlsbridge renew` and a `tlsbridge validate` spend their time.

    .venv/bin/python bench/profile_tlsbridge.py [--n 200] [--runs 7]

Needs the tree and config that bench/renew_nothing_due.py leaves in bench/out/tree-N/ (no
Pebble: with valid ARI caches a nothing-due pass never contacts the CA). Reports:

1. `python -X importtime` of both commands (median of --runs processes): the import cost
   above the interpreter floor, the costliest top-level imports, the cost per package, and
   which tlsbridge module first imports each expensive third-party/stdlib module (the place to
   make an import lazy).
2. cProfile: a cold `tlsbridge.cli.main([... "renew"])` in a fresh process (imports included),
   then the warm in-process phases timed without the profiler (config load, Reconciler set-up,
   run_pass over N sites) and a cProfile of one warm run_pass and one config load.
3. The cost of compiling tlsbridge's sources when no .pyc exists (the session's
   PYTHONDONTWRITEBYTECODE=1 with the editable checkout) versus cached bytecode.

Writes bench/out/profile_tlsbridge.txt (the report), profile_tlsbridge.json and the raw
cProfile dumps bench/out/profile_*.prof (open with `python -m pstats` or snakeviz).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
TLSBRIDGE = str(VENV_BIN / "tlsbridge")

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def bench_env(mode: str) -> dict[str, str]:
    env = dict(os.environ)
    if mode == "prefix":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    return env


# ----------------------------------------------------------------------------------------------
# -X importtime


class Node:
    __slots__ = ("name", "self_us", "cum_us", "children")

    def __init__(self, name: str, self_us: int, cum_us: int) -> None:
        self.name, self.self_us, self.cum_us = name, self_us, cum_us
        self.children: list[Node] = []


def parse_importtime(stderr: str) -> list[Node]:
    """The import tree (top-level nodes) from -X importtime output; children precede parents."""
    pending: dict[int, list[Node]] = defaultdict(list)
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        depth = (len(m.group(3)) - 1) // 2
        node = Node(m.group(4), int(m.group(1)), int(m.group(2)))
        node.children = pending.pop(depth + 1, [])
        pending[depth].append(node)
    return pending.get(0, [])


def walk(nodes: list[Node], parent: str | None = None):  # type: ignore[no-untyped-def]
    for n in nodes:
        yield n, parent
        yield from walk(n.children, n.name)


def importtime_runs(argv: list[str], env: dict[str, str], runs: int) -> list[list[Node]]:
    trees = []
    for _ in range(runs):
        proc = subprocess.run([PYTHON, "-X", "importtime", *argv], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}")
        trees.append(parse_importtime(proc.stderr))
    return trees


def analyse_imports(trees: list[list[Node]], floor: set[str]) -> dict[str, Any]:
    """Medians across runs: totals, top-level imports, per-package self time, first importers."""
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    total_above_floor, top_cum, self_by_mod, pkg_self = [], defaultdict(list), defaultdict(list), defaultdict(list)
    edges: dict[tuple[str, str], list[int]] = defaultdict(list)
    for tree in trees:
        total_above_floor.append(sum(n.cum_us for n in tree if n.name not in floor))
        for n in tree:
            if n.name not in floor:
                top_cum[n.name].append(n.cum_us)
        per_pkg: dict[str, int] = defaultdict(int)
        for n, parent in walk(tree):
            if n.name in floor:
                continue
            self_by_mod[n.name].append(n.self_us)
            per_pkg[n.name.split(".")[0]] += n.self_us
            if parent and parent.startswith("tlsbridge") and not n.name.startswith("tlsbridge"):
                edges[(parent, n.name)].append(n.cum_us)
        for k, v in per_pkg.items():
            pkg_self[k].append(v)
    return {
        "runs": len(trees),
        "above_floor_ms": med(total_above_floor) / 1000,
        "top_level_cum_ms": sorted(((k, med(v) / 1000) for k, v in top_cum.items()),
                                   key=lambda kv: -kv[1]),
        "package_self_ms": sorted(((k, med(v) / 1000) for k, v in pkg_self.items()),
                                  key=lambda kv: -kv[1]),
        "module_self_ms": sorted(((k, med(v) / 1000) for k, v in self_by_mod.items()),
                                 key=lambda kv: -kv[1])[:25],
        "first_party_importers_ms": sorted(((f"{a} -> {b}", med(v) / 1000) for (a, b), v in edges.items()),
                                           key=lambda kv: -kv[1]),
    }


# ----------------------------------------------------------------------------------------------
# cProfile (runs in a child process so that every measurement starts cold)

_CHILD = r'''
import cProfile, contextlib, io, json, os, pstats, sys, time
cfg_path, command, out_prefix, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
res = {}
devnull = open(os.devnull, "w")

def top(prof, key, limit=25):
    """Like pstats' print_stats, in milliseconds."""
    st = pstats.Stats(prof)
    idx = {"tottime": 2, "cumulative": 3}[key]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][idx])[:limit]
    lines = ["   ncalls  tottime_ms  cumtime_ms  function"]
    for (fn, line, name), (cc, nc, tt, ct, _) in rows:
        calls = str(nc) if nc == cc else f"{nc}/{cc}"
        where = name if fn == "~" else f"{fn}:{line}({name})"
        lines.append(f"{calls:>9}  {tt * 1000:10.2f}  {ct * 1000:10.2f}  {where}")
    return "\n".join(lines)

# 1. cold: the whole command in this fresh process, imports included
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
from tlsbridge.cli import main
with contextlib.redirect_stdout(devnull):
    rc = main(["-q", "-c", cfg_path, command])
prof.disable()
res["cold_wall_ms_profiled"] = (time.perf_counter() - t0) * 1000
res["cold_rc"] = rc
prof.dump_stats(out_prefix + "_cold.prof")
res["cold_top_cumulative"] = top(prof, "cumulative", 40)
res["cold_top_tottime"] = top(prof, "tottime", 25)

# 2. warm phases, no profiler
from pathlib import Path
from tlsbridge import config as config_mod
from tlsbridge.clock import SystemClock
from tlsbridge.wiring import build_reconciler as Reconciler
def best_med(fn):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return {"median_ms": ts[len(ts) // 2], "min_ms": ts[0]}
cfg = config_mod.load(Path(cfg_path))
res["warm_config_load"] = best_med(lambda: config_mod.load(Path(cfg_path)))
text = Path(cfg_path).read_text()
import yaml
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
res["warm_yaml_load_only"] = best_med(lambda: yaml.load(text, Loader=loader))
res["yaml_loader"] = loader.__name__
if command == "renew":
    res["warm_reconciler_init"] = best_med(lambda: Reconciler(cfg, SystemClock()))
    def one_pass():
        r = Reconciler(cfg, SystemClock())
        out = r.run_pass()
        assert all(o.plan.decision.reason == "NotDue" for o in out), [o.plan.decision for o in out][:3]
        r.ports.store.close()
    res["warm_run_pass"] = best_med(one_pass)
    from tlsbridge.adapters.certmemo import CertMemo
    from tlsbridge.adapters.certstore import CertStore
    from tlsbridge.certinfo import parse_pem
    names = list(cfg.sites)
    cs = CertStore(cfg.certbot.config_dir, CertMemo())
    pems = [(cs.live_dir(n) / "cert.pem").read_bytes() for n in names]
    res["warm_parse_all_certs"] = best_med(lambda: [parse_pem(p) for p in pems])
    res["warm_read_all_files"] = best_med(lambda: [cs.files(n) for n in names])
    r = Reconciler(cfg, SystemClock())
    res["warm_is_current_all"] = best_med(lambda: [r.ports.publisher.is_current(n, cs.files(n)) for n in names])
    res["warm_state_load_all"] = best_med(lambda: Reconciler(cfg, SystemClock()).ports.store.load_all())
    # 3. warm profile of one pass
    prof = cProfile.Profile()
    prof.enable()
    one_pass()
    prof.disable()
    prof.dump_stats(out_prefix + "_warm_pass.prof")
    res["warm_pass_top_tottime"] = top(prof, "tottime", 25)
    res["warm_pass_top_cumulative"] = top(prof, "cumulative", 30)
else:
    prof = cProfile.Profile()
    prof.enable()
    config_mod.load(Path(cfg_path))
    prof.disable()
    prof.dump_stats(out_prefix + "_warm_config.prof")
    res["warm_config_top_tottime"] = top(prof, "tottime", 20)
    res["warm_config_top_cumulative"] = top(prof, "cumulative", 25)
print(json.dumps(res))
'''


# A fresh process doing what `tlsbridge -c CFG renew` does, with a clock between the phases.
_PHASES = r'''
import time
t = [time.perf_counter()]
import contextlib, os, sys
from pathlib import Path
cfg_path, command = sys.argv[1], sys.argv[2]
from tlsbridge import cli
t.append(time.perf_counter())                       # 1 import tlsbridge.cli (+ commands)
parser = cli.build_parser()
args = parser.parse_args(["-c", cfg_path, command])
cli.setup_logging(args.verbose, args.quiet)
t.append(time.perf_counter())                       # 2 parser + logging set-up
ctx = cli.Context(config_path=args.config, config_given=True)
cfg = ctx.config()
t.append(time.perf_counter())                       # 3 config load (yaml, idna imports included)
if command == "renew":
    from tlsbridge.clock import SystemClock
    from tlsbridge.wiring import build_reconciler
    t.append(time.perf_counter())                   # 4 import wiring/reconcile/certinfo/deliver
    rec = build_reconciler(cfg, SystemClock())
    outcomes = rec.run_pass(None)
    t.append(time.perf_counter())                   # 5 run_pass (first, cold)
    from tlsbridge.commands.renew import _summary
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        for o in outcomes:
            print(_summary(o))
    t.append(time.perf_counter())                   # 6 output
print(" ".join(f"{(b - a) * 1000:.3f}" for a, b in zip(t, t[1:])), file=sys.stderr)
'''
PHASE_NAMES = {
    "renew": ["import tlsbridge.cli (+ command modules)", "argparse + logging set-up",
              "config load (imports yaml, idna)", "import wiring -> reconcile, certinfo, deliver",
              "run_pass (cold: lazy imports, first regex use)", "print 200 summaries"],
    "validate": ["import tlsbridge.cli (+ command modules)", "argparse + logging set-up",
                 "config load (imports yaml, idna)"],
}


def phases(cfg: Path, command: str, env: dict[str, str], runs: int) -> dict[str, Any]:
    """Median per phase over `runs` fresh processes, plus the process wall time and the floor."""
    import time

    per_phase: list[list[float]] = []
    walls, floors = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([PYTHON, "-c", "pass"], env=env, check=True)
        floors.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        proc = subprocess.run([PYTHON, "-c", _PHASES, str(cfg), command], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        walls.append((time.perf_counter() - t0) * 1000)
        if proc.returncode != 0:
            raise RuntimeError(f"phase driver failed: {proc.stderr[-2000:]}")
        per_phase.append([float(x) for x in proc.stderr.strip().splitlines()[-1].split()])
    names = PHASE_NAMES[command]
    med = [statistics.median(col) for col in zip(*per_phase, strict=True)]
    out = {"phases_ms": dict(zip(names, med, strict=True)), "process_wall_ms": statistics.median(walls),
           "floor_ms": statistics.median(floors)}
    out["unaccounted_ms"] = out["process_wall_ms"] - out["floor_ms"] - sum(med)
    return out


def cprofile(cfg: Path, command: str, env: dict[str, str], repeat: int) -> dict[str, Any]:
    prefix = str(OUT / f"profile_{command}")
    proc = subprocess.run([PYTHON, "-c", _CHILD, str(cfg), command, prefix, str(repeat)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cProfile child failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wall_median(argv: list[str], env: dict[str, str], runs: int) -> float:
    import time

    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


# ----------------------------------------------------------------------------------------------


def fmt_rows(rows: list[tuple[str, float]], limit: int, min_ms: float = 0.0) -> str:
    return "\n".join(f"  {ms:8.1f} ms  {name}" for name, ms in rows[:limit] if ms >= min_ms)


def trim_pstats(text: str, keep: int = 45) -> str:
    lines = text.splitlines()
    stdlib = os.path.dirname(os.__file__) + "/"
    body = [ln.replace(str(ROOT / ".venv" / "lib" / "python3.11" / "site-packages") + "/", "")
              .replace(str(ROOT) + "/", "").replace(stdlib, "<stdlib>/") for ln in lines[:keep + 1]]
    return "\n".join(body)


def mm(d: dict[str, float], digits: int = 1) -> str:
    return f"{d['median_ms']:.{digits}f} ms (min {d['min_ms']:.{digits}f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7, help="processes per importtime measurement")
    ap.add_argument("--repeat", type=int, default=9, help="repetitions of each warm phase")
    ap.add_argument("--bytecode", choices=("prefix", "inherit"), default="prefix")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))
    from renew_nothing_due import Tree  # noqa: PLC0415

    tree = Tree(args.n)
    if tree.complete() is not None or not tree.cfg.exists():
        sys.exit(f"{tree.root}: no tree/config; run bench/renew_nothing_due.py --n {args.n} first")
    fresh = tree.fresh_for()
    if fresh is None or fresh.total_seconds() < 300:
        sys.exit(f"{tree.root}: ARI caches stale ({fresh}); run bench/renew_nothing_due.py --n {args.n} "
                 "first (a pass would try to reach the CA)")
    env = bench_env(args.bytecode)
    cfg = str(tree.cfg)

    # warm the bytecode cache
    for argv in ([TLSBRIDGE, "-c", cfg, "renew"], [TLSBRIDGE, "-c", cfg, "validate"]):
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    floor_trees = importtime_runs(["-c", "pass"], env, 3)
    floor = {n.name for t in floor_trees for n, _ in walk(t)}
    imports = {
        "renew": analyse_imports(importtime_runs([TLSBRIDGE, "-c", cfg, "renew"], env, args.runs), floor),
        "validate": analyse_imports(importtime_runs([TLSBRIDGE, "-c", cfg, "validate"], env, args.runs), floor),
        "import_cli_only": analyse_imports(importtime_runs(["-c", "import tlsbridge.cli"], env, args.runs), floor),
    }
    prof = {cmd: cprofile(tree.cfg, cmd, env, args.repeat) for cmd in ("renew", "validate")}
    phase = {cmd: phases(tree.cfg, cmd, env, args.runs) for cmd in ("renew", "validate")}

    # bytecode: tlsbridge sources compiled on every run (no .pyc) vs cached .pyc
    byte = {}
    nopyc = bench_env("inherit")
    nopyc["PYTHONDONTWRITEBYTECODE"] = "1"
    nopyc.pop("PYTHONPYCACHEPREFIX", None)
    no_pyc_in_checkout = not any((ROOT / "tlsbridge").rglob("__pycache__/*.pyc"))
    for cmd in ("validate", "renew"):
        argv = [TLSBRIDGE, "-c", cfg, cmd]
        a, b = [], []
        for _ in range(5):
            a.append(wall_median(argv, env, 1))
            b.append(wall_median(argv, nopyc, 1))
        byte[cmd] = {"cached_pyc_ms": statistics.median(a), "no_pyc_ms": statistics.median(b)}
    byte["tlsbridge_checkout_has_no_pyc"] = no_pyc_in_checkout

    result = {"n": args.n, "bytecode": args.bytecode, "phases": phase, "imports": imports, "cprofile": prof,
              "bytecode_effect": byte}
    (OUT / "profile_tlsbridge.json").write_text(json.dumps(result, indent=2) + "\n")

    r, v = prof["renew"], prof["validate"]
    report = [
        f"# tlsbridge profile: N = {args.n} sites, nothing due (bytecode: {args.bytecode})",
        "",
        f"## Where a fresh process spends its time (median of {args.runs} processes each)",
    ]
    for cmd in ("renew", "validate"):
        ph = phase[cmd]
        report.append(f"{cmd}: process {ph['process_wall_ms']:.0f} ms = interpreter floor "
                      f"{ph['floor_ms']:.0f} ms (python -c pass)")
        report += [f"  + {ms:6.1f} ms  {name}" for name, ms in ph["phases_ms"].items()]
        report.append(f"  + {ph['unaccounted_ms']:6.1f} ms  rest (interpreter teardown, noise)")
    report += [
        "",
        "## Imports (python -X importtime, median of "
        f"{args.runs} processes; times inflated a little by the instrumentation)",
        f"renew:    {imports['renew']['above_floor_ms']:.1f} ms of imports above `python -c pass`",
        f"validate: {imports['validate']['above_floor_ms']:.1f} ms",
        f"`import tlsbridge.cli` alone: {imports['import_cli_only']['above_floor_ms']:.1f} ms",
    ]
    for cmd in ("renew", "validate"):
        im = imports[cmd]
        report += [
            "",
            f"### {cmd}: top-level imports (cumulative)",
            fmt_rows(im["top_level_cum_ms"], 15, 0.5),
            f"### {cmd}: self time per package",
            fmt_rows(im["package_self_ms"], 15, 0.5),
            f"### {cmd}: expensive modules first imported by a tlsbridge module (importer -> module, cumulative)",
            fmt_rows(im["first_party_importers_ms"], 25, 0.3),
        ]
    report += [
        "",
        "## In-process phases (warm: imports done; medians of "
        f"{args.repeat}, no profiler)",
        f"config load ({args.n} sites):       {mm(r['warm_config_load'], 1)} "
        f"(of which yaml.load with {r['yaml_loader']}: {mm(r['warm_yaml_load_only'], 1)})",
        f"Reconciler() set-up:               {mm(r['warm_reconciler_init'], 2)}",
        f"run_pass over {args.n} sites:          {mm(r['warm_run_pass'], 1)}",
        f"  parse {args.n} certs (certinfo):      {mm(r['warm_parse_all_certs'], 1)}",
        f"  read {args.n} x 4 live files:         {mm(r['warm_read_all_files'], 1)}",
        f"  publisher.is_current x {args.n}:      {mm(r['warm_is_current_all'], 1)} (incl. reading the live files)",
        f"  state load_all:                  {mm(r['warm_state_load_all'], 1)}",
        f"cold `renew` under cProfile (imports included): {r['cold_wall_ms_profiled']:.0f} ms; "
        f"cold `validate`: {v['cold_wall_ms_profiled']:.0f} ms",
        "",
        "## Bytecode: tlsbridge without .pyc (PYTHONDONTWRITEBYTECODE=1, editable checkout) vs cached",
        f"validate: {byte['validate']['no_pyc_ms']:.0f} ms without .pyc, {byte['validate']['cached_pyc_ms']:.0f} ms with",
        f"renew:    {byte['renew']['no_pyc_ms']:.0f} ms without .pyc, {byte['renew']['cached_pyc_ms']:.0f} ms with",
        "",
        "## cProfile: warm run_pass, by tottime",
        trim_pstats(r["warm_pass_top_tottime"], 30),
        "",
        "## cProfile: warm run_pass, by cumulative",
        trim_pstats(r["warm_pass_top_cumulative"], 35),
        "",
        "## cProfile: warm config load, by tottime",
        trim_pstats(v["warm_config_top_tottime"], 22),
        "",
        "## cProfile: cold `renew` process, by cumulative (imports included)",
        trim_pstats(r["cold_top_cumulative"], 45),
        "",
    ]
    text = "\n".join(report)
    (OUT / "profile_tlsbridge.txt").write_text(text)
    print(text)
    print(textwrap.dedent(f"""
        wrote {OUT / 'profile_tlsbridge.txt'}, {OUT / 'profile_tlsbridge.json'} and
        {OUT}/profile_{{renew,validate}}_*.prof"""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
