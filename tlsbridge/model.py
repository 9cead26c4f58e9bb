"""Value types shared by the pure core and the adapters. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.errors import TlsbridgeError


@dataclass(frozen=True)
class ObservedCert:
    """A certificate as read from disk (certbot's lineage or the published folder)."""

    serial: int
    not_before: datetime
    not_after: datetime
    domains: tuple[str, ...]
    key_type: str  # same vocabulary as acme.key_type: ecdsa, ecdsa-p384, rsa2048, ...
    issuer: str
    fingerprint: str  # sha256 of the leaf's DER, hex
    placeholder: bool = False
    ari_cert_id: str | None = None  # RFC 9773 certificate identifier, when the cert has an AKI

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class AriWindow:
    """The CA's suggested renewal window for one certificate (RFC 9773)."""

    start: datetime
    end: datetime
    retry_after: datetime  # do not ask again before this
    explanation_url: str | None = None


class Action(enum.StrEnum):
    NONE = "none"
    ISSUE = "issue"  # no certificate yet
    REISSUE = "reissue"  # domains or key type changed: a new order under the same cert name
    RENEW = "renew"  # due
    PUBLISH = "publish"  # certbot holds a certificate that is not what is published
    WAIT = "wait"  # failing, backing off


@dataclass(frozen=True)
class Decision:
    """What to do for a site and why. `reason` is a CamelCase word, `message` a sentence."""

    action: Action
    reason: str
    message: str
    renew_at: datetime | None = None

    def __str__(self) -> str:
        return f"{self.action.value}: {self.reason}: {self.message}"


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery batch did: the sites that failed, and per site the containers reloaded
    (or started) for it, verified or not (the sidecar counts them as reloads)."""

    failed: Mapping[str, TlsbridgeError] = field(default_factory=dict)
    reloaded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Per site delivered without failure: the targets (containers, Swarm services) verified
    # serving its certificate; an empty tuple: the site has no targets.
    served: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Sites whose targets could not even be looked up (the engine is unreachable) and that name
    # no container in `reload`: whether that fails them depends on what was delivered before.
    unreached: Mapping[str, TlsbridgeError] = field(default_factory=dict)


@dataclass
class SiteState:
    """What tlsbridge remembers about a site between runs (persisted in the state store)."""

    chosen_renewal: datetime | None = None  # the moment picked once inside the ARI window
    chosen_for: str | None = None  # fingerprint of the certificate the choice was for
    ari: AriWindow | None = None
    ari_for: str | None = None  # fingerprint of the certificate the ARI window belongs to
    ari_retry_at: datetime | None = None  # no window (CA without ARI, or it failed): ask again then
    failures: int = 0
    next_attempt: datetime | None = None
    last_error: str | None = None
    last_reason: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    config_hash: str | None = None
    delivered: str | None = None  # fingerprint of the certificate last verified as served
    retry_after: datetime | None = None  # the CA rate-limited the last attempt: not before this, it said
    # Per target (container name, or "service:<name>") the fingerprint verified served there;
    # empty: no target was ever found (a site whose labels match nothing, or no Docker at all).
    delivered_to: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AriAnswer:
    """What the CA answered when asked this pass for a certificate's renewal window (RFC 9773)."""

    window: AriWindow | None  # None: the CA offers no ARI, or the request failed (`error`)
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    """Everything one site's decision depends on, read in one go, so that deciding is pure."""

    lineage: ObservedCert | None  # certbot's current certificate for the site
    published: ObservedCert | None  # the published leaf (a placeholder included); None: none readable
    # certbot's four files are all there; None: not looked at (the lineage is what is published)
    lineage_complete: bool | None
    state: SiteState  # what the state store remembers (never changed by deciding)
    ari: AriAnswer | None = None  # the CA's answer this pass; None: it was not asked
