"""`tlsbridge notify --test`: send a test message to every target of `notify.urls` and report
each target's result (never its URL: it may hold a token). Exit 1 if any target failed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tlsbridge.errors import UsageError

if TYPE_CHECKING:
    from tlsbridge.cli import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", action="store_true", required=True,
                        help="send a test message to every target in notify.urls")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.adapters.notify import send
    from tlsbridge.clock import clock_from_env
    from tlsbridge.notify.messages import probe_message

    cfg = ctx.config()
    if not cfg.notify.enabled:
        raise UsageError(f"{cfg.source}: notify.urls is empty: no target to test")
    timeout = cfg.notify.timeout.total_seconds()
    results = send(cfg.notify.urls, [probe_message(clock_from_env().now(), cfg.source)], timeout)
    for r in results:
        print(f"target {r.target}: {'ok' if r.ok else 'FAILED: ' + (r.error or 'no answer')}")
    return 0 if all(r.ok for r in results) else 1
