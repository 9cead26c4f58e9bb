"""Pure: certificate delivery to Docker Swarm services, decided from plain values.

On Swarm, nginx runs as a service whose tasks may sit on any node, so a host folder and a
SIGHUP through one engine do not reach them. The Swarm-native way is a secret: tlsbridge puts
each certificate version into immutable secrets and updates the services that use them, which
is a rolling update (new tasks start with the new files, old tasks stop; with `failure_action:
rollback` a task that fails to start brings the previous version back).

Secrets of a site, all labelled `tlsbridge.site`, `tlsbridge.file`, `tlsbridge.fingerprint`:

    tlsbridge-<site>-fullchain.pem / -privkey.pem          the stable pair ("stable": true).
        What a stack file references (external). tlsbridge re-creates it with every newly
        delivered certificate as soon as no service runs on it any more, so a later
        `docker stack deploy` of an unchanged stack file brings the newest certificate along.
    tlsbridge-<site>-<sha256[:12]>-fullchain.pem / ...     one pair per certificate version.
        A renewal creates a new pair and moves the services onto it (the stable pair cannot be
        replaced while a service uses it: secrets are immutable and in-use ones cannot go).

This module names them, plans each service's new secret list, picks what may be pruned, reads
a rolling update's status and tells where to probe the served certificate. No Docker, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tlsbridge.names import HTTPS_PORT
from tlsbridge.render.nginx import CERTS_DIR
from tlsbridge.targets import SITE_LABEL, label_lists_site

FILE_LABEL = "tlsbridge.file"
FINGERPRINT_LABEL = "tlsbridge.fingerprint"
STABLE_LABEL = "tlsbridge.stable"
# The instance a secret belongs to: the stack name a generated stack file carries (on the
# tlsbridge service's container and on every secret it names). Absent: a single instance per
# engine (tlsbridge on a host, or a stack file generated before instances had names).
INSTANCE_LABEL = "tlsbridge.stack"
FILES = ("fullchain.pem", "privkey.pem")
MODES = {"fullchain.pem": 0o444, "privkey.pem": 0o400}  # nginx's master reads the key as root
NAME_MAX = 64  # Swarm's limit for object names
SERVICE_LABEL = "com.docker.swarm.service.id"  # on every task container
STALL_AFTER = 10.0  # seconds a task may wait for a node before the update counts as stuck
_PREFIX = "tlsbridge-"


@dataclass(frozen=True)
class SecretInfo:
    """A tlsbridge secret in the engine (its data cannot be read back)."""

    id: str
    name: str
    site: str
    file: str  # fullchain.pem | privkey.pem
    fingerprint: str  # sha256 hex of the certificate's leaf
    stable: bool = False
    created: str = ""  # the engine's CreatedAt (RFC 3339), for ordering
    instance: str | None = None  # INSTANCE_LABEL


@dataclass(frozen=True)
class SecretRef:
    """One entry of a service's ContainerSpec.Secrets."""

    secret_id: str
    secret_name: str
    target: str  # File.Name: an absolute path, or a name under /run/secrets
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True)
class PortInfo:
    target: int
    published: int
    mode: str  # ingress (the routing mesh) | host


@dataclass(frozen=True)
class UpdateStatus:
    state: str = ""  # "" (never updated) | updating | paused | completed | rollback_started |
    #                  rollback_paused | rollback_completed
    started: str = ""
    message: str = ""


@dataclass(frozen=True)
class ServiceInfo:
    id: str
    name: str
    version: int
    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()
    previous_secrets: tuple[SecretRef, ...] = ()  # PreviousSpec: what a rollback returns to
    mode: str = "replicated"  # replicated | global
    replicas: int | None = 1
    order: str = "stop-first"
    failure_action: str = "pause"
    monitor: float = 5.0  # seconds
    delay: float = 0.0
    ports: tuple[PortInfo, ...] = ()
    update: UpdateStatus = UpdateStatus()


@dataclass(frozen=True)
class TaskInfo:
    id: str
    node_id: str
    desired: str  # running | shutdown | ...
    state: str  # new | pending | ... | running | failed | rejected | shutdown | ...
    err: str = ""
    message: str = ""
    exit_code: int | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)  # network name -> IPv4
    timestamp: str = ""  # when it reached `state`
    container_id: str = ""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    label: str  # for messages: "task web_nginx.1 (10.0.1.5:443)"


# -- names -----------------------------------------------------------------------------------------
def secret_name(site: str, file: str, fingerprint: str | None = None, instance: str | None = None) -> str:
    """`[<instance>_]tlsbridge-<site>[-<fp12>]-<file>`, shortened with a hash past 64 chars
    (of the site name; with an instance, of both)."""
    version = f"-{fingerprint[:12]}" if fingerprint else ""
    head = f"{instance}_{_PREFIX}{site}" if instance else f"{_PREFIX}{site}"
    name = f"{head}{version}-{file}"
    if len(name) <= NAME_MAX:
        return name
    if not instance:
        tag = hashlib.sha256(site.encode()).hexdigest()[:8]
        room = NAME_MAX - len(f"{_PREFIX}-{tag}{version}-{file}")
        return f"{_PREFIX}{site[:room].rstrip('.-_')}-{tag}{version}-{file}"
    tag = hashlib.sha256(f"{instance}/{site}".encode()).hexdigest()[:8]
    room = NAME_MAX - len(f"-{tag}{version}-{file}")
    return f"{head[:room].rstrip('.-_')}-{tag}{version}-{file}"


