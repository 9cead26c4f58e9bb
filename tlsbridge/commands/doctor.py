"""`tlsbridge doctor`: find what would keep certificates from being served, each with its fix.

One line per finding, `LEVEL site=X: problem. Fix: ...`; exit 1 if any is an error, else 0.
Checks: the DNS plugins and credentials files (as `validate`); each site's published folder
(emptied, incomplete, unreadable); Docker reachable; every site's targets exist; how they mount
certificates (single files and certbot's live/ go stale or dangle; the published folder must be
mounted; containers of another tlsbridge are ignored); the challenge webroot; what every running
target serves against what is published; and the Docker engine's remote-access setup
(daemon_tls_checks).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.cli import Context
    from tlsbridge.config import Config
    from tlsbridge.delivery.served_check import Published
    from tlsbridge.doctor import Finding
    from tlsbridge.targets import ContainerInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-docker", action="store_true", help="skip the checks that need the Docker engine")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.commands.validate import check_environment
    from tlsbridge.delivery.served_check import read_published
    from tlsbridge.doctor import ERROR, INFO, check_sites, config_problem, docker_unreachable, published_problem
    from tlsbridge.errors import ConfigError, DockerError

    cfg = ctx.config()
    findings: list[Finding] = []
    try:
        check_environment(cfg)
    except ConfigError as exc:
        findings.append(config_problem(str(exc)))
    published = {name: read_published(cfg.publish.dir, name) for name in cfg.sites}
    if not args.no_docker:
        from tlsbridge.adapters.docker import DockerAdapter

        docker = DockerAdapter(cfg.docker)
        try:
            containers = docker.containers()
            own = docker.own_container()
            findings += check_sites(cfg, containers, own.mounts if own is not None else None)
            findings += served(cfg, docker, containers, published)
        except DockerError as exc:
            findings.append(docker_unreachable(docker.where, str(exc)))
        finally:
            docker.close()
    findings += [published_problem(name, p.problem) for name, p in published.items() if p.problem]
    findings += engine_findings()
    for f in findings:
        print(f.line())
    errors = sum(f.level == ERROR for f in findings)
    if all(f.level == INFO for f in findings):
        print(f"ok: {len(cfg.sites)} site(s) checked, no problems found")
    return 1 if errors else 0


def served(cfg: Config, docker: DockerAdapter, containers: list[ContainerInfo],
           published: dict[str, Published]) -> list[Finding]:
    """served != published, for every running target of every site with a published leaf."""
    from tlsbridge.delivery.scope import own_scope
    from tlsbridge.delivery.served_check import served_mismatches
    from tlsbridge.doctor import served_problem
    from tlsbridge.targets import resolve

    scope = own_scope(cfg.publish.dir, docker)
    own = docker.own_networks()
    out = []
    for name, site in cfg.sites.items():
        want = published[name].fingerprint
        if want is None:
            continue
        targets = resolve(site, containers, scope.owns).targets
        out += [served_problem(name, p) for p in served_mismatches(site, want, targets, own)]
    return out


def engine_findings() -> list[Finding]:
    """The Docker engine's remote-access setup on this host (daemon.json, systemd drop-in, ufw)."""
    from tlsbridge.clock import SystemClock
    from tlsbridge.daemon_tls.checks import check_host

    return check_host(now=SystemClock().now())
