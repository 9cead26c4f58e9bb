"""certbot_main's adjustments of certbot's ACME client (ARI `replaces`, Retry-After), and a guard
that fails as soon as certbot/acme move the internals they rely on.

The `replaces` tests drive acme's real ClientV2.new_order; only the network below it is a
stand-in (the real exchange with Pebble: tests/integration/test_replaces.py).
"""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsbridge.adapters import certbot_main
from tlsbridge.adapters.certbot_main import install_replaces, offers_ari, refuses_replaces, retry_at


def test_the_acme_internals_we_adjust_are_still_there() -> None:
    """If this fails, certbot/acme changed: revisit certbot_main.py (it then leaves acme as it is)."""
    params = list(inspect.signature(client.ClientV2.new_order).parameters)
    assert params == ["self", "csr_pem", "profile"]
    assert list(inspect.signature(client.ClientV2._post).parameters)[:1] == ["self"]
    assert "self.directory['newOrder']" in inspect.getsource(client.ClientV2.new_order)
    assert "self._post(" in inspect.getsource(client.ClientV2.new_order)
    assert issubclass(messages.NewOrder, messages.Order)
    assert {"identifiers", "profile"} <= set(messages.NewOrder._fields)
    check = client.ClientNetwork.__dict__["_check_response"]
    assert isinstance(check, classmethod)
    assert list(inspect.signature(check.__func__).parameters) == ["cls", "response", "content_type"]
    assert callable(getattr(client.ClientNetwork, "_post_once", None))
    assert messages.Error(typ="urn:ietf:params:acme:error:rateLimited").code == "rateLimited"


class Net:
    """acme's ClientNetwork stand-in: records what is posted, answers an empty pending order."""

    def __init__(self, refuse: messages.Error | None = None) -> None:
        self.posted: list[dict[str, Any]] = []
        self.refuse = refuse

    def post(self, url: str, obj: Any, **kwargs: Any) -> Any:
        self.posted.append(json.loads(obj.json_dumps()))
        if self.refuse is not None and "replaces" in self.posted[-1]:
            raise self.refuse

        class Response:
            headers = {"Location": "https://ca.test/order/1"}

            def json(self) -> dict[str, Any]:
                return {"status": "pending", "identifiers": json.loads(obj.json_dumps())["identifiers"],
                        "authorizations": [], "finalize": "https://ca.test/finalize/1"}

        return Response()


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _order(monkeypatch: pytest.MonkeyPatch, directory: dict[str, str], net: Net) -> None:
    monkeypatch.setattr(client.ClientV2, "new_order", client.ClientV2.new_order)  # restored afterwards
    assert install_replaces("aki.serial")
    acme = client.ClientV2(messages.Directory.from_json({"newNonce": "https://ca.test/nonce", **directory}),
                           net)  # type: ignore[arg-type]
    acme.new_order(_csr(), profile="classic")
    assert "_post" not in vars(acme)  # the wrapper is gone after the order


ARI_DIR = {"newOrder": "https://ca.test/new-order", "renewalInfo": "https://ca.test/ari"}


def test_new_order_carries_replaces_when_the_ca_offers_ari(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    _order(monkeypatch, ARI_DIR, net)
    assert net.posted == [{"identifiers": [{"type": "dns", "value": "a.example"}], "profile": "classic",
                           "replaces": "aki.serial"}]


def test_no_replaces_without_renewal_info(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    _order(monkeypatch, {"newOrder": "https://ca.test/new-order"}, net)
    assert "replaces" not in net.posted[0]


def test_a_refused_replaces_orders_again_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net(refuse=messages.Error(typ="urn:ietf:params:acme:error:malformed",
                                    detail="requester account did not request the certificate being replaced"))
    _order(monkeypatch, ARI_DIR, net)
    assert [("replaces" in p) for p in net.posted] == [True, False]


def test_other_order_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net(refuse=messages.Error(typ="urn:ietf:params:acme:error:rejectedIdentifier", detail="no"))
    with pytest.raises(messages.Error):
        _order(monkeypatch, ARI_DIR, net)
    assert len(net.posted) == 1


def test_small_readers() -> None:
    assert offers_ari(messages.Directory.from_json(dict(ARI_DIR)))
    assert not offers_ari(messages.Directory.from_json({"newOrder": "x"}))
    assert refuses_replaces(messages.Error(typ="urn:ietf:params:acme:error:alreadyReplaced"))
    assert not refuses_replaces(messages.Error(typ="urn:ietf:params:acme:error:rateLimited", detail="slow"))
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert retry_at("3600", now) == now + timedelta(hours=1)
    assert retry_at("Tue, 01 Dec 2026 15:00:00 GMT", now) == datetime(2026, 12, 1, 15, tzinfo=UTC)
    assert retry_at("soon", now) is None and retry_at(None, now) is None
    assert certbot_main.RETRY_AFTER_LINE == "tlsbridge: the CA asked to retry after"  # certbot_output reads it
