"""Pure checks for `tlsbridge doctor`: how each site's nginx containers see the certificates.

Input: the config, the engine's container list and the mounts of tlsbridge's own container (None
on the host); output: findings, each with the fix in one line. No Docker, no I/O besides
`os.path.realpath` on host paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from tlsbridge.config import Config, Site
from tlsbridge.delivery.scope import Scope, foreign_mount, host_path, within
from tlsbridge.targets import SITE_LABEL, ContainerInfo, Mount, resolve, start_decision

__all__ = ["ERROR", "INFO", "WARNING", "Finding", "check_sites", "covers", "host_path"]

ERROR = "error"
WARNING = "warning"
INFO = "info"  # not a problem: printed, never changes the exit code
_CERT_SUFFIXES = (".pem", ".crt", ".cer", ".key")
IN_CONTAINER = "/etc/tlsbridge/certs"  # the mount point the docs and generated snippets use


@dataclass(frozen=True)
class Finding:
    """One thing `doctor` found (about a site, the host or the engine), with its fix."""

    level: str  # ERROR | WARNING
    problem: str
    fix: str  # one line
    site: str | None = None

    def line(self) -> str:
        return f"{self.level.upper()} site={self.site or '-'}: {self.problem.rstrip('.')}. Fix: {self.fix}"

    def __str__(self) -> str:
        return f"{self.level}: {self.problem}; fix: {self.fix}"


def covers(m: Mount, host: str) -> bool:
    """Whether a container mount shows the host path `host` (the same folder or a parent)."""
    return m.type in ("bind", "volume") and bool(m.source) and (
        _within(host, m.source) or _within(host, os.path.realpath(m.source)))


def check_sites(cfg: Config, containers: Sequence[ContainerInfo],
                own_mounts: Sequence[Mount] | None) -> list[Finding]:
    """Findings about every site's targets and how they mount certificates, errors first.

    Containers labelled for a site that do not mount this instance's published folder are not
    its targets (delivery.scope): reported as ignored, never advised to mount our certificates.
    """
    publish_host = host_path(str(cfg.publish.dir), own_mounts)
    scope = Scope(publish_host)
    certbot_host = host_path(str(cfg.certbot.config_dir), own_mounts)
    out: list[Finding] = []
    if publish_host is None:
        out.append(Finding(
            ERROR, f"publish.dir {cfg.publish.dir} is inside tlsbridge's own container, on no volume "
            "or bind mount, so no nginx container can see it",
            f"mount a volume at {cfg.publish.dir} in tlsbridge's container and the same volume "
            f"read-only in nginx's (e.g. at {IN_CONTAINER})"))
    webroot_checked: set[tuple[str, str]] = set()
    for site in cfg.sites.values():
        res = resolve(site, containers, scope.owns)
        out += [_ignored(site, c, cfg) for c in res.ignored]
        for e in res.errors:  # "<problem>; <what to do>"
            problem, _, fix = e.partition("; ")
            out.append(Finding(ERROR, problem, fix or "create that container, or correct the config",
                               site.name))
        out += [Finding(WARNING, w, "label the nginx container with it, or remove the entry", site.name)
                for w in res.warnings]
        if not res.targets and not res.errors:
            out.append(Finding(
                WARNING, "no containers to reload: a new certificate is served only when something "
                "else reloads nginx", f"add reload: [{{container: NAME}}] to the site or label the "
                f"nginx container {SITE_LABEL}={site.name}", site.name))
        ch = site.challenge  # the site's own: a webroot site beside a dns one
        webroot = host_path(str(ch.webroot), own_mounts) if ch.method == "webroot" else None
        for c in res.targets:
            out += _target(site, c, cfg, publish_host, certbot_host)
            if webroot and (c.id, webroot) not in webroot_checked:
                webroot_checked.add((c.id, webroot))
                if not any(covers(m, webroot) for m in c.mounts):
                    out.append(Finding(
                        WARNING, f"container {c.name} does not mount the challenge webroot "
                        f"{ch.webroot}, so it cannot answer HTTP-01 (fine if another server does)",
                        f"mount it read-only (e.g. -v {ch.webroot}:/var/www/acme:ro) and serve "
                        "/.well-known/acme-challenge/ from it", site.name))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(out, key=lambda f: order.get(f.level, 3))


def _ignored(site: Site, c: ContainerInfo, cfg: Config) -> Finding:
    m = foreign_mount(c)
    what = f"{m.name or m.source} at {m.destination}" if m is not None else "another folder"
    return Finding(INFO, f"container {c.name} is labelled for this site but ignored: it belongs to "
                   f"another tlsbridge (mounts {what}, not {cfg.publish.dir})",
                   "nothing to do, unless it should serve this tlsbridge's certificates: then mount "
                   f"{cfg.publish.dir} (or its volume) instead", site.name)


def _target(site: Site, c: ContainerInfo, cfg: Config, publish_host: str | None,
            certbot_host: str | None) -> list[Finding]:
    out: list[Finding] = []
    publish_fix = (f"mount the folder {cfg.publish.dir} read-only instead "
                   f"(e.g. -v {cfg.publish.dir}:{IN_CONTAINER}:ro) and use "
                   f"{IN_CONTAINER}/{site.name}/fullchain.pem and privkey.pem")
    for m in c.mounts:
        if m.type != "bind":
            continue
        if m.source.endswith(_CERT_SUFFIXES):
            out.append(Finding(
                ERROR, f"container {c.name} bind-mounts the single file {m.source} at {m.destination}: "
                "it goes stale after renewal (the mount pins the file it found at start)",
                publish_fix, site.name))
        elif certbot_host and _is_live(m.source, certbot_host):
            out.append(Finding(
                ERROR, f"container {c.name} mounts certbot's {m.source}: its files are symlinks into "
                "../archive/ that dangle inside the container", publish_fix, site.name))
        elif certbot_host and _within(certbot_host, m.source) and not (
                publish_host and _within(publish_host, m.source)):
            out.append(Finding(
                WARNING, f"container {c.name} reads certbot's tree {m.source} directly, bypassing the "
                "atomic publication and the bootstrap placeholder", publish_fix, site.name))
    if publish_host is not None:
        site_host = str(PurePosixPath(publish_host) / site.name)
        if not any(covers(m, site_host) for m in c.mounts):
            out.append(Finding(
                ERROR, f"container {c.name} does not mount the published folder "
                f"{cfg.publish.dir / site.name} (nor a parent), so it cannot see the certificates "
                "tlsbridge publishes",
                f"add -v {cfg.publish.dir}:{IN_CONTAINER}:ro (or the volume holding it) and use "
                f"{IN_CONTAINER}/{site.name}/fullchain.pem and privkey.pem", site.name))
    if not c.running:
        action, _ = start_decision(c)
        fix = (f"tlsbridge renew starts it (before asking the CA when it answers the webroot "
               f"challenge); if it keeps exiting see docker logs {c.name}" if action == "start" else
               f"it was stopped on purpose, so renew leaves it alone (and fails the site before "
               f"asking the CA when it answers the webroot challenge): docker start {c.name}"
               if action == "skip" else f"docker start {c.name}; see docker logs {c.name}")
        out.append(Finding(WARNING, f"container {c.name} is not running ({c.status or c.state})",
                           fix, site.name))
    return out


def published_problem(site: str, problem: str) -> Finding:
    return Finding(ERROR, f"{problem}: nginx fails its config test (and cannot start) on it",
                   f"run tlsbridge renew --site {site} (it publishes certbot's certificate again, "
                   "or a placeholder) and check what else writes into that folder", site)


def served_problem(site: str, problem: str) -> Finding:
    return Finding(ERROR, problem, f"run tlsbridge renew --site {site} (it reloads and verifies "
                   "without asking the CA); if it persists, point ssl_certificate at "
                   f"{IN_CONTAINER}/{site}/fullchain.pem and check server_name", site)


def config_problem(problem: str) -> Finding:
    return Finding(ERROR, problem, "see tlsbridge validate; install the plugin or fix the file")


def docker_unreachable(where: str, problem: str) -> Finding:
    return Finding(ERROR, f"Docker is not reachable at {where}: {problem}",
                   "start dockerd, or set docker.host or DOCKER_HOST (for tcp://HOST:2376 also "
                   "DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)")


def _is_live(source: str, certbot_host: str) -> bool:
    live = str(PurePosixPath(certbot_host) / "live")
    if _within(source, live) or _within(os.path.realpath(source), live):
        return True
    parts = PurePosixPath(source).parts  # certbot trees elsewhere: .../letsencrypt/live[/name]
    return "live" in parts and "letsencrypt" in parts[: parts.index("live")]


_within = within
