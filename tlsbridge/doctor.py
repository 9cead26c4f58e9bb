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
from tlsbridge.targets import SITE_LABEL, ContainerInfo, Mount, resolve

ERROR = "error"
WARNING = "warning"
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


def host_path(path: str, own_mounts: Sequence[Mount] | None) -> str | None:
    """Where `path` (as tlsbridge sees it) lives on the Docker host; None if only inside our container.

    On the host (own_mounts None) it is the path itself, symlinks resolved. In a container it is
    the source of the mount that holds it (a bind's host folder or a volume's data folder) plus
    the rest of the path.
    """
    if own_mounts is None:
        return os.path.realpath(path)
    best: Mount | None = None
    for m in own_mounts:
        if _within(path, m.destination) and (best is None or len(m.destination) > len(best.destination)):
            best = m
    if best is None or not best.source:
        return None
    rest = os.path.relpath(path, best.destination)
    return best.source if rest == "." else str(PurePosixPath(best.source) / rest)


def covers(m: Mount, host: str) -> bool:
    """Whether a container mount shows the host path `host` (the same folder or a parent)."""
    return m.type in ("bind", "volume") and bool(m.source) and (
        _within(host, m.source) or _within(host, os.path.realpath(m.source)))


def check_sites(cfg: Config, containers: Sequence[ContainerInfo],
                own_mounts: Sequence[Mount] | None) -> list[Finding]:
    """Findings about every site's targets and how they mount certificates, errors first."""
    publish_host = host_path(str(cfg.publish.dir), own_mounts)
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
        res = resolve(site, containers)
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
    return sorted(out, key=lambda f: f.level != ERROR)


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
        out.append(Finding(WARNING, f"container {c.name} is not running ({c.status or c.state})",
                           "tlsbridge renew starts it after publishing; if it keeps exiting see "
                           f"docker logs {c.name}", site.name))
    return out


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


def _within(path: str, ancestor: str) -> bool:
    a = ancestor.rstrip("/") or "/"
    return path == a or path.startswith(a if a.endswith("/") else a + "/")
