"""Bootstrap placeholders: self-signed, recognisable, key matching, short-lived."""

from __future__ import annotations

from datetime import timedelta

from helpers import T0, cert_files

from tlsbridge.certinfo import PLACEHOLDER_ORG, key_matches_cert, parse_pem
from tlsbridge.placeholder import make_placeholder, needs_placeholder


def test_a_placeholder_is_recognised_and_its_key_matches() -> None:
    files = make_placeholder("shop", ("shop.example.com", "*.shop.example.com"), T0)
    cert = parse_pem(files.cert)
    assert cert.placeholder
    assert PLACEHOLDER_ORG in cert.issuer and "CN=tlsbridge placeholder for shop" in cert.issuer
    assert cert.domains == ("shop.example.com", "*.shop.example.com")
    assert cert.not_after - T0 == timedelta(days=7)
    assert key_matches_cert(files.privkey, files.cert)
    assert files.fullchain == files.cert == files.chain


def test_a_long_site_name_still_fits_the_common_name() -> None:
    files = make_placeholder("s" * 64, ("a.example.com",), T0)
    assert parse_pem(files.cert).placeholder


def test_needs_placeholder() -> None:
    domains = ("shop.example.com",)
    fresh = parse_pem(make_placeholder("shop", domains, T0).cert)
    assert needs_placeholder(None, domains, T0)
    assert not needs_placeholder(fresh, domains, T0 + timedelta(days=5))
    assert needs_placeholder(fresh, domains, T0 + timedelta(days=6, hours=1))  # about to expire
    assert needs_placeholder(fresh, ("shop.example.com", "www.shop.example.com"), T0)  # domains changed
    assert not needs_placeholder(parse_pem(cert_files(domains).cert), domains, T0)  # a real one
