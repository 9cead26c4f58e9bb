"""Argument parsing, wiring, exit codes and logging set-up. No logic lives here.

Each subcommand is a module in `tlsbridge.commands` with `HELP`, `add_arguments(parser)` and
`run(args, ctx) -> int`; modules are imported only when their command runs, so `validate` never
pays for docker, certbot or APScheduler imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tlsbridge import __version__
from tlsbridge.errors import TlsbridgeError

if TYPE_CHECKING:
    from tlsbridge.config import Config

logger = logging.getLogger("tlsbridge")

# name -> (module, one-line help). Help strings live here so `--help` imports no command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("tlsbridge.commands.validate", "check the config; print nothing on success"),
    "renew": ("tlsbridge.commands.renew", "one pass: issue or renew what is due, publish, reload"),
    "status": ("tlsbridge.commands.status", "show every site's certificate from local files"),
    "run": ("tlsbridge.commands.run", "the sidecar: keep certificates fresh; /healthz /readyz /metrics /"),
    "compose": ("tlsbridge.commands.compose", "write a compose file and nginx snippets for the sites"),
    "daemon-tls": ("tlsbridge.commands.daemon_tls", "mutual TLS for the Docker engine on :2376"),
    "doctor": ("tlsbridge.commands.doctor", "find what keeps certificates from being served, with fixes"),
    "systemd": ("tlsbridge.commands.systemd", "write the renew service and timer units for this installation"),
    "notify": ("tlsbridge.commands.notify", "notifications: `notify --test` sends a test message to every target"),
}


@dataclass
class Context:
    """What every command gets: the config path and a lazily loaded config."""

    config_path: Path
    config_given: bool
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        if self._config is None:
            from tlsbridge import config

            self._config = config.load(self.config_path)
        return self._config


# Options of `tlsbridge` itself: they go before the command (`tlsbridge -c FILE renew`).
GLOBAL_OPTIONS = ("-c", "--config", "-v", "--verbose", "-q", "--quiet")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """argparse's error (usage, exit 2), plus a hint when a global option came after the command."""
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            misplaced = [w for w in words if w.split("=", 1)[0] in GLOBAL_OPTIONS]
            if misplaced:
                message += (f" ({misplaced[0].split('=', 1)[0]} is an option of tlsbridge itself: "
                            "put it before the command, e.g. tlsbridge -c tlsbridge.yaml renew)")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tlsbridge",
        description="ACME certificates for Docker-run nginx: issue with certbot, publish "
        "atomically, reload after a config test, verify what is served.",
    )
    parser.add_argument("-c", "--config", type=Path,
                        help="config file (default: $TLSBRIDGE_CONFIG or ./tlsbridge.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"tlsbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Each command declares its arguments; importing it here is cheap (no heavy imports at top).
        importlib.import_module(module).add_arguments(p)
    return parser


def setup_logging(verbose: bool, quiet: bool, fmt: str = "text", stream: object = None) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        from tlsbridge.sidecar.logjson import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tlsbridge").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    from tlsbridge import config as _config_mod  # noqa: F401  (cheap; catches broken installs early)

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_custom_logging", False):
        setup_logging(args.verbose, args.quiet)
    ctx = Context(config_path=args.config or _config_mod.default_config_path(), config_given=args.config is not None)
    try:
        return int(importlib.import_module(args._module).run(args, ctx))
    except TlsbridgeError as exc:
        print(f"tlsbridge: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tlsbridge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlsbridge status | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # an unexpected error: say so, keep the traceback in the debug log
        logger.debug("unexpected error", exc_info=True)
        print(f"tlsbridge: unexpected error: {exc.__class__.__name__}: {exc} (run with -v for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
