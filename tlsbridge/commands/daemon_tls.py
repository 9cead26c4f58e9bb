"""`tlsbridge daemon-tls`: mutual TLS for the Docker engine's TCP socket (port 2376).

Flags override the config's `daemon_tls:` section (a list flag replaces the config's list).
Without -c and without ./tlsbridge.yaml the command runs from flags alone. There is no flag for
a TCP listener without client verification, on purpose.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.daemon_tls.settings import DaemonTlsSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for daemon.json, the drop-in, the CA and the certificates")
    parser.add_argument("--hostname", action="append", metavar="NAME",
                        help="DNS name clients use to reach the engine (repeatable)")
    parser.add_argument("--ip", action="append", metavar="ADDR",
                        help="IP address clients use to reach the engine (repeatable)")
    parser.add_argument("--listen", metavar="ADDR:PORT",
                        help="TCP address dockerd listens on (default 0.0.0.0:2376)")
    parser.add_argument("--client", action="append", metavar="NAME",
                        help="issue a client certificate into DIR/clients/NAME (repeatable)")
    parser.add_argument("--merge", type=Path, metavar="PATH",
                        help="existing daemon.json whose other keys are kept")
    parser.add_argument("--server-cert-site", metavar="SITE",
                        help="serve the site's published certificate instead of a private one")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="the local socket kept in hosts (default /var/run/docker.sock)")
    parser.add_argument("--dockerd", metavar="PATH",
                        help="dockerd for the drop-in's ExecStart (default: found on PATH)")
    parser.add_argument("--ca-dir", type=Path, metavar="DIR",
                        help="keep the CA's private key here instead of in --out (dockerd never "
                             "needs it; an existing one in --out is moved). With "
                             "$TLSBRIDGE_CA_PASSPHRASE set it is stored encrypted")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.clock import SystemClock
    from tlsbridge.daemon_tls.apply import ensure_daemon_tls
    from tlsbridge.render.daemon_json import apply_instructions, client_instructions

    settings = resolve(args, ctx)
    result = ensure_daemon_tls(settings, SystemClock().now())
    print(f"# {settings.out}: {len(result.written)} file(s) written, "
          f"{len(result.unchanged)} unchanged")
    if result.restart_needed:
        print("# dockerd reads these files only when it starts: restart it after installing them")
    print(apply_instructions(daemon_json=str(result.daemon_json), dropin=str(result.dropin),
                             merged=settings.merge is not None))
    for client in result.clients:
        print(client_instructions(client, host=settings.connect_host, port=settings.listen_port))
    return 0


def resolve(args: argparse.Namespace, ctx: Context) -> DaemonTlsSettings:
    """The parsed flags over the config's daemon_tls section (see `resolve_settings`).

    The config is read when -c was given or ./tlsbridge.yaml exists; otherwise flags alone.
    """
    from tlsbridge.daemon_tls.settings import Flags, resolve_settings

    cfg = ctx.config() if ctx.config_given or ctx.config_path.exists() else None
    flags = Flags(**{k: getattr(args, k, None) for k in Flags.__dataclass_fields__})
    return resolve_settings(cfg, flags)
