"""Per-site challenges (sites.<name>.challenge) and validate's DNS environment checks."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from tlsbridge import config
from tlsbridge.commands.validate import check_environment, credentials_problem
from tlsbridge.errors import ConfigError

TOP = "challenge: {method: webroot, webroot: /srv/acme, dns_plugin: rfc2136}\n"


def test_a_site_without_challenge_keys_takes_the_top_level_block() -> None:
    cfg = config.parse(TOP + "sites:\n  a: {domains: [a.com]}\n")
    assert cfg.sites["a"].challenge == cfg.challenge
    assert cfg.sites["a"].challenge_overrides == ()


def test_a_site_overrides_the_top_level_block_key_by_key() -> None:
    cfg = config.parse(TOP + "sites:\n"
                       "  a: {domains: [a.com]}\n"
                       "  w:\n    domains: ['*.w.com', w.com]\n"
                       "    challenge: {method: dns, dns_propagation: 2m, dns_credentials: /etc/c.ini}\n")
    w = cfg.sites["w"].challenge
    assert (w.method, w.dns_plugin, w.webroot) == ("dns", "rfc2136", Path("/srv/acme"))
    assert w.dns_propagation == timedelta(minutes=2)
    assert w.dns_credentials == Path("/etc/c.ini")
    assert cfg.sites["w"].challenge_overrides == ("method", "dns_propagation", "dns_credentials")
    assert cfg.challenge.method == "webroot" and cfg.sites["a"].challenge.method == "webroot"
    assert isinstance(w, config.ChallengeConfig)


def test_a_dns_top_level_with_a_webroot_site() -> None:
    cfg = config.parse("challenge: {method: dns, dns_plugin: cloudflare}\n"
                       "sites:\n  a: {domains: [a.com], challenge: {method: webroot}}\n"
                       "  b: {domains: ['*.b.com']}\n")
    assert cfg.sites["a"].challenge.method == "webroot"
    assert cfg.sites["b"].challenge.method == "dns"


def test_relative_site_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("sites:\n  a: {domains: [a.com], challenge: {webroot: acme}}\n")
    assert config.load(f).sites["a"].challenge.webroot == tmp_path / "acme"


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [
        ("sites:\n  a: {domains: ['*.a.com']}\n", "sites.a.domains[0]",
         "wildcard needs challenge.method dns, and site a uses webroot"),
        ("challenge: {method: dns, dns_plugin: x}\nsites:\n  a: {domains: ['*.a.com'], "
         "challenge: {method: standalone}}\n", "sites.a.domains[0]", "site a uses standalone"),
        ("sites:\n  a: {domains: [a.com], challenge: {method: dns}}\n",
         "sites.a.challenge.dns_plugin", "required with method dns"),
        ("sites:\n  a: {domains: [a.com], challenge: {methd: dns}}\n", "sites.a.challenge.methd", "unknown key"),
        ("sites:\n  a: {domains: [a.com], challenge: {http_port: 0}}\n", "sites.a.challenge.http_port",
         "out of range"),
        ("sites:\n  a: {domains: [a.com], challenge: {dns_plugin: 'Bad Name'}}\n",
         "sites.a.challenge.dns_plugin", "plugin name"),
        ("sites:\n  a: {domains: [a.com], challenge: [dns]}\n", "sites.a.challenge", "expected a mapping"),
    ],
)
def test_site_challenge_errors_name_the_site_key(text: str, path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(text, source="c.yaml")
    assert str(info.value).startswith(f"c.yaml: {path}: "), str(info.value)
    assert problem in str(info.value)


def _creds(tmp_path: Path, mode: int = 0o600) -> Path:
    f = tmp_path / "rfc2136.ini"
    f.write_text("dns_rfc2136_server = 127.0.0.1\n")
    os.chmod(f, mode)
    return f


def _dns_cfg(tmp_path: Path, creds: Path, *, on_site: bool = True) -> config.Config:
    block = f"{{method: dns, dns_plugin: rfc2136, dns_credentials: '{creds}'}}"
    if on_site:
        return config.parse(f"sites:\n  w: {{domains: ['*.w.com'], challenge: {block}}}\n", source="c.yaml")
    return config.parse(f"challenge: {block}\nsites:\n  w: {{domains: ['*.w.com']}}\n", source="c.yaml")


def test_an_installed_plugin_and_a_private_credentials_file_pass(tmp_path: Path) -> None:
    check_environment(_dns_cfg(tmp_path, _creds(tmp_path)), plugins=lambda: ["dns-rfc2136", "webroot"])


def test_a_missing_plugin_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_environment(_dns_cfg(tmp_path, _creds(tmp_path)), plugins=lambda: ["webroot"])
    msg = str(info.value)
    assert msg.startswith("c.yaml: sites.w.challenge.dns_plugin: ")
    assert "pip install certbot-dns-rfc2136" in msg and "tlsbridge[rfc2136]" in msg
    assert info.value.exit_code == 2


def test_the_real_entry_points_do_not_hold_a_made_up_plugin(tmp_path: Path) -> None:
    cfg = config.parse("challenge: {method: dns, dns_plugin: no-such-dns-plugin}\n"
                       "sites:\n  a: {domains: [a.com]}\n", source="c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: challenge.dns_plugin: .*certbot-dns-no-such-dns-plugin"):
        check_environment(cfg)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_credentials_readable_by_others_are_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigError, match=r"^c.yaml: challenge.dns_credentials: .*readable by group or others"):
        check_environment(_dns_cfg(tmp_path, _creds(tmp_path, mode), on_site=False),
                          plugins=lambda: ["dns-rfc2136"])


def test_credentials_that_are_missing_or_not_a_file(tmp_path: Path) -> None:
    assert "does not exist" in (credentials_problem(tmp_path / "nope.ini") or "")
    assert "not a regular file" in (credentials_problem(tmp_path) or "")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in (credentials_problem(fifo) or "")  # never opened: no hang
    with pytest.raises(ConfigError, match=r"sites.w.challenge.dns_credentials: .*does not exist"):
        check_environment(_dns_cfg(tmp_path, tmp_path / "nope.ini"), plugins=lambda: ["dns-rfc2136"])
