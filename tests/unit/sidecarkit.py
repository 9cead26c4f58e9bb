"""Shared by the sidecar's unit tests: a config in a temporary folder, outcomes, a fixed clock."""

from __future__ import annotations

from pathlib import Path

from helpers import T0

from tlsbridge import config
from tlsbridge.model import Action, Decision, ObservedCert
from tlsbridge.plan import SitePlan
from tlsbridge.reconcile import SiteOutcome

CERT = ObservedCert(serial=0xABCDEF0123456789AB, not_before=T0, not_after=T0, domains=("shop.example.com",),
                    key_type="ecdsa", issuer="CN=unit test CA", fingerprint="f" * 64)


def make_config(tmp_path: Path, sites: str = "shop: {domains: [shop.example.com]}\n  blog: {domains: [blog.example.com]}",
                extra: str = "") -> config.Config:
    path = tmp_path / "tlsbridge.yaml"
    path.write_text(f"""
acme: {{directory: https://ca.invalid/dir}}
certbot: {{config_dir: {tmp_path}/le}}
publish: {{dir: {tmp_path}/certs}}
state: {{dir: {tmp_path}/state}}
renewal: {{before_expiry: 30d, check_interval: 12h, jitter: 1h}}
sites:
  {sites}
{extra}""")
    return config.load(path)


def outcome(site: str, action: Action = Action.NONE, reason: str = "Valid", *, ok: bool = True,
            issued: bool = False, failure: str | None = None) -> SiteOutcome:
    plan = SitePlan(site, Decision(action, reason, "a message"), ())
    return SiteOutcome(site, plan, ok=ok, reason=failure, error=failure, issued=issued,
                       cert=CERT if issued else None)