def secret_labels(site: str, file: str, fingerprint: str, *, stable: bool,
                  instance: str | None = None) -> dict[str, str]:
    labels = {SITE_LABEL: site, FILE_LABEL: file, FINGERPRINT_LABEL: fingerprint}
    if stable:
        labels[STABLE_LABEL] = "true"
    if instance:
        labels[INSTANCE_LABEL] = instance
    return labels


def of_instance(secrets: Iterable[SecretInfo], instance: str | None) -> list[SecretInfo]:
    """The secrets of one instance: labelled with it, or (instance None) labelled with none."""
    return [s for s in secrets if s.instance == (instance or None)]


def default_target(site: str, file: str) -> str:
    """Where a secret lands when the service has none of the site's yet: the layout of
    `tlsbridge compose` (and of its nginx snippets), whatever delivery path is used."""
    return f"{CERTS_DIR}/{site}/{file}"


def serves_site(service: ServiceInfo, site: str) -> bool:
    """Whether the service's own (service-level) `tlsbridge.site` label lists the site."""
    value = service.labels.get(SITE_LABEL)
    return value is not None and label_lists_site(value, site)


# -- planning ------------------------------------------------------------------------------------
def plan_refs(service: ServiceInfo, site: str, known: Mapping[str, SecretInfo],
              want: Mapping[str, SecretInfo], refs: Sequence[SecretRef] | None = None,
              ) -> tuple[SecretRef, ...] | None:
    """The service's secret list with the site's certificate files pointing at `want`
    (file name -> secret); None when it already uses exactly those versions.

    `refs`: start from these instead of the service's current list (to combine the changes of
    several sites in one update). Entries of other sites and foreign secrets stay as they are;
    the site's entries keep their target path, owner and mode; a file the service does not
    receive yet is added at `default_target` with MODES.
    """
    current = tuple(service.secrets if refs is None else refs)
    mine = [known[r.secret_id] for r in current
            if r.secret_id in known and known[r.secret_id].site == site]
    if {s.file for s in mine} >= set(FILES) and \
            all(s.file in want and s.fingerprint == want[s.file].fingerprint for s in mine):
        return None
    out: list[SecretRef] = []
    placed: set[str] = set()
    for r in current:
        s = known.get(r.secret_id)
        if s is None or s.site != site:
            out.append(r)
        elif s.file in want:
            new = want[s.file]
            out.append(SecretRef(new.id, new.name, r.target, r.uid, r.gid, r.mode))
            placed.add(s.file)
        # a site secret for a file we no longer deliver: dropped
    for f in FILES:
        if f not in placed:
            new = want[f]
            out.append(SecretRef(new.id, new.name, default_target(site, f), mode=MODES[f]))
    return tuple(out)


def uses_site(service: ServiceInfo, site: str, known: Mapping[str, SecretInfo]) -> bool:
    """Whether the service already receives some version of the site's certificate."""
    return any((s := known.get(r.secret_id)) is not None and s.site == site for r in service.secrets)


def pick_version(secrets: Iterable[SecretInfo], site: str, fingerprint: str) -> dict[str, SecretInfo]:
    """Existing secrets holding this certificate version, per file; a versioned pair is
    preferred to the stable one (the stable pair gets re-created, a versioned one never)."""
    out: dict[str, SecretInfo] = {}
    for s in sorted(secrets, key=lambda s: (s.stable, s.created)):
        if s.site == site and s.fingerprint == fingerprint and s.file in FILES:
            out.setdefault(s.file, s)
    return out


def referenced(services: Iterable[ServiceInfo], *, previous: bool = True) -> set[str]:
    """Secret ids some service uses (and, with `previous`, would return to on a rollback)."""
    ids: set[str] = set()
    for svc in services:
        ids.update(r.secret_id for r in svc.secrets)
        if previous:
            ids.update(r.secret_id for r in svc.previous_secrets)
    return ids


def prunable(site: str, secrets: Iterable[SecretInfo], services: Iterable[ServiceInfo],
             keep_fingerprint: str) -> list[SecretInfo]:
    """Versioned secrets of `site` that nothing needs any more: not the current version, not
    used by any service, and not what any service would roll back to. The stable pair stays."""
    used = referenced(services)
    return sorted((s for s in secrets if s.site == site and not s.stable and s.id not in used
                   and s.fingerprint != keep_fingerprint), key=lambda s: s.name)


