"""`tlsbridge validate`: load and check the config; silent on success.

Beyond what loading checks, `validate` looks at this environment: every DNS plugin a site uses
must be installed next to certbot (certbot's `certbot.plugins` entry points), and each DNS
credentials file must be a regular file that neither group nor others can read.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tlsbridge.errors import ConfigError

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.config import Config

# Plugins with a tlsbridge install extra (pyproject's optional-dependencies).
EXTRAS = ("rfc2136", "cloudflare", "route53", "digitalocean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, ctx: Context) -> int:
    cfg = ctx.config()
    check_environment(cfg)
    from importlib.util import find_spec  # finds Apprise without importing it

    if cfg.notify.enabled and find_spec("apprise") is None:
        raise ConfigError(cfg.source, "notify.urls", "Apprise is not installed: pip install 'tlsbridge[notify]'")
    return 0


def installed_plugins() -> frozenset[str]:
    """The names of certbot's installed plugins (entry points of group certbot.plugins)."""
    from importlib.metadata import entry_points

    return frozenset(ep.name for ep in entry_points(group="certbot.plugins"))


def check_environment(cfg: Config, plugins: Callable[[], Iterable[str]] = installed_plugins) -> None:
    """Raise ConfigError (exit 2) for a DNS plugin that is not installed or a credentials file
    that is missing, not a regular file, or readable by group or others. Reads no file's content."""
    uses = {(f"sites.{s.name}.challenge" if key in s.challenge_overrides else "challenge", key): s.challenge
            for s in cfg.sites.values() if s.challenge.method == "dns"
            for key in ("dns_plugin", "dns_credentials")}
    if cfg.challenge.method == "dns":
        uses.update({("challenge", key): cfg.challenge for key in ("dns_plugin", "dns_credentials")})
    known: frozenset[str] | None = None
    for (where, key), ch in sorted(uses.items(), key=lambda u: u[0]):
        path = f"{where}.{key}"
        if key == "dns_plugin" and ch.dns_plugin:
            known = frozenset(plugins()) if known is None else known
            if f"dns-{ch.dns_plugin}" not in known:
                raise ConfigError(cfg.source, path, _missing_plugin(ch.dns_plugin))
        elif key == "dns_credentials" and ch.dns_credentials is not None:
            problem = credentials_problem(ch.dns_credentials)
            if problem:
                raise ConfigError(cfg.source, path, problem)


def _missing_plugin(name: str) -> str:
    how = f"pip install certbot-dns-{name}"
    if name in EXTRAS:
        how += f" (or pip install 'tlsbridge[{name}]')"
    return (f"the certbot DNS plugin dns-{name} is not installed in tlsbridge's environment; "
            f"install it: {how}")


def credentials_problem(path: Path) -> str | None:
    """What is wrong with a DNS credentials file, or None. stat() only: never opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o044:
        return (f"{path} is readable by group or others (mode {mode:04o}); it holds DNS secrets: "
                f"chmod 600 {path}")
    return None
