"""Acting on a Swarm for certificate delivery: creating tlsbridge's secrets, and rolling
updates of services watched until they are over (rolled back when they fail or get stuck).

Used by deliver_swarm.py (delivery) and by `compose --swarm --create-secrets`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tlsbridge.adapters.docker import DockerAdapter
from tlsbridge.adapters.publish import Publisher
from tlsbridge.adapters.swarm import SwarmAdapter
from tlsbridge.certinfo import parse_pem
from tlsbridge.config import Config, Site
from tlsbridge.delivery.swarm_plan import (
    FILES,
    SecretInfo,
    SecretRef,
    ServiceInfo,
    TaskInfo,
    converge_timeout,
    failed_tasks,
    of_instance,
    secret_labels,
    secret_name,
    stalled,
    update_done,
    update_hazard,
)
from tlsbridge.errors import DockerError, ReloadError, TlsbridgeError

logger = logging.getLogger(__name__)

POLL = 0.25  # seconds between looks at a rolling update
TASK_POLL = 2.0  # ... and at its tasks (placement problems)


@dataclass
class Rollout:
    """One service update: the new secret list, the sites it carries, how it went."""

    service: ServiceInfo
    refs: tuple[SecretRef, ...]
    sites: list[str] = field(default_factory=list)
    started: float = 0.0
    done: float = 0.0
    rolling_back: float = 0.0  # when Swarm was first seen rolling it back
    error: str | None = None


class Rollouts:
    """Send service updates, then wait for all of them together."""

    def __init__(self, swarm: SwarmAdapter) -> None:
        self.swarm = swarm

    def run(self, rollouts: list[Rollout]) -> None:
        """Send every update, then wait for all of them together."""
        for r in rollouts:
            svc = r.service
            r.error = update_hazard(svc)
            if r.error:
                continue
            try:
                self.swarm.set_secrets(svc, r.refs)
            except DockerError as exc:
                r.error = str(exc)
                continue
            r.started = time.monotonic()
            names = ", ".join(sorted({ref.secret_name for ref in r.refs} - {
                ref.secret_name for ref in svc.secrets}))
            logger.info("site=%s updating Swarm service %s to %s (rolling update, %s, on failure %s)",
                        ",".join(r.sites), svc.name, names, svc.order, svc.failure_action)
        pending = [r for r in rollouts if r.error is None]
        deadlines: dict[str, float] = {}
        next_tasks = 0.0
        while pending:
            time.sleep(POLL)
            look_at_tasks = time.monotonic() >= next_tasks
            if look_at_tasks:
                next_tasks = time.monotonic() + TASK_POLL
            for r in list(pending):
                try:
                    if self._step(r, deadlines, look_at_tasks):
                        pending.remove(r)
                except DockerError as exc:
                    r.error = f"lost track of the update of service {r.service.name}: {exc}"
                    pending.remove(r)

    def _step(self, r: Rollout, deadlines: dict[str, float], look_at_tasks: bool) -> bool:
        """Look at one update once; True when it is over (r.done or r.error set)."""
        svc = self.swarm.service(r.service.id)
        how = update_done(svc.update, r.service.update)
        now = time.monotonic()
        if how == "completed":
            r.done = now
            logger.info("site=%s Swarm service %s updated (%.1f s)", ",".join(r.sites), svc.name,
                        now - r.started)
            return True
        tasks: list[TaskInfo] | None = None
        if how is not None or look_at_tasks or r.service.id not in deadlines:
            tasks = self.swarm.tasks(svc.id)
        if r.service.id not in deadlines and tasks is not None:
            live = sum(1 for t in tasks if t.desired == "running") or (svc.replicas or 1)
            deadlines[r.service.id] = r.started + converge_timeout(svc, live)
        if how is not None:  # rolled back by Swarm, or paused
            r.error = self._why(svc, tasks or [], how)
            if how == "paused":
                self._rollback(svc)
            return True
        if svc.update.state == "rollback_started":
            # Swarm is rolling our update back (a new task failed): wait for that, on a fresh
            # bound (a rollback may take its while: measured up to ~65 s when a restarted
            # task had to give up its host port first), and never ask for a second rollback.
            if r.rolling_back == 0.0:
                r.rolling_back = now
                deadlines[r.service.id] = now + converge_timeout(svc, svc.replicas or 1)
            elif now > deadlines[r.service.id]:
                r.error = (f"Swarm is rolling back the update of service {svc.name} and has not "
                           f"finished after {now - r.rolling_back:.0f} s: "
                           + self._why(svc, tasks or self.swarm.tasks(svc.id), "rolled back"))
                return True
            return False
        stuck = stalled(tasks or [], now - r.started) if tasks is not None else None
        if stuck or now > deadlines[r.service.id]:
            why = stuck or f"not finished after {now - r.started:.0f} s ({svc.update.message})"
            r.error = (f"the update of Swarm service {svc.name} {why}; tlsbridge rolled it back, "
                       "so it keeps serving the previous certificate")
            self._rollback(svc)
            return True
        return False

    def _why(self, svc: ServiceInfo, tasks: list[TaskInfo], how: str) -> str:
        bad = failed_tasks(tasks, svc.update.started)
        details = []
        for t in bad[:3]:
            logs = self.swarm.task_logs(svc.id, t.id, lines=3).replace("\n", " | ")
            details.append(f"task {t.id[:12]}: {t.err or t.message}" + (f": {logs}" if logs else ""))
        what = "; ".join(details) or svc.update.message or "no task error reported"
        if how == "paused":
            return (f"the update of Swarm service {svc.name} paused ({what}); tlsbridge rolled it "
                    "back, so it keeps serving the previous certificate (set update_config."
                    "failure_action: rollback to let Swarm do that itself)")
        return (f"Swarm service {svc.name} rolled back the new certificate, so it keeps serving "
                f"the previous one: {what}")

    def _rollback(self, svc: ServiceInfo) -> None:
        """Ask for a rollback and wait (bounded) until it is done."""
        try:
            before = self.swarm.service(svc.id).update
            self.swarm.rollback(svc)
            deadline = time.monotonic() + converge_timeout(svc, svc.replicas or 1)
            while time.monotonic() < deadline:
                time.sleep(POLL)
                now = self.swarm.service(svc.id).update
                if now.state in ("rollback_completed", "rollback_paused") and now != before:
                    return
            logger.warning("Swarm service %s: the rollback did not finish in time", svc.name)
        except DockerError as exc:
            logger.warning("Swarm service %s: could not roll back: %s", svc.name, exc)


def fail_sites(rollouts: Iterable[Rollout], errors: dict[str, TlsbridgeError]) -> None:
    """Each site of a failed update fails (a shared service failing fails all its sites)."""
    for r in rollouts:
        if r.error:
            for name in r.sites:
                errors.setdefault(name, ReloadError(f"site={name}: {r.error}"))


def create_secret(swarm: SwarmAdapter, site: Site, file: str, data: bytes, fingerprint: str, *,
            stable: bool, into: list[SecretInfo], instance: str | None = None) -> SecretInfo:
    name = secret_name(site.name, file, None if stable else fingerprint, instance)
    sid = swarm.create_secret(name, data, secret_labels(site.name, file, fingerprint, stable=stable,
                                                        instance=instance))
    info = SecretInfo(sid, name, site.name, file, fingerprint, stable, instance=instance)
    into.append(info)
    logger.info("site=%s created the Swarm secret %s", site.name, name)
    return info


def ensure_stable(swarm: SwarmAdapter, site: Site, secrets: list[SecretInfo],
                  files: Callable[[], Mapping[str, bytes]], instance: str | None = None,
                  ) -> dict[str, SecretInfo]:
    """The site's stable pair; where it is missing (or only half there) it is created from
    `files()` (file name -> bytes), called only then. `secrets` (the instance's) is kept up to date."""
    have = {s.file: s for s in secrets if s.site == site.name and s.stable}
    if all(f in have for f in FILES) and len({have[f].fingerprint for f in FILES}) == 1:
        return have
    data = files()
    fp = parse_pem(data["fullchain.pem"]).fingerprint
    for f in FILES:
        if f in have and have[f].fingerprint != fp:
            # Half a pair (someone removed the other half): replace it, unless in use.
            swarm.remove_secret(have[f])
            secrets.remove(have[f])
            del have[f]
        if f not in have:
            have[f] = create_secret(swarm, site, f, data[f], fp, stable=True, into=secrets,
                                    instance=instance)
    return have


def create_placeholder_pairs(cfg: Config, docker: DockerAdapter, now: datetime,
                             instance: str | None = None) -> list[str]:
    """`compose --swarm --create-secrets`: a stable pair for every site that has none (in
    `instance`, the stack the file is generated for), so `docker stack deploy` finds the secrets
    the stack names. It holds the certificate published in publish.dir when one is readable here
    (run inside the tlsbridge task, this moves a stack onto new secret names with no placeholder
    served), else a self-signed placeholder. Existing secrets are never touched. Returns the
    sites that got one.

    A site that only has secrets of an unnamed stack (a stack file generated before stacks named
    their secrets) and no readable certificate gets nothing: a placeholder would replace the
    certificate it serves at the next deploy, and tlsbridge would not notice (it delivered that
    certificate already). That raises a DockerError naming the way out, after the other sites."""
    from tlsbridge.placeholder import make_placeholder

    swarm = SwarmAdapter(docker)
    if swarm.manager_address() is None:
        raise DockerError(f"the Docker engine at {docker.where} is not a Swarm manager: run this "
                          "against a manager (DOCKER_HOST or docker.host), or `docker swarm init`")
    every = swarm.secrets()
    secrets = of_instance(every, instance)
    made: list[str] = []
    stuck: list[str] = []
    for site in cfg.sites.values():
        before = len(secrets)
        published = _published(Publisher(cfg.publish.dir), site.name)
        unnamed = instance is not None and any(s.site == site.name and s.instance is None for s in every)

        def files(site: Site = site, published: dict[str, bytes] | None = published,
                  unnamed: bool = unnamed) -> dict[str, bytes]:
            if published is not None:
                return published
            if unnamed:
                stuck.append(site.name)
                raise _Stuck
            pem = make_placeholder(site.name, site.domains, now)
            return {"fullchain.pem": pem.fullchain, "privkey.pem": pem.privkey}

        try:
            ensure_stable(swarm, site, secrets, files, instance)
        except _Stuck:
            continue
        if len(secrets) > before:
            made.append(site.name)
            if published is not None:
                logger.info("site=%s created its secrets from the published certificate", site.name)
            else:
                logger.info("site=%s created placeholder secrets for the first deploy; tlsbridge "
                            "replaces them with the issued certificate", site.name)
    if stuck:
        raise DockerError(
            f"site(s) {', '.join(stuck)}: served from the secrets of a stack file generated before "
            f"stacks named their secrets, and no certificate is published in {cfg.publish.dir} "
            f"here; to move stack {instance} onto its own secret names without serving a "
            "placeholder, run this command inside its tlsbridge task (docs/swarm.md, "
            "\"Upgrading a stack\")")
    return made


class _Stuck(Exception):
    """A site whose new stable pair must not be a placeholder (create_placeholder_pairs)."""


def _published(publisher: Publisher, site: str) -> dict[str, bytes] | None:
    """The site's published certificate and key when readable and real (not a placeholder)."""
    try:
        got = publisher.read_files(site)
    except (OSError, TlsbridgeError):
        return None
    if got is None:
        return None
    files = got.by_name()
    try:
        if parse_pem(files["fullchain.pem"]).placeholder:
            return None
    except ValueError:
        return None
    return {f: files[f] for f in FILES}
