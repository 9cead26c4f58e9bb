"""The sidecar's Prometheus metrics (prometheus-client, one private registry).

Every name starts with `tlsbridge_`; per-site series carry the label `site`. Times are Unix
seconds (as `time()` in PromQL: alert on `tlsbridge_certificate_not_after_seconds - time()`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.utils import floatToGoString

from tlsbridge import __version__

__all__ = ["CONTENT_TYPE", "Metrics"]

# Gauges whose value is a moment, per site: name -> help.
SITE_TIMES = {
    "not_before": ("tlsbridge_certificate_not_before_seconds",
                   "notBefore of the site's published certificate (Unix seconds)"),
    "not_after": ("tlsbridge_certificate_not_after_seconds",
                  "notAfter of the site's published certificate (Unix seconds)"),
    "renewal": ("tlsbridge_certificate_renewal_time_seconds",
                "The chosen renewal moment of the site's certificate (Unix seconds)"),
    "last_success": ("tlsbridge_last_success_time_seconds",
                     "When the site last got a certificate issued or published (Unix seconds)"),
    "next_wakeup": ("tlsbridge_next_wakeup_time_seconds",
                    "When the sidecar next looks at the site on its own (Unix seconds)"),
}
SITE_FAILURES = ("tlsbridge_site_consecutive_failures",
                 "Consecutive failed attempts of the site (0: healthy)")
SITE_UNDELIVERED = ("tlsbridge_site_undelivered",
                    "1 while the site's published certificate is not yet verified as served "
                    "(status `undelivered`), else 0")


class Metrics:
    def __init__(self) -> None:
        # No *_created series: they double the output for no use here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        Gauge("tlsbridge_build_info", "tlsbridge version", ["version"], registry=r).labels(
            __version__).set(1)
        self.sites = _SiteCollector()  # rendered apart: see render()
        self.passes = Counter("tlsbridge_passes", "Reconcile passes run, by scope (all, sites)",
                              ["scope"], registry=r)
        self.pass_errors = Counter("tlsbridge_pass_errors",
                                   "Passes that could not run at all (e.g. the state store failed)",
                                   registry=r)
        self.pass_duration = Gauge("tlsbridge_last_pass_duration_seconds",
                                   "Wall time of the last pass", registry=r)
        self.last_pass = Gauge("tlsbridge_last_pass_time_seconds",
                               "When the last pass finished (Unix seconds)", registry=r)
        self.issuances = Counter("tlsbridge_issuances", "Certificates obtained from the CA",
                                 ["site"], registry=r)
        self.failures = Counter("tlsbridge_failures", "Failed site attempts, by reason",
                                ["site", "reason"], registry=r)
        self.reloads = Counter("tlsbridge_reloads", "nginx reloads done for the site",
                               ["site"], registry=r)
        self.verify_failures = Counter("tlsbridge_verification_failures",
                                       "Checks that found a target not serving the published "
                                       "certificate", ["site"], registry=r)
        self.config_reloads = Counter("tlsbridge_config_reloads", "SIGHUP config reloads, by result",
                                      ["result"], registry=r)
        self.docker_up = Gauge("tlsbridge_docker_events_connected",
                               "1 while the Docker event stream is connected", registry=r)
        # Labelled so the series is absent (not 0) until daemon_tls is configured and read.
        self.daemon_tls_not_after = Gauge("tlsbridge_daemon_tls_not_after_seconds",
                                          "notAfter of the Docker engine's TLS certificate "
                                          "(daemon_tls; Unix seconds)", ["cert"], registry=r)
        self.discovered = Gauge("tlsbridge_discovered_site", "1 per site declared by an app "
                                "container's labels (discovery)", ["site", "container"], registry=r)
        self.discovery_skipped = Gauge("tlsbridge_discovery_skipped", "1 per labelled app container "
                                       "skipped for a bad label or a conflict (discovery)",
                                       ["container", "label"], registry=r)

    def set_discovered(self, sites: Mapping[str, str], skipped: Iterable[tuple[str, str]]) -> None:
        """Discovery's sites (site -> container) and skipped (container, label), replacing the last."""
        self.discovered.clear()
        for site, container in sites.items():
            self.discovered.labels(site, container).set(1)
        self.discovery_skipped.clear()
        for container, label in skipped:
            self.discovery_skipped.labels(container, label).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry) + self.sites.text()

    def count_reloads(self, reloaded: Mapping[str, Sequence[str]]) -> None:
        """Count the containers a delivery reloaded or started, per site."""
        for site, containers in reloaded.items():
            if containers:
                self.reloads.labels(site).inc(len(containers))

    def set_sites(self, sites: Mapping[str, SiteValues]) -> None:
        """Replace every per-site gauge at once (sites missing from `sites` disappear)."""
        self.sites.snapshot = {name: dict(v) for name, v in sites.items()}
        self.forget_sites(sites)

    def forget_sites(self, keep: Iterable[str]) -> None:
        """Drop the counters of sites no longer in the config."""
        keep = set(keep)
        for counter in (self.issuances, self.reloads, self.verify_failures):
            for labels in list(_children(counter)):
                if labels[0] not in keep:
                    counter.remove(*labels)
        for labels in list(_children(self.failures)):
            if labels[0] not in keep:
                self.failures.remove(*labels)


SiteValues = Mapping[str, "datetime | float | int | None"]


class _SiteCollector:
    """Per-site gauges, rendered once per snapshot and served as bytes until the next one.

    Not labelled Gauge children: a snapshot is swapped in one assignment (no half-updated
    scrape), 2,000 sites cost a dict rather than 12,000 metric objects, and a scrape between
    two passes costs a copy of the cached text, not a walk over every site.
    """

    def __init__(self) -> None:
        self.snapshot: dict[str, dict[str, datetime | float | int | None]] = {}
        self._cache: tuple[dict[str, dict[str, datetime | float | int | None]], bytes] | None = None

    def text(self) -> bytes:
        snapshot, cache = self.snapshot, self._cache
        if cache is not None and cache[0] is snapshot:
            return cache[1]
        lines: list[str] = []
        names = sorted(snapshot)
        for field, (name, text) in (*SITE_TIMES.items(), ("failures", SITE_FAILURES),
                                    ("undelivered", SITE_UNDELIVERED)):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
            for site in names:
                value = snapshot[site].get(field)
                if value is not None:
                    number = value.timestamp() if isinstance(value, datetime) else float(value)
                    lines.append(f'{name}{{site="{_label(site)}"}} {_number(number)}')
        data = ("\n".join(lines) + "\n").encode()
        self._cache = (snapshot, data)
        return data


def _number(value: float) -> str:
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]  # as prometheus-client writes it
    return text


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _children(metric: Counter) -> list[tuple[str, ...]]:
    return [tuple(k) for k in metric._metrics]  # prometheus-client keeps labelled children here
