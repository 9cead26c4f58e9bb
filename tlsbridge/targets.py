"""Pure: which containers are a site's reload targets, and how to reach them for verification.

The Docker adapter turns the engine's container list into `ContainerInfo` values; everything
here decides from those values alone (no Docker, no network), so it is table-testable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tlsbridge.config import Site

SITE_LABEL = "tlsbridge.site"  # value: comma-separated site names, or "*" (every site)
_EXIT = re.compile(r"^Exited \((-?\d+)\)")


@dataclass(frozen=True)
class Mount:
    type: str  # bind | volume | tmpfs | ...
    source: str  # host path (bind), the volume's data path (volume)
    destination: str  # path inside the container
    name: str | None = None  # the volume's name
    rw: bool = True


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    state: str  # created | running | paused | restarting | removing | exited | dead
    status: str = ""  # the engine's human text, e.g. "Exited (1) 3 seconds ago"
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, str] = field(default_factory=dict)  # network name -> IPv4 address
    network_mode: str = ""
    mounts: tuple[Mount, ...] = ()
    ports: tuple[int, ...] = ()  # the TCP ports it exposes (inside the container), sorted

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def exit_code(self) -> int | None:
        m = _EXIT.match(self.status)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Resolution:
    """A site's targets; `errors` fail the site, `warnings` are logged."""

    site: str
    targets: tuple[ContainerInfo, ...]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    ignored: tuple[ContainerInfo, ...] = ()  # labelled for the site, but another instance's


def label_lists_site(value: str, site: str) -> bool:
    """Whether a `tlsbridge.site` label value (comma-separated names, or `*`: every site of the
    instance whose certificates the container mounts) includes `site`."""
    names = {part.strip() for part in value.split(",")}
    return site in names or "*" in names


def resolve(site: Site, containers: Sequence[ContainerInfo],
            belongs: Callable[[ContainerInfo], bool] | None = None) -> Resolution:
    """The containers to reload for `site`, in a stable order, each listed once.

    Targets: containers named in `reload`, containers carrying a `label: KEY=VALUE` entry's label,
    and containers labelled `tlsbridge.site` with the site's name in the value. A named container
    that does not exist is an error; a label that matches nothing is a warning. Containers found
    through a label are kept only if `belongs` says they are this instance's (delivery.scope);
    the others are `ignored`. Named containers are always kept.
    """
    by_name = {c.name: c for c in containers}
    found: dict[str, ContainerInfo] = {}
    ignored: dict[str, ContainerInfo] = {}

    def labelled(c: ContainerInfo) -> None:
        if belongs is None or c.id in found or belongs(c):
            found.setdefault(c.id, c)
        else:
            ignored.setdefault(c.id, c)
    errors: list[str] = []
    warnings: list[str] = []
    for i, entry in enumerate(site.reload):
        if entry.container is not None:
            c = by_name.get(entry.container)
            if c is None:
                errors.append(f"container {entry.container} (reload[{i}]) does not exist; create it "
                              f"or fix sites.{site.name}.reload[{i}].container")
            else:
                found.setdefault(c.id, c)
        elif entry.label is not None:
            key, _, value = entry.label.partition("=")
            matched = [c for c in containers if c.labels.get(key) == value]
            if not matched:
                warnings.append(f"no container has the label {entry.label} (reload[{i}])")
            for c in matched:
                labelled(c)
    for c in containers:
        if SITE_LABEL in c.labels and label_lists_site(c.labels[SITE_LABEL], site.name):
            labelled(c)
    targets = tuple(sorted(found.values(), key=lambda c: c.name))
    others = tuple(sorted((c for i, c in ignored.items() if i not in found), key=lambda c: c.name))
    return Resolution(site.name, targets, tuple(errors), tuple(warnings), others)


def probe_address(container: ContainerInfo, own_networks: frozenset[str] | None) -> str | None:
    """Where to open TLS connections to `container`, or None when we cannot reach it.

    `own_networks`: the networks of the container tlsbridge runs in, None when it runs on the
    host (the host reaches every bridge network's addresses). Host-network containers are
    reached on 127.0.0.1 from the host.
    """
    if container.network_mode == "host":
        return "127.0.0.1" if own_networks is None or "host" in own_networks else None
    for net, ip in sorted(container.networks.items()):
        if ip and (own_networks is None or net in own_networks):
            return ip
    return None


def sni_for(site: Site) -> str:
    """The server name to ask for when probing: the first domain, a wildcard made concrete."""
    domain = site.domains[0]
    return "tlsbridge-verify." + domain[2:] if domain.startswith("*.") else domain


def start_decision(c: ContainerInfo) -> tuple[str, str]:
    """What to do with a target that is not running: ("start" | "skip" | "wait" | "fail", why).

    Created containers and containers that exited with an error (nginx exits with 1 when its
    certificate does not exist yet) are started. One that exited with 0 was stopped on purpose
    (`docker stop` makes nginx exit cleanly): starting it would overrule a person, so it is
    skipped with a warning. A restarting container is restarted by the engine itself: wait.
    """
    if c.state == "created":
        return "start", ""
    if c.state == "exited":
        if c.exit_code == 0:
            return "skip", f"container {c.name} was stopped on purpose (exit code 0); not starting it"
        return "start", ""
    if c.state == "restarting":
        return "wait", ""
    return "fail", f"container {c.name} is {c.state or 'in an unknown state'}; start or unpause it"
