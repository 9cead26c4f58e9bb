"""Pure: a site's Decision -> the ordered steps to apply; printable for `renew --dry-run`."""

from __future__ import annotations

from dataclasses import dataclass

from tlsbridge.model import Action, Decision

_OBTAIN = {
    Action.ISSUE: "certbot: issue a new certificate",
    Action.REISSUE: "certbot: re-issue under the same cert name",
    Action.RENEW: "certbot: renew",
}


@dataclass(frozen=True)
class SitePlan:
    site: str
    decision: Decision
    steps: tuple[str, ...]

    def render(self) -> str:
        lines = [f"{self.site}: {self.decision}"]
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps, 1)]
        return "\n".join(lines)


def plan_site(site: str, decision: Decision, *, bootstrap: bool, deliver: bool) -> SitePlan:
    """The steps for one site: bootstrap, obtain, publish, deliver (reload + verify)."""
    steps: list[str] = []
    if decision.action in _OBTAIN:
        if bootstrap:
            steps.append("publish a self-signed placeholder so nginx can start")
            if deliver:
                steps.append("start or reload the site's nginx containers")
        steps.append(_OBTAIN[decision.action])
    if decision.action in (*_OBTAIN, Action.PUBLISH):
        steps.append("publish atomically")
        if deliver:
            steps.append("nginx -t, reload, verify the served certificate")
    return SitePlan(site, decision, tuple(steps))
