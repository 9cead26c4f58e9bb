"""`tlsbridge renew`: one reconcile pass; exit 1 if any site failed (the others still processed)
or is failing: backing off after a failed attempt, so that cron and CI monitoring see it.
A line per site on stdout, none with `-q` (errors still go to stderr)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from tlsbridge.errors import UsageError

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.reconcile import Reconciler, SiteOutcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", action="append", metavar="NAME", help="only this site (repeatable)")
    parser.add_argument("--force", action="store_true", help="renew even if not due; ignore failure backoff")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    parser.add_argument("--no-wait", action="store_true",
                        help="exit 1 at once when another pass of this config is running (default: wait "
                             "up to 10 minutes for it)")


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
    if args.dry_run:  # changes nothing: no need to wait for a running pass
        outcomes = reconciler.run_pass(args.site, force=args.force, dry_run=True)
    else:
        outcomes = locked_pass(reconciler, args.site, force=args.force, wait=not args.no_wait)
    quiet = bool(getattr(args, "quiet", False))  # -q: errors only (cron mails any output)
    failed = [o for o in outcomes if not o.ok]
    waiting = [o for o in outcomes if o.ok and o.backing_off]
    for o in outcomes:
        if args.dry_run:
            print(o.plan.render())
        elif o.ok and not o.backing_off and not quiet:
            print(_summary(o))
    for o in failed:
        print(f"tlsbridge: site {o.site} failed ({o.reason}): {o.error}", file=sys.stderr)
    for o in waiting:
        until = f"{o.waiting_until:%Y-%m-%dT%H:%M:%SZ}" if o.waiting_until else "later"
        print(f"tlsbridge: site={o.site} backing off until {until}: "
              f"{o.last_error or o.plan.decision.message}", file=sys.stderr)
    if cfg.notify.enabled and not args.dry_run:  # after the pass's work; a slow target waits notify.timeout
        from tlsbridge.notify.dispatch import after_renew
        from tlsbridge.status import collect

        now = reconciler.clock.now()
        after_renew(cfg.notify, cfg.state.dir, collect(cfg, reconciler.ports, now), now)
    return 1 if failed or waiting else 0


def locked_pass(reconciler: Reconciler, names: list[str] | None, *, force: bool,
                wait: bool) -> list[SiteOutcome]:
    """One pass under the config's pass lock (adapters/lock.py).

    If another pass holds it, wait for it (bounded, one line on stderr) unless `wait` is False
    (LockBusy: exit 1). After the wait every decision is made from fresh state, so two `renew`s
    of a new site make one order; a `--force` whose certificate the other pass renewed while
    this one waited is satisfied by it (certbot wrote it after this command started: no second
    order for the same request).
    """
    from tlsbridge.adapters.lock import WAIT, LockBusy, PassLock

    lock = PassLock(reconciler.cfg.state.dir)
    asked = time.time()
    waited = False
    if not lock.try_acquire():
        holder = lock.holder()
        if not wait:
            raise LockBusy(f"another pass of this config is running (PID {holder or '?'}, lock "
                           f"{lock.path}); not waiting (--no-wait)")
        print(f"tlsbridge: waiting for the pass of PID {holder or '?'} to finish (up to "
              f"{WAIT / 60:.0f} min; --no-wait fails instead)", file=sys.stderr, flush=True)
        lock.acquire(WAIT)
        waited = True
    try:
        if not (force and waited):
            return reconciler.run_pass(names, force=force)
        sites = list(names or reconciler.cfg.sites)
        done = [n for n in sites if _issued_at(reconciler, n) >= asked]
        for n in done:
            print(f"tlsbridge: site {n} was renewed by the pass we waited for; not forcing another order",
                  file=sys.stderr)
        rest = [n for n in sites if n not in done]
        out = {o.site: o for o in reconciler.run_pass(done, force=False)} if done else {}
        out |= {o.site: o for o in reconciler.run_pass(rest, force=True)} if rest else {}
        return [out[n] for n in sites]
    finally:
        lock.release()


def _issued_at(reconciler: Reconciler, site: str) -> float:
    """When certbot wrote the lineage's current certificate (0 if there is none)."""
    try:
        return os.stat(reconciler.ports.certs.live_dir(site) / "cert.pem").st_mtime
    except OSError:
        return 0.0


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
