"""Get published certificates served by nginx containers: config test, reload, verify.

Called by the reconciler once per pass with every site it published, so a container shared by
several sites is reloaded exactly once. Per container: `nginx -t` inside it (exit code checked),
then SIGHUP to PID 1 when PID 1 is nginx's master (the fastest path: ~13 ms through the API,
no exec), else `nginx -s reload`; a target that is not running is started instead. Then fresh
TLS connections to each target until the published leaf is served and old workers are gone
(delivery.verify, the one verification path).

A failed config test means no reload: nginx keeps serving the previous certificate and the site
fails with nginx's own output. Errors are per site; one site's failure never stops another's.

When the engine is a Swarm manager, services labelled tlsbridge.site are delivered to first,
through secrets and a rolling update (delivery.swarm); their task containers are then not
reloaded as containers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tlsbridge.adapters.docker import ContainerGoneError, DockerAdapter
from tlsbridge.config import Config, Site
from tlsbridge.delivery.scope import Scope, host_path, own_scope
from tlsbridge.delivery.swarm_plan import SERVICE_LABEL as SWARM_SERVICE_LABEL
from tlsbridge.delivery.verify import VERIFY_SETTLE, VERIFY_TIMEOUT, Probe, Verifier, site_probes
from tlsbridge.errors import DockerError, ReloadError, TlsbridgeError
from tlsbridge.model import DeliveryReport, ObservedCert
from tlsbridge.targets import SITE_LABEL, ContainerInfo, probe_address, resolve, start_decision

if TYPE_CHECKING:
    from collections.abc import Callable

    from tlsbridge.delivery.swarm import SwarmDelivery, SwarmOutcome

logger = logging.getLogger(__name__)

CONTAINER_HTTP_WAIT = 2.0  # bootstrap: how long a started container gets to answer on port 80
RESTART_WAIT = 30.0  # bootstrap: how long a restarting target gets to run again (Docker backs off)
RESTART_STABLE = 0.5  # ... and how long it must then keep running
_NGINX_MASTER = "nginx: master"


@dataclass
class _Target:
    info: ContainerInfo
    sites: list[Site] = field(default_factory=list)
    since: float = 0.0  # monotonic time of the reload or start
    how: str = ""  # "SIGHUP", "nginx -s reload", "started", "restarting"
    error: str | None = None
    skip: bool = False  # stopped on purpose: neither started nor verified

    @property
    def names(self) -> str:
        return ",".join(s.name for s in self.sites)

    def serves(self, site: str) -> bool:
        return any(s.name == site for s in self.sites)

    @property
    def acted(self) -> bool:
        """Reloaded or started by us (not skipped, not failed, not left restarting on its own)."""
        return self.error is None and not self.skip and self.how not in ("", "restarting")


class DockerDeliverer:
    """The reconciler's Deliverer for nginx in Docker containers."""

    def __init__(self, cfg: Config, docker: DockerAdapter | None = None, *,
                 verify_timeout: float = VERIFY_TIMEOUT, settle: float = VERIFY_SETTLE) -> None:
        self.cfg = cfg
        self._docker = docker
        self.verifier = Verifier(timeout=verify_timeout, settle=settle)
        self._swarm: SwarmDelivery | None = None
        self._scope: Scope | None = None

    @property
    def scope(self) -> Scope:
        """Which labelled containers are this instance's (delivery.scope), found once."""
        if self._scope is None:
            self._scope = own_scope(self.cfg.publish.dir, self.docker)
        return self._scope

    @property
    def docker(self) -> DockerAdapter:
        if self._docker is None:
            self._docker = DockerAdapter(self.cfg.docker)
        return self._docker

    @property
    def swarm(self) -> SwarmDelivery:
        """Services labelled tlsbridge.site when the engine is a Swarm manager (delivery.swarm)."""
        if self._swarm is None:
            from tlsbridge.delivery.swarm import SwarmDelivery

            self._swarm = SwarmDelivery(self.cfg, self.docker, self.verifier)
        return self._swarm

    # -- bootstrap: get nginx running on a placeholder before issuing --------------------------
    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        """Start (or config-test and reload) the targets of sites whose placeholder was published.

        Returns the errors that block issuance: with the webroot method nginx must answer the
        HTTP-01 challenge, so a target that cannot start fails its site before the CA is asked
        (saving a failed validation). With other methods the problems are only logged.
        """
        sw = self.swarm.bootstrap(sites)
        errors: dict[str, TlsbridgeError] = dict(sw.errors)
        targets = self._resolve(sites, errors, sw)
        for t in targets:
            self._bring_up(t, strict=False)
        for t in targets:
            if t.how == "restarting" and t.error is None:
                self._wait_running(t)  # never run certbot against an nginx that is restarting
            if t.how in ("started", "restarting") and t.error is None:
                self._wait_up(t)
        for t in targets:
            if t.error:
                for s in t.sites:
                    errors.setdefault(s.name, ReloadError(f"site={s.name}: {t.error}"))
        if self.cfg.challenge.method == "webroot":
            errors.update(self.precheck([s for s in sites if s.name not in errors]))
            return errors
        for name, exc in errors.items():
            logger.warning("site=%s bootstrap: %s (going on: the %s challenge does not need nginx)",
                           name, exc, self.cfg.challenge.method)
        return {}

    def precheck(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        """Before the CA is asked (webroot sites): the targets mounting the challenge webroot run
        (started when they are ours to start) and one of them answers a self-check token on port
        80. Returns the sites that must not go to the CA. A site none of whose targets mounts the
        webroot is not checked (another server answers), nor is one when Docker cannot be read."""
        from tlsbridge.delivery.challenge import self_check, serves_webroot

        web = [s for s in sites if s.challenge.method == "webroot"]
        if not web:
            return {}
        ignored: dict[str, TlsbridgeError] = {}
        targets = self._resolve(web, ignored)
        if not targets:
            return {}
        own = self.docker.own_container()
        mounts = own.mounts if own is not None else None
        errors: dict[str, TlsbridgeError] = {}
        for site in web:
            webroot = host_path(str(site.challenge.webroot), mounts)
            serving = [t for t in targets if t.serves(site.name) and webroot is not None
                       and serves_webroot(t.info, webroot)]
            problems: list[str] = []
            for t in serving:
                if not t.info.running and not t.how and t.error is None:
                    self._bring_up(t, strict=False)
                    self._settle(t)
                if t.error or t.skip or t.how == "restarting":
                    name = t.info.name
                    problems.append(t.error or (
                        f"container {name}, which answers it, was stopped on purpose (exit code 0); "
                        f"start it (docker start {name}) and run renew again" if t.skip else
                        f"container {name}, which answers it, is restarting (see docker logs {name})"))
                    continue
                addr = probe_address(t.info, self.docker.own_networks())
                why = None if addr is None else (  # unreachable from here: the CA decides
                    self_check(addr, site.challenge.webroot, site.domains[0], t.info.name))
                if why is None:
                    problems = []
                    break
                problems.append(why)
            if problems:
                errors[site.name] = ReloadError(
                    f"site={site.name}: not asking the CA, the HTTP-01 validation would fail: "
                    + "; ".join(problems))
        return errors

    # -- delivery: reload once per container, then verify -----------------------------------------
    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> DeliveryReport:
        """Reload every target of the given sites once and verify each serves its certificate.

        Reports the sites that failed, each with a ReloadError, DockerError or VerifyError, and
        the containers reloaded or started for each site.
        """
        sw = self.swarm.deliver(items)
        errors: dict[str, TlsbridgeError] = dict(sw.errors)
        unreached: dict[str, TlsbridgeError] = {}
        targets = self._resolve([s for s, _ in items], errors, sw, unreached)
        for t in targets:
            self._bring_up(t, strict=True)
            if t.error is None and not t.skip:
                logger.info("site=%s reloaded container %s (%s)", t.names, t.info.name, t.how)
        reloaded = {s.name: tuple(t.info.name for t in targets if t.acted and t.serves(s.name))
                    for s, _ in items}
        by_id = {t.info.id: t for t in targets}
        probes: list[Probe] = []
        own: frozenset[str] | None = None
        if targets and any(s.verify is None for s, _ in items):
            own = self.docker.own_networks()
        now = time.monotonic()
        for site, cert in items:
            if site.name in errors:
                continue
            mine = [t for t in targets if t.serves(site.name)]
            failed = [t.error for t in mine if t.error]
            if failed:
                errors[site.name] = ReloadError(f"site={site.name}: " + "; ".join(failed))
                continue
            if not mine and site.name in sw.sites:
                continue  # delivered and verified through its Swarm services
            live = [(t.info, t.since) for t in mine if not t.skip]
            try:
                probes += site_probes(site, cert.fingerprint, live, own, now,
                                      alive=lambda c: self._alive(by_id[c.id]))
            except TlsbridgeError as exc:
                errors[site.name] = exc
        probes = [p for p in probes if p.site.name not in errors]
        for probe, err in zip(probes, self.verifier(probes), strict=True):
            if err is not None:
                errors.setdefault(probe.site.name, err)
        served = {s.name: tuple(sorted({t.info.name for t in targets if t.serves(s.name) and not t.skip}
                                       | ({"swarm services"} if s.name in sw.sites else set())))
                  for s, _ in items if s.name not in errors and s.name not in unreached}
        return DeliveryReport(failed=errors, reloaded={k: v for k, v in reloaded.items() if v},
                              served=served, unreached=unreached)

    def reload_one(self, info: ContainerInfo) -> str | None:
        """Config-test and reload one container (started if it is not running), the same way as
        a delivery; returns why it failed (a failed `nginx -t` reloads nothing), or None."""
        t = _Target(info)
        self._bring_up(t, strict=True)
        return t.error

    # -- steps ------------------------------------------------------------------------------------
    def _resolve(self, sites: Sequence[Site], errors: dict[str, TlsbridgeError],
                 swarm: SwarmOutcome | None = None,
                 unreached: dict[str, TlsbridgeError] | None = None) -> list[_Target]:
        """Each container that is a target of any of `sites`, once, with the sites it serves.

        Task containers of the Swarm services in `swarm` are left out: they get certificates
        through their service (secrets), not through a reload. With the engine unreachable, a
        site naming containers fails; the others go into `unreached` (the reconciler decides by
        what was delivered before) or, without it, are logged.
        """
        skip = swarm.services if swarm is not None else frozenset()
        try:
            containers = [c for c in self.docker.containers()
                          if c.labels.get(SWARM_SERVICE_LABEL) not in skip]
        except DockerError as exc:
            for s in sites:
                if s.reload:
                    errors[s.name] = DockerError(f"site={s.name}: {exc}")
                elif unreached is not None:
                    unreached[s.name] = DockerError(
                        f"site={s.name}: cannot look for containers labelled {SITE_LABEL}={s.name}: {exc}")
                else:
                    logger.warning("site=%s cannot look for containers labelled %s=%s: %s",
                                   s.name, SITE_LABEL, s.name, exc)
            return []
        targets: dict[str, _Target] = {}
        for s in sites:
            res = resolve(s, containers, self.scope.owns)
            if res.ignored:
                logger.debug("site=%s ignoring %s: another tlsbridge's (they do not mount %s)",
                             s.name, ", ".join(c.name for c in res.ignored), self.cfg.publish.dir)
            for warning in res.warnings:
                logger.warning("site=%s %s", s.name, warning)
            if res.errors:
                errors[s.name] = ReloadError(f"site={s.name}: " + "; ".join(res.errors))
            elif not res.targets and (swarm is None or s.name not in swarm.sites):
                logger.info("site=%s no containers to reload (none in reload, none labelled %s=%s)",
                            s.name, SITE_LABEL, s.name)
            for c in res.targets:
                targets.setdefault(c.id, _Target(c)).sites.append(s)
        return list(targets.values())

    def _bring_up(self, t: _Target, *, strict: bool, again: bool = True) -> None:
        """Config-test and reload a running target, or start a stopped one. Sets t.error/t.skip.

        `strict` False (bootstrap): a failed config test of a running container is only logged;
        it keeps running its current configuration, which may well answer HTTP-01.
        """
        c = t.info
        try:
            if c.running:
                code, out = self.docker.exec(c.id, ["nginx", "-t"], c.name)
                if code != 0 and _not_on_path(code, out):
                    t.how = self._reload_without_test(c)
                elif code != 0:
                    msg = (f"nginx's config test failed in container {c.name}, so it was not "
                           f"reloaded and keeps serving the previous certificate: {_tail(out)}")
                    if strict:
                        t.error = msg
                    else:
                        logger.warning("site=%s %s", t.names, msg)
                        t.skip = True
                    return
                else:
                    t.how = self._reload(c)
            else:
                action, why = start_decision(c)
                if action == "start":
                    self.docker.start(c.id, c.name)
                    t.how = "started"
                    # Its address exists only now: verify with what the engine says after the start.
                    t.info = self._inspect(c.id) or c
                elif action == "wait":
                    t.how = "restarting"
                elif action == "skip":
                    logger.warning("site=%s %s", t.names, why)
                    t.skip = True
                else:
                    t.error = why
            t.since = time.monotonic()
        except ContainerGoneError as exc:
            # Listed as running, stopped since (a crash-looping nginx): act on its state now.
            fresh = self._inspect(c.id)
            if again and fresh is not None and not fresh.running:
                t.info = fresh
                self._bring_up(t, strict=strict, again=False)
                return
            t.error = f"{exc}; the others are still processed"
        except (DockerError, ReloadError) as exc:
            t.error = str(exc)

    def _inspect(self, ref: str) -> ContainerInfo | None:
        try:
            return self.docker.container(ref)
        except (ContainerGoneError, DockerError):
            return None

    def _reload(self, c: ContainerInfo) -> str:
        cmd = self.docker.pid1_command(c.id, c.name)
        if cmd is not None and cmd.startswith(_NGINX_MASTER):
            self.docker.kill(c.id, "SIGHUP", c.name)
            return "nginx -t passed; SIGHUP to nginx's master"
        code, out = self.docker.exec(c.id, ["nginx", "-s", "reload"], c.name)
        if code != 0:
            raise ReloadError(f"nginx -s reload failed in container {c.name}: {_tail(out)}")
        return "nginx -t passed; nginx -s reload"

    def _reload_without_test(self, c: ContainerInfo) -> str:
        cmd = self.docker.pid1_command(c.id, c.name)
        if cmd is None or not cmd.startswith(_NGINX_MASTER):
            raise ReloadError(f"container {c.name} has no nginx on its PATH and its PID 1 is not "
                              "nginx's master, so it cannot be config-tested or reloaded")
        # nginx's master tests the new configuration itself and keeps the old one if it fails;
        # verification then reports what is served.
        logger.warning("container %s: nginx is not on the PATH; SIGHUP without a config test", c.name)
        self.docker.kill(c.id, "SIGHUP", c.name)
        return "SIGHUP to nginx's master, untested (nginx not on the PATH)"

    def _wait_up(self, t: _Target) -> None:
        """After a bootstrap start: wait until it answers on port 80, or report why it exited."""
        from tlsbridge.adapters.tlsprobe import port_open

        addr = probe_address(t.info, self.docker.own_networks())
        if self.cfg.challenge.method != "webroot":
            addr = None  # nothing needs port 80; only make sure it did not exit at once
            time.sleep(0.2)
        deadline = time.monotonic() + CONTAINER_HTTP_WAIT
        while True:
            died = self._died(t)
            if died:
                t.error = died
                return
            if addr is None or port_open(addr, 80, timeout=0.5):
                logger.info("site=%s started container %s on the placeholder", t.names, t.info.name)
                return
            if time.monotonic() > deadline:
                logger.warning("site=%s container %s was started but does not answer on %s:80 yet",
                               t.names, t.info.name, addr)
                return
            time.sleep(0.05)

    def _wait_running(self, t: _Target) -> None:
        """A target Docker is restarting (it crashed, e.g. on a missing certificate before the
        placeholder): wait until it has run for RESTART_STABLE seconds, so that the CA does
        not validate against an nginx that is still coming and going."""
        deadline = time.monotonic() + RESTART_WAIT
        up_since: float | None = None
        while time.monotonic() < deadline:
            fresh = self._inspect(t.info.id)
            if fresh is None:
                t.error = f"container {t.info.name} disappeared while it was restarting"
                return
            now = time.monotonic()
            if fresh.running:
                up_since = up_since if up_since is not None else now
                if now - up_since >= RESTART_STABLE:
                    t.info, t.how = fresh, "started"
                    t.since = time.monotonic()
                    logger.info("site=%s container %s runs again after restarting", t.names, t.info.name)
                    return
            else:
                up_since = None
            time.sleep(0.1)
        t.error = (f"container {t.info.name} keeps restarting (waited {RESTART_WAIT:.0f} s for it to "
                   f"run); see docker logs {t.info.name}")

    def _settle(self, t: _Target) -> None:
        """After `_bring_up` before the CA: a restarting target runs again, a started one answers."""
        if t.how == "restarting" and t.error is None:
            self._wait_running(t)
        if t.how == "started" and t.error is None:
            self._wait_up(t)

    def _alive(self, t: _Target) -> Callable[[], str | None]:
        return lambda: self._died(t)

    def _died(self, t: _Target) -> str | None:
        """Why a target is no longer running after we acted on it, or None if it runs."""
        try:
            now = self.docker.container(t.info.id)
        except ContainerGoneError:
            return f"container {t.info.name} disappeared after it was {t.how or 'listed'}"
        except DockerError as exc:
            logger.debug("cannot inspect %s: %s", t.info.name, exc)
            return None
        if now.state not in ("exited", "dead"):
            return None
        try:
            logs = _tail(self.docker.logs(t.info.id, 6))
        except TlsbridgeError:
            logs = "(no logs)"
        return (f"container {t.info.name} exited (code {now.exit_code}) after it was {t.how}: {logs}")


def _not_on_path(code: int, output: str) -> bool:
    low = output.lower()
    return code in (126, 127) and ("executable file not found" in low or "no such file" in low)


def _tail(output: str, lines: int = 4, limit: int = 600) -> str:
    kept = [ln.strip() for ln in output.replace("\r", "").splitlines() if ln.strip()]
    text = " | ".join(kept[-lines:]) or "(no output)"
    return text if len(text) <= limit else "..." + text[-limit:]
