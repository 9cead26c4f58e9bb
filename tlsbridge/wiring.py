"""Build the reconciler with its real adapters for a config (shared by renew and run)."""

from __future__ import annotations

from tlsbridge.clock import Clock
from tlsbridge.config import Config
from tlsbridge.reconcile import Reconciler


def build_reconciler(cfg: Config, clock: Clock) -> Reconciler:
    return Reconciler(cfg, clock)
