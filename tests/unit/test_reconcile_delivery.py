"""The reconciler's delivery phases with a recording deliverer: batching, bootstrap, repair.

The obtainer writes a certbot-like lineage from cryptography-made certificates; everything else
(publisher, certstore, state store) is the real code on a temp folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from helpers import T0, cert_files

from tlsbridge import config
from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.adapters.publish import Publisher
from tlsbridge.certinfo import parse_pem
from tlsbridge.clock import FixedClock
from tlsbridge.config import Site
from tlsbridge.errors import DockerError, ReloadError, TlsbridgeError
from tlsbridge.model import Action, AriWindow, DeliveryReport, ObservedCert
from tlsbridge.reconcile import Reconciler
from tlsbridge.wiring import build_ports


class Obtainer:
    def __init__(self, root: Path, log: list[str]) -> None:
        self.root, self.log = root, log

    def obtain(self, site: Site, action: Action) -> None:
        self.log.append(f"obtain {site.name}")
        live = self.root / "live" / site.name
        live.mkdir(parents=True, exist_ok=True)
        for name, data in cert_files(site.domains, not_before=T0).by_name().items():
            (live / name).write_bytes(data)


class NoAri:
    def window(self, cert_id: str, now: datetime, ca: str | None = None) -> AriWindow | None:
        raise AssertionError("renewal.before_expiry is set: the CA is never asked")


class Deliverer:
    def __init__(self, log: list[str], publisher: Publisher, fail: Mapping[str, TlsbridgeError] | None = None):
        self.log, self.publisher, self.fail = log, publisher, dict(fail or {})
        self.unreached: dict[str, TlsbridgeError] = {}  # the engine away: targets not looked up
        self.targets: dict[str, tuple[str, ...]] = {}

    def bootstrap(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        for s in sites:  # what nginx would load when started now
            assert parse_pem(self.publisher.read(s.name) or b"").placeholder
        self.log.append("bootstrap " + ",".join(s.name for s in sites))
        return {}

    def precheck(self, sites: Sequence[Site]) -> Mapping[str, TlsbridgeError]:
        return {}

    def deliver(self, items: Sequence[tuple[Site, ObservedCert]]) -> DeliveryReport:
        self.log.append("deliver " + ",".join(s.name for s, _ in items))
        names = [s.name for s, _ in items]
        return DeliveryReport(failed={n: self.fail[n] for n in names if n in self.fail},
                              unreached={n: self.unreached[n] for n in names if n in self.unreached},
                              served={n: self.targets.get(n, ()) for n in names
                                      if n not in self.fail and n not in self.unreached})


def setup(tmp_path: Path, fail: Mapping[str, TlsbridgeError] | None = None) -> tuple[Reconciler, list[str]]:
    cfg = config.parse(f"""
