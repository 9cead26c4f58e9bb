"""Build the reconciler with its real adapters for a config (shared by renew, run and status)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.adapters.certstore import CertStore
from tlsbridge.adapters.publish import Ownership, Publisher
from tlsbridge.adapters.statestore import StateStore
from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import TlsbridgeError
from tlsbridge.model import Action, AriWindow, DeliveryReport, ObservedCert
from tlsbridge.reconcile import Deliverer, Ports, Reconciler

if TYPE_CHECKING:
    from tlsbridge.adapters.ari import AriClient
    from tlsbridge.adapters.certbot import CertbotRunner
    from tlsbridge.delivery.containers import DockerDeliverer

OnDelivered = Callable[[DeliveryReport], None]


class LazyDeliverer:
    """The Docker deliverer, built on first use: a pass with nothing to deliver never imports the
    delivery, Docker and Swarm modules (about 10 ms of a one-shot renew). `on_delivered` sees
    every delivery's report (the sidecar counts reloads from it)."""

    def __init__(self, cfg: Config, on_delivered: OnDelivered | None = None) -> None:
        self.cfg = cfg
        self._real: DockerDeliverer | None = None
        self._on_delivered = on_delivered

    @property
    def real(self) -> DockerDeliverer:
        if self._real is None:
            from tlsbridge.delivery.containers import DockerDeliverer

            self._real = DockerDeliverer(self.cfg)
        return self._real

    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        return self.real.bootstrap(sites)

    def precheck(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        if not any(s.challenge.method == "webroot" for s in sites):
            return {}  # nothing to check: Docker is not even imported
        return self.real.precheck(sites)

    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> DeliveryReport:
        report = self.real.deliver(items)
        if self._on_delivered is not None:
            self._on_delivered(report)
        return report


class LazyCertbot:
    """certbot's runner, built on first use (a pass with nothing due never imports it)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._real: CertbotRunner | None = None

    def obtain(self, site: Site, action: Action) -> None:
        if self._real is None:
            from tlsbridge.adapters.certbot import CertbotRunner

            self._real = CertbotRunner(self.cfg)
        self._real.obtain(site, action)


class LazyAri:
    """The CAs' renewalInfo clients, each built on first use (not while the cached answers stand)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._real: dict[str, AriClient] = {}

    def window(self, cert_id: str, now: datetime, ca: str | None = None) -> AriWindow | None:
        """`ca`: the issuing CA's directory (a fallback's certificate is asked about there)."""
        directory = ca or self.cfg.acme.directory
        if directory not in self._real:
            from tlsbridge.adapters.ari import AriClient

            self._real[directory] = AriClient(directory, self.cfg.acme.ca_bundle)
        return self._real[directory].window(cert_id, now)


def build_ports(cfg: Config, memo: CertMemo | None = None) -> Ports:
    """The real local adapters of a config; `memo`: the process's certificate memo (else a new one)."""
    memo = memo or CertMemo()
    p = cfg.publish
    return Ports(memo, CertStore(cfg.certbot.config_dir, memo),
                 Publisher(p.dir, Ownership(p.owner, p.group, p.key_mode, p.cert_mode, p.keep)),
                 StateStore(cfg.state.dir))


def build_reconciler(cfg: Config, clock: Clock, memo: CertMemo | None = None, *,
                     deliverer: Deliverer | None = None,
                     on_delivered: OnDelivered | None = None) -> Reconciler:
    """`deliverer`: None for the Docker deliverer (`on_delivered` sees each of its reports)."""
    return Reconciler(cfg, clock, build_ports(cfg, memo), obtainer=LazyCertbot(cfg), ari=LazyAri(cfg),
                      deliverer=deliverer or LazyDeliverer(cfg, on_delivered))
