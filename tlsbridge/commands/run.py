"""`tlsbridge run`: the long-running sidecar (see tlsbridge/sidecar/loop.py and docs/run.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context

# Loopback on a host; the image sets TLSBRIDGE_LISTEN=0.0.0.0:8400 (its own network namespace).
DEFAULT_LISTEN = "127.0.0.1:8400"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT",
                        default=os.environ.get("TLSBRIDGE_LISTEN") or DEFAULT_LISTEN,
                        help="HTTP endpoint for /healthz, /readyz, /metrics and the status page "
                             f"(default: $TLSBRIDGE_LISTEN or {DEFAULT_LISTEN})")
    parser.add_argument("--token-file", metavar="FILE",
                        default=os.environ.get("TLSBRIDGE_TOKEN_FILE") or None,
                        help="require `Authorization: Bearer <the file's content>` for / and "
                             "/metrics (not /healthz, /readyz); default: $TLSBRIDGE_TOKEN_FILE")
    parser.add_argument("--log-format", choices=("text", "json"),
                        default=os.environ.get("TLSBRIDGE_LOG_FORMAT") or "text",
                        help="logs on stdout: text lines, or one JSON object per line "
                             "(default: $TLSBRIDGE_LOG_FORMAT or text)")
    # Logs of a long-running process go to stdout in the chosen format: set up in run().
    parser.set_defaults(_custom_logging=True)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge import config
    from tlsbridge.cli import setup_logging
    from tlsbridge.clock import clock_from_env
    from tlsbridge.errors import UsageError
    from tlsbridge.sidecar.endpoint import parse_listen
    from tlsbridge.sidecar.logjson import RedactingFilter

    if args.log_format not in ("text", "json"):  # a default from the environment skips argparse's check
        raise UsageError(f"--log-format / $TLSBRIDGE_LOG_FORMAT {args.log_format!r}: expected text or json")
    setup_logging(args.verbose, args.quiet, fmt=args.log_format, stream=sys.stdout)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    host, port = parse_listen(args.listen)
    token = read_token(args.token_file) if args.token_file else None
    cfg = ctx.config()

    from tlsbridge.sidecar.loop import Sidecar

    sidecar = Sidecar(cfg, lambda: config.load(ctx.config_path), clock_from_env(), host=host,
                      port=port, token=token)
    return sidecar.run()


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace dropped). Raises UsageError."""
    from tlsbridge.errors import UsageError

    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"--token-file {path}: must hold one token (printable, no spaces)")
    return token
