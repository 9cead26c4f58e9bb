"""Hardening of the generated nginx snippets: Mozilla's groups, no version banner, no Host
reflection in the redirect. A real scanner checks the result in tests/security/."""

from __future__ import annotations

from tlsbridge.config import Site
from tlsbridge.render import nginx

SITES = [Site("plain", ("example.com", "www.example.com")),
         Site("wild", ("*.example.org", "example.org")),
         Site("onlywild", ("*.example.net",))]


def _files(**kw: object) -> dict[str, str]:
    return nginx.render_all(SITES, nginx.NginxOptions(**kw))  # type: ignore[arg-type]


def test_only_mozillas_intermediate_groups_are_offered() -> None:
    tls = _files()[nginx.TLS_FILE]
    assert "\nssl_ecdh_curve X25519:prime256v1:secp384r1;\n" in tls
    assert "X448" not in tls and "secp521r1" not in tls and "ssl_ecdh_curve X25519MLKEM768" not in tls


def test_post_quantum_hybrid_is_opt_in_and_first() -> None:
    tls = _files(post_quantum=True)[nginx.TLS_FILE]
    assert "\nssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;\n" in tls


def test_redirect_goes_to_the_sites_own_name() -> None:
    files = _files()
    for site, target in (("plain", "example.com"), ("wild", "example.org"), ("onlywild", "example.net")):
        text = files[nginx.site_file(site)]
        assert f"return 301 https://{target}$request_uri;" in text
        assert "$host$request_uri" not in text
        assert text.count("server_tokens off;") == 2
