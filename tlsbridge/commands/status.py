"""`tlsbridge status [--json]`: every site's certificate, from local files only."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="a JSON array, one object per site")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.clock import SystemClock
    from tlsbridge.status import collect, render_table

    cfg = ctx.config()
    now = SystemClock().now()
    rows = collect(cfg, now)
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        print(render_table(rows, now))
    return 0