acme: {{directory: https://ca.invalid/dir}}
certbot: {{config_dir: {tmp_path}/le}}
publish: {{dir: {tmp_path}/certs}}
state: {{dir: {tmp_path}/state}}
renewal: {{before_expiry: 30d}}
sites:
  one: {{domains: [one.example.com]}}
  two: {{domains: [two.example.com]}}
""", base=tmp_path)
    log: list[str] = []
    publisher = Publisher(cfg.publish.dir)
    rec = Reconciler(cfg, FixedClock(T0), build_ports(cfg), obtainer=Obtainer(cfg.certbot.config_dir, log),
                     ari=NoAri(), deliverer=Deliverer(log, publisher, fail))
    return rec, log


def test_placeholders_then_one_bootstrap_then_issue_then_one_delivery_batch(tmp_path: Path) -> None:
    rec, log = setup(tmp_path)
    outcomes = rec.run_pass()
    assert [o.ok for o in outcomes] == [True, True]
    assert log == ["bootstrap one,two", "obtain one", "obtain two", "deliver one,two"]
    assert not list((tmp_path / "le").rglob("*placeholder*"))
    for o in outcomes:
        assert o.cert is not None and rec.ports.store.get(o.site).delivered == o.cert.fingerprint
        assert not parse_pem(rec.ports.publisher.read(o.site) or b"").placeholder

    log.clear()
    again = rec.run_pass()
    assert log == [] and all(o.plan.decision.action is Action.NONE for o in again)


def test_a_failed_delivery_fails_only_its_site_and_is_retried_without_reissuing(tmp_path: Path) -> None:
    rec, log = setup(tmp_path, {"two": ReloadError("site=two: nginx's config test failed in container web")})
    outcomes = {o.site: o for o in rec.run_pass()}
    assert outcomes["one"].ok and not outcomes["two"].ok
    assert outcomes["two"].issued and outcomes["two"].published and outcomes["two"].reason == "Reload"
    assert rec.ports.store.get("two").delivered is None

    log.clear()
    assert rec.deliverer is not None
    rec.deliverer.fail.clear()  # type: ignore[attr-defined]
    again = {o.site: o for o in rec.run_pass()}
    assert again["two"].ok and again["two"].plan.decision.reason == "NotDelivered"
    assert again["one"].plan.decision.action is Action.NONE
    assert log == ["deliver two"]


def test_a_published_placeholder_with_a_valid_lineage_is_published_over(tmp_path: Path) -> None:
    rec, log = setup(tmp_path)
    rec.run_pass()
    from tlsbridge.placeholder import make_placeholder

    rec.ports.publisher.publish("one", make_placeholder("one", ("one.example.com",), T0))
    log.clear()
    outcomes = {o.site: o for o in rec.run_pass()}
    assert outcomes["one"].plan.decision.reason == "NotPublished" and outcomes["one"].published
    assert log == ["deliver one"]
    assert rec.ports.publisher.read("one") == (tmp_path / "le/live/one/cert.pem").read_bytes()


def test_a_nothing_due_pass_parses_no_certificate(tmp_path: Path) -> None:
    """The memo is injected: a new process (a new memo, loaded from state.dir) parses nothing."""
    rec, log = setup(tmp_path)
    rec.run_pass()
    parsed: list[bytes] = []

    def counting(pem: bytes) -> ObservedCert:
        parsed.append(pem)
        return parse_pem(pem)

    fresh = Reconciler(rec.cfg, FixedClock(T0), build_ports(rec.cfg, CertMemo(parse=counting)),
                       obtainer=rec.obtainer, ari=NoAri(), deliverer=rec.deliverer)
    log.clear()
    outcomes = fresh.run_pass()
    assert [o.plan.decision.reason for o in outcomes] == ["NotDue", "NotDue"] and log == []
    assert parsed == []


def test_an_unreachable_engine_fails_a_site_delivered_before_and_the_next_pass_delivers(tmp_path: Path) -> None:
    """Issue 10 point 2: a renewal made while the engine is away is not lost."""
    rec, log = setup(tmp_path)
    deliverer = rec.deliverer
    assert isinstance(deliverer, Deliverer)
    deliverer.targets = {"one": ("web",)}
    rec.run_pass()
    assert rec.ports.store.get("one").delivered_to == {"web": rec.ports.store.get("one").delivered}
    assert rec.ports.store.get("two").delivered_to == {}

    deliverer.unreached = {n: DockerError(f"site={n}: Docker is not reachable") for n in ("one", "two")}
    log.clear()
    forced = {o.site: o for o in rec.run_pass(force=True)}
    assert log == ["obtain one", "obtain two", "deliver one,two"]
    # `one` had a target: its new certificate is not served, a failure; `two` never had one.
    assert not forced["one"].ok and forced["one"].reason == "Docker" and forced["one"].issued
    assert "served this site before: web" in (forced["one"].error or "")
    assert forced["two"].ok
    state = rec.ports.store.get("one")
    assert state.failures == 1 and state.delivered != forced["one"].cert.fingerprint  # type: ignore[union-attr]

    deliverer.unreached = {}
    log.clear()
    again = {o.site: o for o in rec.run_pass()}
    assert log == ["deliver one"]  # no new certificate: delivery only
    assert again["one"].ok and again["one"].plan.decision.reason == "NotDelivered"
    state = rec.ports.store.get("one")
    assert state.failures == 0 and state.delivered == forced["one"].cert.fingerprint  # type: ignore[union-attr]
