"""`tlsbridge doctor`: find what would keep certificates from being served, each with its fix.

One line per finding, `LEVEL site=X: problem. Fix: ...`; exit 1 if any is an error, else 0.
Checks: Docker reachable; every site's targets exist; how they mount certificates (single files
and certbot's live/ go stale or dangle; the published folder must be mounted); the challenge
webroot; and the Docker engine's remote-access setup (daemon_tls_checks).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.doctor import Finding


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-docker", action="store_true", help="skip the checks that need the Docker engine")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.doctor import ERROR, check_sites, docker_unreachable
    from tlsbridge.errors import DockerError

    cfg = ctx.config()
    findings: list[Finding] = []
    if not args.no_docker:
        from tlsbridge.adapters.docker import DockerAdapter

        docker = DockerAdapter(cfg.docker)
        try:
            containers = docker.containers()
            own = docker.own_container()
            findings += check_sites(cfg, containers, own.mounts if own is not None else None)
        except DockerError as exc:
            findings.append(docker_unreachable(docker.where, str(exc)))
        finally:
            docker.close()
    findings += engine_findings()
    for f in findings:
        print(f.line())
    errors = sum(f.level == ERROR for f in findings)
    if not findings:
        print(f"ok: {len(cfg.sites)} site(s) checked, no problems found")
    return 1 if errors else 0


def engine_findings() -> list[Finding]:
    """The Docker engine's remote-access setup on this host (daemon.json, systemd drop-in, ufw)."""
    from tlsbridge.clock import SystemClock
    from tlsbridge.daemon_tls.checks import check_host

    return check_host(now=SystemClock().now())
