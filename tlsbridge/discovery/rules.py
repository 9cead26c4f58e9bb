"""Pure rules of discovery: app containers' labels -> sites, conflicts, and the grace period.

An app container opts in with labels (README "Discovery"):

    tlsbridge.domains   comma-separated names (required; a wildcard only with the dns challenge)
    tlsbridge.port      the port the app listens on inside the container (default: its single
                        exposed port, else 80)
    tlsbridge.name      the site's name (default: the first domain, `*.` written as `wildcard.`)
    tlsbridge.hsts      true/false (default false): Strict-Transport-Security for two years
    tlsbridge.scheme    http/https (default http): how nginx talks to the app

Nothing here does I/O: the adapter (discovery.apply) lists containers and acts on the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tlsbridge import names
from tlsbridge.config import ChallengeConfig, ReloadTarget, Site
from tlsbridge.render.discovered import NGINX_DIR as NGINX_DIR
from tlsbridge.targets import ContainerInfo, Mount

PREFIX = "tlsbridge."
DOMAINS = "tlsbridge.domains"
PORT = "tlsbridge.port"
NAME = "tlsbridge.name"
HSTS = "tlsbridge.hsts"
SCHEME = "tlsbridge.scheme"
LABELS = (DOMAINS, PORT, NAME, HSTS, SCHEME)
NGINX_LABEL = "tlsbridge.discovery"  # on the generated nginx that includes the discovered blocks
# Up on purpose or about to be: a restarting app keeps its block (no flapping, no new order).
PRESENT = ("running", "restarting", "paused")
# Docker's networks without name resolution between containers: sharing them is not enough.
_NO_DNS = frozenset({"bridge", "host", "none"})
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Skip:
    """A labelled container that is not served, and why (one log line, one status page row)."""

    container: str
    label: str
    problem: str

    def __str__(self) -> str:
        return f"container {self.container}: label {self.label}: {self.problem}; skipped"


def is_app(c: ContainerInfo) -> bool:
    """Whether a container opts in (has tlsbridge.domains) and is up or coming back up."""
    return DOMAINS in c.labels and c.state in PRESENT


def shared_networks(app: ContainerInfo, nginx: ContainerInfo) -> frozenset[str]:
    """The networks where nginx can reach the app by name (Docker's DNS: user-defined ones)."""
    return frozenset(app.networks) & frozenset(nginx.networks) - _NO_DNS


def is_ours(app: ContainerInfo, nginxes: Sequence[ContainerInfo]) -> bool:
    """Scope: an app is this instance's when it shares a network with one of our nginx."""
    return any(shared_networks(app, n) for n in nginxes)


def is_our_nginx(c: ContainerInfo, folder: Path, own_mount: Mount | None) -> bool:
    """Whether `c` is a discovery nginx of this instance: labelled tlsbridge.discovery and
    mounting our discovery.dir (`own_mount`: how our own container mounts it, None on a host)."""
    if NGINX_LABEL not in c.labels:
        return False
    for m in c.mounts:
        if m.destination != NGINX_DIR:
            continue
        if own_mount is None:
            if m.type == "bind" and Path(m.source) == folder:
                return True
        elif (m.name or m.source) == (own_mount.name or own_mount.source):
            return True
    return False


def default_name(domain: str) -> str:
    """A site name from a domain: lowercase, `*.` as `wildcard.`, at most 64 characters."""
    text = domain.lower().replace("*.", "wildcard.", 1)
    return text[:64].rstrip(".-_") or "site"


def site_of(app: ContainerInfo, challenge: ChallengeConfig,
            nginx: Sequence[ReloadTarget]) -> Site | Skip:
    """The site an app's labels declare, or why it cannot be served (the first problem)."""
    labels = app.labels
    raw = [d.strip() for d in labels.get(DOMAINS, "").split(",") if d.strip()]
    if not raw:
        return Skip(app.name, DOMAINS, "no domain names (comma-separated, e.g. app.example.com)")
    if len(raw) > names.MAX_NAMES:
        return Skip(app.name, DOMAINS, f"{len(raw)} names: a certificate holds at most {names.MAX_NAMES}")
    domains: list[str] = []
    for d in raw:
        if d.startswith("*.") and challenge.method != "dns":
            return Skip(app.name, DOMAINS, f"{d!r}: a wildcard needs challenge.method dns "
                                           f"(this instance uses {challenge.method})")
        try:
            ascii_name = names.dns_name(d, wildcard=True, dotted=True)
        except ValueError as exc:
            return Skip(app.name, DOMAINS, f"{d!r}: {exc}")
        if ascii_name in domains:
            return Skip(app.name, DOMAINS, f"{ascii_name} is listed twice")
        domains.append(ascii_name)
    name = labels.get(NAME, "").strip() or default_name(domains[0])
    if not names.is_site_name(name):
        return Skip(app.name, NAME, f"{name!r}: {names.SITE_NAME_RULE}")
    port_text = labels.get(PORT, "").strip()
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            return Skip(app.name, PORT, f"{port_text!r} is not a port number (1-65535)")
        port = int(port_text)
    else:
        port = app.ports[0] if len(app.ports) == 1 else 80
    hsts_text = labels.get(HSTS, "false").strip().lower()
    if hsts_text not in _TRUE + _FALSE:
        return Skip(app.name, HSTS, f"{hsts_text!r}: expected true or false")
    scheme = labels.get(SCHEME, "http").strip().lower()
    if scheme not in ("http", "https"):
        return Skip(app.name, SCHEME, f"{scheme!r}: expected http or https")
    return Site(name=name, domains=tuple(domains), reload=tuple(nginx),
                upstream=f"{scheme}://{app.name}:{port}", hsts=hsts_text in _TRUE,
                challenge=challenge, discovered=app.name)


@dataclass(frozen=True)
class Found:
    sites: Mapping[str, Site]  # site name -> site, in a stable order
    skips: tuple[Skip, ...]


def discover(apps: Sequence[ContainerInfo], yaml_sites: Mapping[str, Site], challenge: ChallengeConfig,
             nginx: Sequence[ReloadTarget], incumbents: Mapping[str, str] | None = None) -> Found:
    """The sites of `apps` (our labelled containers), with the containers that cannot be served.

    Conflicts skip the newcomer: a name or domain of a YAML site always wins; between two apps,
    the one that already served the site (`incumbents`: site -> container name) wins, else the
    first by container name. A second container with the very same domains and name (a replica)
    is not a conflict: the first one is served.
    """
    incumbents = incumbents or {}
    yaml_domains = {d: s.name for s in yaml_sites.values() for d in s.domains}
    ordered = sorted(apps, key=lambda c: (incumbents.get(_label_name(c)) != c.name, c.name))
    sites: dict[str, Site] = {}
    owner: dict[str, str] = {}  # domain -> site
    skips: list[Skip] = []
    for app in ordered:
        got = site_of(app, challenge, nginx)
        if isinstance(got, Skip):
            skips.append(got)
            continue
        label = NAME if NAME in app.labels else DOMAINS
        if got.name in yaml_sites:
            skips.append(Skip(app.name, label, f"site {got.name} is already a site in the config file"))
            continue
        if got.name in sites:
            other = sites[got.name]
            if other.domains != got.domains:
                skips.append(Skip(app.name, label, f"site {got.name} is already declared by container "
                                                   f"{other.discovered} with other domains"))
            continue
        clash = next((d for d in got.domains if d in yaml_domains or d in owner), None)
        if clash is not None:
            where = (f"config site {yaml_domains[clash]}" if clash in yaml_domains
                     else f"site {owner[clash]} of container {sites[owner[clash]].discovered}")
            skips.append(Skip(app.name, DOMAINS, f"{clash} is already a domain of {where}"))
            continue
        sites[got.name] = got
        owner.update((d, got.name) for d in got.domains)
    return Found(dict(sorted(sites.items())), tuple(sorted(skips, key=lambda s: s.container)))


def _label_name(c: ContainerInfo) -> str:
    first = c.labels.get(DOMAINS, "").split(",")[0].strip()
    return c.labels.get(NAME, "").strip() or default_name(first)


@dataclass(frozen=True)
class Grace:
    """Server blocks to keep or remove, and when to look again."""

    gone_since: Mapping[str, datetime]  # sites whose app is gone, kept for now
    remove: frozenset[str]
    wake_at: datetime | None  # the next removal due


def grace(served: set[str] | frozenset[str], present: set[str] | frozenset[str],
          gone_since: Mapping[str, datetime], now: datetime, period: timedelta) -> Grace:
    """Which blocks of apps that went away to remove now (`served`: sites with a block; `present`:
    sites an app declares now). A block stays `period` after its app was first seen gone."""
    kept: dict[str, datetime] = {}
    remove: set[str] = set()
    for site in sorted(served - present):
        since = gone_since.get(site, now)
        if now - since >= period:
            remove.add(site)
        else:
            kept[site] = since
    wake = min((t + period for t in kept.values()), default=None)
    return Grace(kept, frozenset(remove), wake)
