"""The config's types: frozen values, built only by tlsbridge.config.parser."""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from tlsbridge.notify.settings import NotifyConfig

DIRECTORY_ALIASES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
KEY_TYPES = ("ecdsa", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096")
METHODS = ("webroot", "standalone", "dns")
CHALLENGE_KEYS = ("method", "webroot", "http_port", "dns_plugin", "dns_credentials", "dns_propagation")
DEFAULT_SOURCE = "tlsbridge.yaml"


@dataclass(frozen=True)
class Eab:
    kid: str
    hmac_key: str = field(repr=False)


@dataclass(frozen=True)
class CaConfig:  # one ACME CA: its directory, the e-mail and EAB of our account there
    directory: str
    email: str | None = None
    eab: Eab | None = None


@dataclass(frozen=True)
class AcmeConfig:
    directory: str = DIRECTORY_ALIASES["letsencrypt"]
    email: str | None = None
    ca_bundle: Path | None = None
    key_type: str = "ecdsa"
    profile: str | None = None
    eab: Eab | None = None
    fallback: tuple[CaConfig, ...] = ()  # tried in order when the primary is away or rate-limits


@dataclass(frozen=True)
class CertbotConfig:
    config_dir: Path = Path("/etc/letsencrypt")
    work_dir: Path = Path("/var/lib/tlsbridge/certbot-work")
    logs_dir: Path = Path("/var/log/tlsbridge")
    timeout: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class ChallengeConfig:
    method: str = "webroot"
    webroot: Path = Path("/var/lib/tlsbridge/acme-webroot")
    http_port: int = 80
    dns_plugin: str | None = None
    dns_credentials: Path | None = None
    dns_propagation: timedelta | None = None


@dataclass(frozen=True)
class PublishConfig:
    dir: Path = Path("/var/lib/tlsbridge/certs")
    owner: str | None = None
    group: str | None = None
    key_mode: int = 0o600
    cert_mode: int = 0o644
    keep: int = 2


@dataclass(frozen=True)
class StateConfig:
    dir: Path = Path("/var/lib/tlsbridge/state")


@dataclass(frozen=True)
class RenewalConfig:
    before_expiry: timedelta | None = None  # None: auto (ARI, else the lifetime rule)
    check_interval: timedelta = timedelta(hours=12)
    jitter: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class DockerConfig:
    host: str | None = None
    timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class ReloadTarget:
    """One `reload` entry: a container by name, or every container with a label."""

    container: str | None = None
    label: str | None = None  # KEY=VALUE

    def __str__(self) -> str:
        return f"container {self.container}" if self.container else f"label {self.label}"


@dataclass(frozen=True)
class Site:
    name: str
    domains: tuple[str, ...]
    reload: tuple[ReloadTarget, ...] = ()
    verify: tuple[str, int] | None = None
    upstream: str | None = None
    hsts: bool = False
    # The site's EFFECTIVE challenge: the top-level block with the site's own keys over it.
    challenge: ChallengeConfig = ChallengeConfig()
    # Which challenge keys the site itself set (to name sites.<name>.challenge.<key> in errors).
    challenge_overrides: tuple[str, ...] = ()
    discovered: str | None = None  # declared by labels of this container (discovery), not in YAML


@dataclass(frozen=True)
class DiscoveryConfig:
    """Sites declared by labels of app containers (tlsbridge.discovery, README "Discovery")."""

    enabled: bool = False
    grace: timedelta = timedelta(minutes=5)  # a stopped app's server block stays this long
    dir: Path = Path("/var/lib/tlsbridge/discovered")  # the server blocks nginx includes


@dataclass(frozen=True)
class DaemonTlsConfig:
    out: Path
    hostnames: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    listen: str = "0.0.0.0:2376"
    clients: tuple[str, ...] = ()
    merge: Path | None = None
    server_cert_site: str | None = None


@dataclass(frozen=True)
class Config:
    source: str
    acme: AcmeConfig
    certbot: CertbotConfig
    challenge: ChallengeConfig
    publish: PublishConfig
    state: StateConfig
    renewal: RenewalConfig
    docker: DockerConfig
    sites: Mapping[str, Site]
    daemon_tls: DaemonTlsConfig | None = None
    discovery: DiscoveryConfig = DiscoveryConfig()
    notify: NotifyConfig = NotifyConfig()


