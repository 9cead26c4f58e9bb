"""Build the reconciler with its real adapters for a config (shared by renew and run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import TlsbridgeError
from tlsbridge.model import DeliveryReport, ObservedCert
from tlsbridge.reconcile import Reconciler

if TYPE_CHECKING:
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

    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> DeliveryReport:
        report = self.real.deliver(items)
        if self._on_delivered is not None:
            self._on_delivered(report)
        return report


def build_reconciler(cfg: Config, clock: Clock, on_delivered: OnDelivered | None = None) -> Reconciler:
    return Reconciler(cfg, clock, deliverer=LazyDeliverer(cfg, on_delivered))
