"""`tlsbridge status [--json]`: every site's certificate, from local files only."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="a JSON array, one object per site")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.clock import SystemClock
    from tlsbridge.status import collect, render_table
    from tlsbridge.wiring import build_ports

    cfg = ctx.config()
    now = SystemClock().now()
    skipped: tuple[object, ...] = ()
    if cfg.discovery.enabled:  # the labelled app containers' sites too (read-only)
        from tlsbridge.discovery.apply import listed

        cfg, skipped = listed(cfg)
    rows = collect(cfg, build_ports(cfg), now)
    if args.json:
        found = {n: {"discovered": s.discovered} for n, s in cfg.sites.items() if cfg.discovery.enabled}
        print(json.dumps([{**r.as_json(), **found.get(r.name, {})} for r in rows], indent=2))
    else:
        print(render_table(rows, now))
        for name, site in cfg.sites.items():
            if site.discovered:
                print(f"{name}: discovered from container {site.discovered}")
        for skip in skipped:
            print(f"skipped: {skip}")
        if cfg.daemon_tls is not None:
            print(_engine_line(cfg.daemon_tls.out, now))
    return 0


def _engine_line(out: Path, now: datetime) -> str:
    """The Docker engine's TLS server certificate (daemon_tls), for people reading the table."""
    from tlsbridge.daemon_tls.apply import server_cert_expiry

    expiry = server_cert_expiry(out)
    if expiry is None:
        return f"\ndocker engine TLS ({out}): no server certificate yet (run tlsbridge daemon-tls)"
    days = (expiry - now).total_seconds() / 86400
    return f"\ndocker engine TLS ({out}): server certificate expires {expiry:%Y-%m-%dT%H:%M:%SZ} ({days:.1f} days)"