def stable_todo(site: str, secrets: Iterable[SecretInfo], services: Iterable[ServiceInfo],
                fingerprint: str) -> dict[str, SecretInfo | None]:
    """Files whose stable secret must be (re-)created to hold `fingerprint`: file -> the old
    secret to remove first (None: there is none). A stable secret a service runs on cannot be
    removed, so it is left for a later pass."""
    used = referenced(services, previous=False)
    stable = {s.file: s for s in secrets if s.site == site and s.stable}
    todo: dict[str, SecretInfo | None] = {}
    for f in FILES:
        old = stable.get(f)
        if old is None:
            todo[f] = None
        elif old.fingerprint != fingerprint and old.id not in used:
            todo[f] = old
    return todo


# -- rolling updates --------------------------------------------------------------------------------
def update_hazard(service: ServiceInfo) -> str | None:
    """Why updating this service could never finish, or None.

    A start-first update starts the new task before stopping the old one; with a port published
    in host mode both need the same port on the same node, so in global mode (one task per node)
    the new task waits for a free node forever.
    """
    if service.order == "start-first" and service.mode == "global" and \
            any(p.mode == "host" for p in service.ports):
        return (f"service {service.name} publishes ports in host mode, runs one task per node "
                "(global) and updates start-first: a new task can never get the port while the old "
                "one holds it; use update_config.order: stop-first, or ingress ports")
    return None


def update_done(now: UpdateStatus, before: UpdateStatus) -> str | None:
    """How our update ended: "completed", "rolled back", "paused"; None while it runs.

    `before` is the status read before the update was sent: until the engine starts our update
    the old (finished) status is still shown and must not count.
    """
    if not now.state or (now.started == before.started and now.state == before.state):
        return None
    if now.state == "completed":
        return "completed"
    if now.state in ("rollback_completed", "rollback_paused"):
        return "rolled back"
    if now.state == "paused":
        return "paused"
    return None


def stalled(tasks: Iterable[TaskInfo], waited: float) -> str | None:
    """A reason the update cannot go on: a task that no node can take (host port in use, no node
    matching the placement) for longer than STALL_AFTER."""
    if waited < STALL_AFTER:
        return None
    for t in tasks:
        if t.desired == "running" and t.state == "pending" and "no suitable node" in t.err:
            return f"task {t.id[:12]} cannot be placed: {t.err}"
    return None


def failed_tasks(tasks: Iterable[TaskInfo], since: str) -> list[TaskInfo]:
    """Tasks that failed or were rejected at or after `since` (both times from the engine)."""
    start = time_key(since)
    return [t for t in tasks if t.state in ("failed", "rejected") and time_key(t.timestamp) >= start]


def time_key(stamp: str) -> str:
    """An engine time (RFC 3339 in UTC, Go trims trailing zeros of the nanoseconds) as a string
    that sorts in time order: the fraction padded to 9 digits."""
    if not stamp:
        return ""
    head, dot, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{(frac if dot else '').ljust(9, '0')[:9]}"


def converge_timeout(service: ServiceInfo, tasks: int) -> float:
    """How long a rolling update of `tasks` tasks may take before tlsbridge rolls it back:
    per task the update's delay and monitor period plus time to stop and start, at least 60 s."""
    per_task = service.delay + service.monitor + 15.0
    return min(900.0, max(60.0, 20.0 + max(tasks, 1) * per_task))


# -- verification ------------------------------------------------------------------------------------
def probe_endpoints(service: ServiceInfo, tasks: Iterable[TaskInfo], node_addrs: Mapping[str, str],
                    local_addr: str, own_networks: frozenset[str] | None,
                    port: int = HTTPS_PORT) -> list[Endpoint] | str:
    """Where fresh connections reach the service's running tasks on `port` (inside the task),
    or why nothing does.

    In a container sharing an (overlay) network with the tasks: each task's own address. Else a
    published port for `port`: in host mode each task's node, in ingress mode (the routing
    mesh, which reaches every task) this node's address.
    """
    running = [t for t in tasks if t.desired == "running" and t.state == "running"]
    if own_networks:
        direct = []
        for t in running:
            for net, ip in sorted(t.addresses.items()):
                if ip and net in own_networks:
                    direct.append(Endpoint(ip, port, f"task {t.id[:12]} of {service.name} ({ip}:{port})"))
                    break
        if direct:
            return direct
    tls = [p for p in service.ports if p.target == port and p.published]
    for p in tls:
        if p.mode == "ingress":
            return [Endpoint(local_addr, p.published,
                             f"service {service.name} ({local_addr}:{p.published}, routing mesh)")]
    for p in tls:
        out: dict[tuple[str, int], Endpoint] = {}
        for t in running:
            addr = node_addrs.get(t.node_id)
            if addr:
                out.setdefault((addr, p.published), Endpoint(
                    addr, p.published, f"service {service.name} on node {addr} ({addr}:{p.published})"))
        if out:
            return list(out.values())
    return (f"cannot reach service {service.name}: it publishes no port for {port} and "
            "tlsbridge shares no network with its running tasks")
