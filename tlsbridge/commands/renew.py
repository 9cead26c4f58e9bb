"""`tlsbridge renew`: one reconcile pass; exit 1 if any site failed (the others still processed)
or is failing: backing off after a failed attempt, so that cron and CI monitoring see it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tlsbridge.errors import UsageError

if TYPE_CHECKING:
    from tlsbridge.cli import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", action="append", metavar="NAME", help="only this site (repeatable)")
    parser.add_argument("--force", action="store_true", help="renew even if not due; ignore failure backoff")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.clock import SystemClock
    from tlsbridge.wiring import build_reconciler

    cfg = ctx.config()
    if cfg.discovery.enabled:  # the labelled app containers, listed once
        from tlsbridge.discovery.apply import one_shot

        cfg = one_shot(cfg, SystemClock().now(), dry_run=args.dry_run)
    for name in args.site or ():
        if name not in cfg.sites:
            raise UsageError(f"--site {name}: no such site in {cfg.source} (sites: {', '.join(cfg.sites) or 'none'})")
    reconciler = build_reconciler(cfg, SystemClock())
    outcomes = reconciler.run_pass(args.site, force=args.force, dry_run=args.dry_run)
    failed = [o for o in outcomes if not o.ok]
    waiting = [o for o in outcomes if o.ok and o.backing_off]
    for o in outcomes:
        if args.dry_run:
            print(o.plan.render())
        elif o.ok and not o.backing_off:
            print(_summary(o))
    for o in failed:
        print(f"tlsbridge: site {o.site} failed ({o.reason}): {o.error}", file=sys.stderr)
    for o in waiting:
        until = f"{o.waiting_until:%Y-%m-%dT%H:%M:%SZ}" if o.waiting_until else "later"
        print(f"tlsbridge: site={o.site} backing off until {until}: "
              f"{o.last_error or o.plan.decision.message}", file=sys.stderr)
    return 1 if failed or waiting else 0


def _summary(o: object) -> str:
    from tlsbridge.reconcile import SiteOutcome

    assert isinstance(o, SiteOutcome)
    d = o.plan.decision
    if o.issued and o.cert:
        verb = {"issue": "issued", "reissue": "re-issued", "renew": "renewed"}.get(d.action.value, d.action.value)
        return f"{o.site}: {verb} ({d.reason}), serial {o.cert.serial_hex}, expires {o.cert.not_after:%Y-%m-%dT%H:%MZ}"
    if o.published and o.cert:
        return f"{o.site}: published serial {o.cert.serial_hex} ({d.reason})"
    return f"{o.site}: {d.reason}: {d.message}"
