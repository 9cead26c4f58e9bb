"""`tlsbridge systemd -o DIR`: write the renew service and timer for this installation.

ExecStart names the tlsbridge executable of the environment this command runs from (a pipx or
venv install included) and the config file as an absolute path, so the units work wherever
tlsbridge was installed. The config is loaded first: a unit pointing at a broken config is not
written. Every problem is reported (exit 2) before the first byte is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tlsbridge.errors import ConfigError, TlsbridgeError, UsageError

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.config import Config

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", type=Path, metavar="DIR", required=True,
                        help="write tlsbridge-renew.service and tlsbridge-renew.timer into this "
                             "folder, e.g. /etc/systemd/system")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.adapters import files
    from tlsbridge.render import systemd

    out = Path(os.path.abspath(args.out))
    if not out.is_dir():
        raise UsageError(f"-o {args.out}: {'not a folder' if out.exists() else 'folder does not exist'}")
    executable = find_executable()
    problem = systemd.plain_path_problem(executable)
    if problem:
        raise UsageError(f"the tlsbridge executable {problem}; install it elsewhere")
    cfg = ctx.config()
    config_path = os.path.abspath(ctx.config_path)
    problem = systemd.plain_path_problem(config_path)
    if problem:
        raise UsageError(f"-c: the config path {problem}")
    units = {
        systemd.SERVICE: systemd.render_service(executable, config_path, writable_dirs(cfg)),
        systemd.TIMER: systemd.render_timer(),
    }
    for name, text in units.items():
        try:
            files.write_atomic(out / name, text.encode(), 0o644)
        except OSError as exc:
            raise TlsbridgeError(f"cannot write {out / name}: {exc}") from exc
        logger.info("wrote %s", out / name)
    logger.info("next: systemctl daemon-reload && systemctl enable --now %s", systemd.TIMER)
    return 0


def find_executable() -> str:
    """The `tlsbridge` script of the running installation: next to sys.executable (a venv's or
    pipx's bin folder; not resolved, so the venv stays the one used), else on PATH."""
    beside = Path(sys.executable).parent / "tlsbridge"
    if beside.is_file() and os.access(beside, os.X_OK):
        return os.path.abspath(beside)
    found = shutil.which("tlsbridge")
    if found:
        return os.path.abspath(found)
    raise UsageError(f"cannot find the tlsbridge executable (not next to {sys.executable}, "
                     "not on PATH): run this command as the installed `tlsbridge`")


def writable_dirs(cfg: Config) -> list[str]:
    """The folders a renew writes to, absolute; each must be a plain path (ConfigError)."""
    from tlsbridge.render.systemd import plain_path_problem

    keys = {
        "certbot.config_dir": cfg.certbot.config_dir,
        "certbot.work_dir": cfg.certbot.work_dir,
        "certbot.logs_dir": cfg.certbot.logs_dir,
        "challenge.webroot": cfg.challenge.webroot,
        "publish.dir": cfg.publish.dir,
        "state.dir": cfg.state.dir,
    }
    out = []
    for key, path in keys.items():
        absolute = os.path.abspath(path)
        problem = plain_path_problem(absolute)
        if problem:
            raise ConfigError(cfg.source, key, f"{problem}; the systemd unit cannot name it")
        out.append(absolute)
    return out
