"""Get published certificates served by nginx running as Docker Swarm services.

Used by `delivery.containers.DockerDeliverer` when the engine is a Swarm manager. A site's Swarm targets are
the services whose *service* labels include `tlsbridge.site=<site>[,<site>...]`. Per delivery:

1. the published certificate goes into immutable secrets (tlsbridge.delivery.swarm_plan names them), created
   once per version;
2. each target service that does not run on that version yet gets its secret list updated,
   one update per service however many of its sites changed: a rolling update;
3. tlsbridge waits for the update to finish (bounded). If Swarm rolls it back (a new task
   failed, with `failure_action: rollback`), it pauses, or it cannot make progress, the site
   fails naming the service and the task's error; tlsbridge itself rolls back an update that
   paused or got stuck, so the previous version keeps being served;
4. fresh TLS connections to the tasks (or `verify: HOST:PORT`) must show the new certificate
   (delivery.verify, the same check as for containers);
5. the stable secret pair is re-created with the new certificate when no service runs on it,
   and versions nothing needs any more are removed.

Errors are per site; a service shared by several sites failing fails each of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlsbridge.adapters.docker import DockerAdapter
from tlsbridge.adapters.publish import Publisher
from tlsbridge.adapters.swarm import SwarmAdapter
from tlsbridge.certinfo import parse_pem
from tlsbridge.config import Config, Site
from tlsbridge.delivery.scope import own_scope
from tlsbridge.delivery.swarm_plan import (
    FILES,
    SecretInfo,
    ServiceInfo,
    pick_version,
    plan_refs,
    probe_endpoints,
    prunable,
    secret_labels,
    secret_name,
    serves_site,
    stable_todo,
    uses_site,
)
from tlsbridge.delivery.swarm_rollout import Rollout, Rollouts, create_secret, ensure_stable, fail_sites
from tlsbridge.delivery.verify import Probe
from tlsbridge.errors import DockerError, PublishError, ReloadError, TlsbridgeError, VerifyError
from tlsbridge.model import ObservedCert

logger = logging.getLogger(__name__)

POLL = 0.25  # seconds between looks at the services' tasks
SERVICE_START_WAIT = 30.0  # bootstrap: how long the sites' services get to run their tasks
HTTP_PORT = 80  # where nginx answers ACME HTTP-01 inside its tasks

CheckProbes = Callable[[Sequence[Probe]], list[TlsbridgeError | None]]


@dataclass
class SwarmOutcome:
    errors: dict[str, TlsbridgeError] = field(default_factory=dict)
    services: frozenset[str] = frozenset()  # ids of services delivered through secrets
    sites: frozenset[str] = frozenset()  # sites that have Swarm targets


@dataclass
class _Scan:
    local_addr: str
    services: list[ServiceInfo]
    secrets: list[SecretInfo]
    targets: dict[str, list[ServiceInfo]]

    @property
    def known(self) -> dict[str, SecretInfo]:
        return {s.id: s for s in self.secrets}


class SwarmDelivery:
    def __init__(self, cfg: Config, docker: DockerAdapter, verify: CheckProbes) -> None:
        self.cfg = cfg
        self.docker = docker
        self.swarm = SwarmAdapter(docker)
        self.verify = verify

    # -- entry points ----------------------------------------------------------------------------
    def bootstrap(self, sites: Sequence[Site]) -> SwarmOutcome:
        """Give target services that have no version of a site's certificate one (the stable
        pair, created from what is published, usually the placeholder) so nginx can start."""
        scan = self._scan(sites)
        if scan is None:
            return SwarmOutcome()
        out = self._outcome(scan)
        plans: dict[str, Rollout] = {}
        for site in sites:
            services = [s for s in scan.targets.get(site.name, []) if not uses_site(s, site.name, scan.known)]
            if not services:
                continue
            try:
                want = self._stable_pair(site, scan)
            except TlsbridgeError as exc:
                out.errors[site.name] = exc
                continue
            for svc in services:
                self._plan(plans, svc, site, scan, want)
        Rollouts(self.swarm).run(list(plans.values()))
        fail_sites(plans.values(), out.errors)
        self._wait_running([s for s in sites if s.name not in out.errors], scan, out.errors)
        if self.cfg.challenge.method == "standalone":
            self._check_acme_path([s for s in sites if s.name not in out.errors], scan)
        return out

    def _check_acme_path(self, sites: Sequence[Site], scan: _Scan) -> None:
        """Wait until an HTTP-01 request through the sites' nginx (port 80) reaches
        challenge.http_port here, so the CA is not asked before that path works."""
        from tlsbridge.adapters.http01_reachable import wait_for_path

        targets: dict[tuple[str, int, str], str] = {}
        own = self.docker.own_networks()
        for site in sites:
            for svc in scan.targets.get(site.name, []):
                try:
                    fresh = self.swarm.service(svc.id)
                    nodes = self.swarm.node_addresses() if any(
                        p.mode == "host" for p in fresh.ports) else {}
                    where = probe_endpoints(fresh, self.swarm.tasks(svc.id), nodes, scan.local_addr,
                                            own, port=HTTP_PORT)
                except DockerError as exc:
                    logger.debug("no ACME path check for %s: %s", svc.name, exc)
                    continue
                if isinstance(where, str):
                    continue  # not reachable from here: nothing to check, certbot will tell
                for e in where:
                    targets.setdefault((e.host, e.port, site.domains[0].removeprefix("*.")),
                                       f"site={site.name} {e.label}")
        if not targets:
            return
        t0 = time.monotonic()
        failed = wait_for_path(self.cfg.challenge.http_port,
                               [(h, p, name, label) for (h, p, name), label in targets.items()],
                               timeout=SERVICE_START_WAIT)
        if failed:
            logger.warning("the ACME HTTP-01 path through nginx to port %d does not work yet "
                           "(asking the CA anyway): %s", self.cfg.challenge.http_port, "; ".join(failed))
        else:
            logger.info("ACME HTTP-01 requests reach tlsbridge through %d nginx endpoint(s) "
                        "(checked in %.1f s)", len(targets), time.monotonic() - t0)

    def _wait_running(self, sites: Sequence[Site], scan: _Scan,
                      errors: dict[str, TlsbridgeError]) -> None:
        """Before issuing: wait until the sites' services run their tasks (nginx must answer
        HTTP-01; in a freshly deployed stack tlsbridge may well start before nginx)."""
        services = {svc.id: svc for site in sites for svc in scan.targets.get(site.name, [])}
        deadline = time.monotonic() + SERVICE_START_WAIT
        waiting = dict(services)
        some: set[str] = set()
        while waiting:
            for sid, svc in list(waiting.items()):
                try:
                    tasks = [t for t in self.swarm.tasks(sid) if t.desired == "running"]
                except DockerError as exc:
                    logger.warning("cannot see the tasks of Swarm service %s: %s", svc.name, exc)
                    del waiting[sid]
                    continue
                running = [t for t in tasks if t.state == "running"]
                if running:
                    some.add(sid)
                if running and len(running) == len(tasks):
                    del waiting[sid]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        for site in sites:
            for svc in scan.targets.get(site.name, []):
                if svc.id in waiting and svc.id not in some:
                    errors.setdefault(site.name, ReloadError(
                        f"site={site.name}: Swarm service {svc.name} has no running task after "
                        f"{SERVICE_START_WAIT:g} s (see `docker service ps {svc.name}`)"))
                elif svc.id in waiting:
                    logger.warning("site=%s Swarm service %s runs only some of its tasks after %g s",
                                   site.name, svc.name, SERVICE_START_WAIT)

    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> SwarmOutcome:
        scan = self._scan([s for s, _ in items])
        if scan is None:
            return SwarmOutcome()
        out = self._outcome(scan)
        plans: dict[str, Rollout] = {}
        mine = [(s, c) for s, c in items if scan.targets.get(s.name)]
        data: dict[str, dict[str, bytes]] = {}
        for site, cert in mine:
            try:
                data[site.name] = files = self._read(site, cert.fingerprint)
                want = self._version(site, cert.fingerprint, files, scan)
            except TlsbridgeError as exc:
                out.errors[site.name] = exc
                continue
            for svc in scan.targets[site.name]:
                self._plan(plans, svc, site, scan, want)
        Rollouts(self.swarm).run(list(plans.values()))
        fail_sites(plans.values(), out.errors)
        done = {r.service.id: r.done for r in plans.values()}
        probes, unreachable = self._probes([(s, c) for s, c in mine if s.name not in out.errors],
                                           scan, done)
        out.errors.update(unreachable)
        for probe, err in zip(probes, self.verify(probes), strict=True):
            if err is not None:
                out.errors.setdefault(probe.site.name, err)
        ok = [(s, c) for s, c in mine if s.name not in out.errors]
        if ok:
            self._tidy(ok, data)
        return out

    # -- observing -------------------------------------------------------------------------------
    def _scan(self, sites: Sequence[Site]) -> _Scan | None:
        """Swarm targets of `sites`; None when the engine is no Swarm manager (or unreachable:
        the container path reports that)."""
        try:
            addr = self.swarm.manager_address()
            if addr is None:
                return None
            # only our own stack's services (delivery.scope): another stack may label its
            # services for sites of the same names
            scope = own_scope(self.cfg.publish.dir, self.docker)
            services = [s for s in self.swarm.services() if scope.owns_service(s.labels)]
            secrets = self.swarm.secrets()
        except DockerError as exc:
            logger.debug("no Swarm delivery: %s", exc)
            return None
        targets: dict[str, list[ServiceInfo]] = {}
        for site in sites:
            found = sorted((s for s in services if serves_site(s, site.name)), key=lambda s: s.name)
            if found:
                targets[site.name] = found
        return _Scan(addr, services, secrets, targets)

    @staticmethod
    def _outcome(scan: _Scan) -> SwarmOutcome:
        ids = frozenset(s.id for found in scan.targets.values() for s in found)
        return SwarmOutcome(services=ids, sites=frozenset(scan.targets))

    def _read(self, site: Site, fingerprint: str | None) -> dict[str, bytes]:
        """The published fullchain and key, from one generation (never a mix of two)."""
        folder = Path(self.cfg.publish.dir) / site.name
        published = Publisher(Path(self.cfg.publish.dir)).read_files(site.name)
        if published is None:
            raise PublishError(f"site={site.name}: nothing is published in {folder}")
        files = {f: published.by_name()[f] for f in FILES}
        got = parse_pem(files["fullchain.pem"]).fingerprint
        if fingerprint is not None and got != fingerprint:
            raise PublishError(f"site={site.name}: the published certificate changed while it was "
                               "being delivered; the next pass delivers the new one")
        return files

    # -- secrets ---------------------------------------------------------------------------------
    def _stable_pair(self, site: Site, scan: _Scan) -> dict[str, SecretInfo]:
        """The site's stable pair, created from what is published where it is missing."""
        return ensure_stable(self.swarm, site, scan.secrets, lambda: self._read(site, None))

    def _version(self, site: Site, fingerprint: str, files: Mapping[str, bytes],
                 scan: _Scan) -> dict[str, SecretInfo]:
        """The secrets holding this certificate version, created where missing."""
        want = pick_version(scan.secrets, site.name, fingerprint)
        for f in FILES:
            if f not in want:
                want[f] = create_secret(self.swarm, site, f, files[f], fingerprint, stable=False,
                                  into=scan.secrets)
        return want

    def _tidy(self, ok: Sequence[tuple[Site, ObservedCert]], data: Mapping[str, dict[str, bytes]]) -> None:
        """After verified deliveries: re-create stable pairs with the new certificate (a later
        `docker stack deploy` brings it along) and remove versions nothing needs any more."""
        try:
            # every stack's services: a secret another stack uses is never pruned
            services = self.swarm.services()
            secrets = self.swarm.secrets()
        except DockerError as exc:
            logger.warning("cannot tidy up Swarm secrets: %s", exc)
            return
        for site, cert in ok:
            try:
                for f, old in stable_todo(site.name, secrets, services, cert.fingerprint).items():
                    if old is not None:
                        self.swarm.remove_secret(old)
                    name = secret_name(site.name, f)
                    self.swarm.create_secret(name, data[site.name][f], secret_labels(
                        site.name, f, cert.fingerprint, stable=True))
                    logger.info("site=%s the Swarm secret %s now holds serial %s", site.name, name,
                                cert.serial_hex)
                for s in prunable(site.name, secrets, services, cert.fingerprint):
                    self.swarm.remove_secret(s)
                    logger.info("site=%s removed the Swarm secret %s (no longer used)", site.name, s.name)
            except DockerError as exc:
                logger.warning("site=%s Swarm secrets not tidied up (the next delivery retries): %s",
                               site.name, exc)

    # -- rolling updates ---------------------------------------------------------------------------
    @staticmethod
    def _plan(plans: dict[str, Rollout], svc: ServiceInfo, site: Site, scan: _Scan,
              want: Mapping[str, SecretInfo]) -> None:
        r = plans.get(svc.id)
        refs = plan_refs(svc, site.name, scan.known, want, refs=r.refs if r else None)
        if refs is None:
            logger.info("site=%s Swarm service %s already runs on this certificate", site.name, svc.name)
            return
        if r is None:
            plans[svc.id] = r = Rollout(svc, refs)
        r.refs = refs
        r.sites.append(site.name)

    # -- verification ----------------------------------------------------------------------------
    def _probes(self, items: Sequence[tuple[Site, ObservedCert]], scan: _Scan,
                done: Mapping[str, float]) -> tuple[list[Probe], dict[str, TlsbridgeError]]:
        probes: list[Probe] = []
        errors: dict[str, TlsbridgeError] = {}
        nodes: dict[str, str] | None = None
        own = self.docker.own_networks() if items else None
        for site, cert in items:
            services = scan.targets[site.name]
            since = max((done.get(s.id, 0.0) for s in services), default=0.0) or time.monotonic()
            if site.verify is not None:
                host, port = site.verify
                probes.append(Probe(site, cert.fingerprint, host, port, f"{host}:{port}", since))
                continue
            for svc in services:
                try:
                    fresh = self.swarm.service(svc.id)
                    tasks = self.swarm.tasks(svc.id)
                    if nodes is None and any(p.mode == "host" for p in fresh.ports):
                        nodes = self.swarm.node_addresses()
                except DockerError as exc:
                    errors[site.name] = exc
                    break
                where = probe_endpoints(fresh, tasks, nodes or {}, scan.local_addr, own)
                if isinstance(where, str):
                    errors[site.name] = VerifyError(f"site={site.name}: {where}; attach tlsbridge "
                                                    f"to the service's network or set "
                                                    f"sites.{site.name}.verify: HOST:PORT")
                    break
                probes += [Probe(site, cert.fingerprint, e.host, e.port, e.label,
                                 done.get(svc.id) or since) for e in where]
        return [p for p in probes if p.site.name not in errors], errors
