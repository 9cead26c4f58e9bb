"""Build the reconciler with its real adapters for a config (shared by renew and run)."""

from __future__ import annotations

from tlsbridge.clock import Clock
from tlsbridge.config import Config
from tlsbridge.reconcile import Reconciler


def build_reconciler(cfg: Config, clock: Clock) -> Reconciler:
    # The deliverer is cheap to build: the docker SDK is imported only when a pass first
    # publishes or bootstraps something, never on the nothing-due path.
    from tlsbridge.deliver import DockerDeliverer

    return Reconciler(cfg, clock, deliverer=DockerDeliverer(cfg))
