"""After a container start: check that the sites' containers serve what is published.

Run by the main loop for the sites the Docker watcher queued. Each running target of a site is
probed with the one verification path (delivery.verify), but without waiting for old workers: a
container that just started has none, so three fresh connections showing another certificate
make it stale at once. A site with a stale (or silent) target is delivered again: config test,
reload, verify.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tlsbridge.config import Config, Site
from tlsbridge.delivery.verify import VERIFY_CONSECUTIVE, Verifier, site_probes
from tlsbridge.errors import TlsbridgeError
from tlsbridge.sidecar.metrics import Metrics

if TYPE_CHECKING:
    from tlsbridge.delivery.containers import DockerDeliverer
    from tlsbridge.model import ObservedCert

logger = logging.getLogger(__name__)

# Checks after a start: no reload happened, so no settle time; another certificate is final.
AFTER_START = Verifier(settle=0.0, stale_after=VERIFY_CONSECUTIVE, after="the container start")


def verify_sites(cfg: Config, metrics: Metrics, names: Sequence[str],
                 verifier: Verifier = AFTER_START) -> None:
    """Verify each site's running targets; deliver again (reload, verify) where one fails."""
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.adapters.publish import Publisher
    from tlsbridge.certinfo import parse_pem
    from tlsbridge.delivery.containers import DockerDeliverer
    from tlsbridge.delivery.scope import own_scope
    from tlsbridge.targets import resolve

    publisher = Publisher(cfg.publish.dir)
    adapter = DockerAdapter(cfg.docker)
    try:
        for name in names:
            site = cfg.sites[name]
            pem = publisher.read(name, "fullchain.pem")
            if pem is None:
                continue  # nothing published yet: the next pass bootstraps and issues
            want = parse_pem(pem)
            now = time.monotonic()
            try:
                if site.verify is not None:  # HOST:PORT in front of the containers
                    probes = site_probes(site, want.fingerprint, [], None, now)
                else:
                    # only this instance's containers (delivery.scope): another stack's nginx
                    # labelled for a site of the same name is none of our business
                    scope = own_scope(cfg.publish.dir, adapter)
                    running = [(c, now) for c in resolve(site, adapter.containers(), scope.owns).targets
                               if c.running]
                    probes = site_probes(site, want.fingerprint, running, adapter.own_networks(), now)
            except TlsbridgeError as exc:
                logger.warning("site=%s cannot verify after a container start: %s", name, exc)
                continue
            failed = [str(err) for err in verifier(probes) if err is not None]
            if not failed:
                continue
            metrics.verify_failures.labels(name).inc()
            logger.warning("%s; reloading", "; ".join(failed))
            _redeliver(DockerDeliverer(cfg, adapter), metrics, site, want)
    finally:
        adapter.close()


def _redeliver(deliverer: DockerDeliverer, metrics: Metrics, site: Site, want: ObservedCert) -> None:
    report = deliverer.deliver([(site, want)])
    metrics.count_reloads(report.reloaded)
    if site.name in report.failed:
        metrics.verify_failures.labels(site.name).inc()
        logger.error("site=%s reload after a container start failed: %s", site.name,
                     report.failed[site.name])

