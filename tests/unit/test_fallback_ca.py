"""The CA's bad days (issue 15): acme.fallback in the config, the order CAs are tried in, which
CA a site's certificate came from and a rate limit's retry-after in status and on the page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers import T0, cert_files

from tlsbridge import config
from tlsbridge.adapters.certbot import CertbotRunner, build_argv, falls_back
from tlsbridge.adapters.certbot_output import DnsSide, classify
from tlsbridge.config import CaConfig, Site
from tlsbridge.errors import (
    CAUnreachableError,
    CertbotError,
    ConfigError,
    RateLimitedError,
    TransientCAError,
    ValidationFailedError,
)
from tlsbridge.model import Action, Observation, ObservedCert, SiteState
from tlsbridge.render.status_page import PageMeta, PageRow, render
from tlsbridge.status import render_table, site_status

CFG = """
acme:
  directory: https://primary.test/dir
  email: a@example.com
  fallback:
    - directory: https://second.test/acme/dir
      eab: {kid: k2, hmac_key: s2}
    - {directory: https://third.test/dir, email: other@example.com}
certbot: {config_dir: CONFIG_DIR, work_dir: /w, logs_dir: /l}
challenge: {method: standalone}
sites: {ex: {domains: [example.com, www.example.com]}}
"""


def cfg(config_dir: Path | str = "/c") -> config.Config:
    return config.parse(CFG.replace("CONFIG_DIR", str(config_dir)))


# -- config --------------------------------------------------------------------------------------

def test_fallback_cas_in_order_email_defaults_to_the_primarys() -> None:
    fb = cfg().acme.fallback
    assert [c.directory for c in fb] == ["https://second.test/acme/dir", "https://third.test/dir"]
    assert fb[0].email == "a@example.com" and fb[0].eab is not None and fb[0].eab.kid == "k2"
    assert fb[1].email == "other@example.com" and fb[1].eab is None
    assert config.parse("acme: {fallback: [{directory: letsencrypt-staging}]}").acme.fallback[0].directory == (
        config.DIRECTORY_ALIASES["letsencrypt-staging"])
    assert config.parse("acme: {}").acme.fallback == ()
    assert "s2" not in repr(cfg().acme)


@pytest.mark.parametrize(("fallback", "path"), [
    ("{directory: x}", "acme.fallback: expected a list"),
    ("[{email: a@example.com}]", "acme.fallback[0].directory: is required"),
    ("[{directory: ftp://x}]", "acme.fallback[0].directory: expected"),
    ("[{directory: 'https://b.test/d', email: nope}]", "acme.fallback[0].email: not an e-mail"),
    ("[{directory: 'https://b.test/d', eab: {kid: k}}]", "acme.fallback[0].eab.hmac_key: is required"),
    ("[{directory: 'https://b.test/d', profile: x}]", "acme.fallback[0].profile: unknown key"),
    ("[{directory: 'https://a.test/d'}]", "acme.fallback[0].directory: https://a.test/d is already listed"),
    ("[{directory: 'https://b.test/d'}, {directory: 'https://b.test/d'}]", "acme.fallback[1].directory"),
])
def test_fallback_errors_name_the_key(fallback: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(f"acme: {{directory: 'https://a.test/d', fallback: {fallback}}}\n")
    assert path in str(err.value)


def test_argv_for_a_fallback_ca_uses_its_server_email_and_eab() -> None:
    c = cfg()
    joined = " ".join(build_argv(c, c.sites["ex"], Action.ISSUE, ca=c.acme.fallback[0]))
    assert "--server https://second.test/acme/dir" in joined and "--eab-kid k2" in joined
    assert "-m a@example.com" in joined
    joined = " ".join(build_argv(c, c.sites["ex"], Action.ISSUE, ca=c.acme.fallback[1]))
    assert "-m other@example.com" in joined and "--eab-kid" not in joined
    assert "--server https://primary.test/dir" in " ".join(build_argv(c, c.sites["ex"], Action.ISSUE))


# -- the order CAs are tried in -------------------------------------------------------------------

class ScriptedRunner(CertbotRunner):
    """certbot's runs replaced by scripted outcomes per CA (the real runs: tests/integration)."""

    def __init__(self, c: config.Config, outcomes: dict[str, CertbotError | None]) -> None:
        super().__init__(c, attempts=1)
        self.outcomes = outcomes
        self.tried: list[str] = []

    def certonly(self, site: Site, action: Action, dns: DnsSide | None,
                 ca: CaConfig | None = None) -> CertbotError | None:
        assert ca is not None
        self.tried.append(ca.directory)
        return self.outcomes.get(ca.directory)


P, S, T = "https://primary.test/dir", "https://second.test/acme/dir", "https://third.test/dir"


def test_the_primary_alone_while_it_works() -> None:
    r = ScriptedRunner(cfg(), {})
    r.obtain(r.cfg.sites["ex"], Action.RENEW)
    assert r.tried == [P]


def test_fallbacks_in_order_when_the_primary_is_away_or_rate_limits() -> None:
    r = ScriptedRunner(cfg(), {P: CAUnreachableError("site=ex: away"), S: RateLimitedError("site=ex: limited")})
    r.obtain(r.cfg.sites["ex"], Action.ISSUE)
    assert r.tried == [P, S, T]


def test_no_fallback_when_the_failure_would_repeat_elsewhere() -> None:
    r = ScriptedRunner(cfg(), {P: ValidationFailedError("site=ex: the CA could not validate example.com")})
    with pytest.raises(ValidationFailedError):
        r.obtain(r.cfg.sites["ex"], Action.ISSUE)
    assert r.tried == [P]
    assert falls_back(TransientCAError("x")) and falls_back(RateLimitedError("x"))
    assert not falls_back(CertbotError("x"))


def test_every_ca_failing_raises_the_primarys_error_naming_the_others() -> None:
    limited = RateLimitedError("site=ex: the CA rate-limited the order", retry_after=T0)
    r = ScriptedRunner(cfg(), {P: limited, S: CAUnreachableError("site=ex: second away"),
                               T: ValidationFailedError("site=ex: third could not validate")})
    with pytest.raises(RateLimitedError) as err:
        r.obtain(r.cfg.sites["ex"], Action.ISSUE)
    assert err.value.retry_after == T0  # the primary's retry-after still sets the backoff
    assert str(err.value) == (f"site=ex: the CA rate-limited the order; fallback {S}: second away; "
                              f"fallback {T}: third could not validate")


# -- which certificate a renewal replaces (ARI) ------------------------------------------------------

def lineage(tmp_path: Path, server: str, domains: tuple[str, ...] = ("example.com", "www.example.com"),
            account: str = "acc1", account_exists: bool = True) -> str | None:
    """certbot's files for lineage `ex`; the ARI id of its certificate."""
    from tlsbridge.certinfo import parse_pem

    files = cert_files(domains)
    (tmp_path / "live" / "ex").mkdir(parents=True, exist_ok=True)
    (tmp_path / "live" / "ex" / "cert.pem").write_bytes(files.cert)
    (tmp_path / "renewal").mkdir(exist_ok=True)
    (tmp_path / "renewal" / "ex.conf").write_text(
        f"version = 5.8.0\n[renewalparams]\naccount = {account}\nserver = {server}\nkey_type = ecdsa\n")
    if account_exists:
        host, path = server.split("://", 1)[1].split("/", 1)
        (tmp_path / "accounts" / host / path / account).mkdir(parents=True, exist_ok=True)
    return parse_pem(files.cert).ari_cert_id


def test_a_renewal_at_the_issuing_ca_and_account_replaces_the_certificate(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    cert_id = lineage(tmp_path, P)
    r, site, primary = CertbotRunner(c), c.sites["ex"], CaConfig(P)
    assert cert_id and r.replaces(site, Action.RENEW, primary) == cert_id
    for action in (Action.ISSUE, Action.REISSUE):
        assert r.replaces(site, action, primary) is None
    assert r.replaces(site, Action.RENEW, c.acme.fallback[0]) is None  # another CA never issued it


def test_no_replaces_for_another_account_or_other_names(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    lineage(tmp_path, P, account_exists=False)  # certbot registered anew since
    assert CertbotRunner(c).replaces(c.sites["ex"], Action.RENEW, CaConfig(P)) is None
    lineage(tmp_path, P, domains=("example.com",))
    assert CertbotRunner(c).replaces(c.sites["ex"], Action.RENEW, CaConfig(P)) is None


def test_no_replaces_without_a_lineage(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert CertbotRunner(c).replaces(c.sites["ex"], Action.RENEW, CaConfig(P)) is None


# -- rate limits: the Retry-After the entry point prints, and the detail's date ----------------------

def test_rate_limit_takes_the_retry_after_header_first() -> None:
    out = ("tlsbridge: the CA asked to retry after 2026-12-01T17:30:00Z\n"
           "An unexpected error occurred:\nurn:ietf:params:acme:error:rateLimited :: too many new orders, "
           "retry after 2026-12-01 18:00:00 UTC\n")
    err = classify("ex", out, P)
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is not None and err.retry_after.isoformat() == "2026-12-01T17:30:00+00:00"
    assert "(retry after 2026-12-01T17:30Z)" in str(err)
    assert "asked to retry" not in err.tail


# -- status and the page -------------------------------------------------------------------------------

def _cert() -> ObservedCert:
    return ObservedCert(serial=10, not_before=T0, not_after=T0 + timedelta(days=90), domains=("example.com",
                        "www.example.com"), key_type="ecdsa", issuer="CN=x", fingerprint="f")


def test_status_names_the_ca_and_a_fallback() -> None:
    c, cert = cfg(), _cert()
    obs = Observation(cert, cert, None, SiteState())
    row = site_status(c.sites["ex"], obs, c, T0, ca=S)
    assert (row.ca, row.ca_fallback, row.ca_label) == (S, True, "second.test (fallback)")
    assert row.as_json()["ca"] == S and row.as_json()["ca_fallback"] is True
    row = site_status(c.sites["ex"], obs, c, T0, ca=P)
    assert (row.ca_fallback, row.ca_label) == (False, "primary.test")
    assert "primary.test" in render_table([row], T0)
    none = site_status(c.sites["ex"], Observation(None, None, None, SiteState()), c, T0, ca=P)
    assert none.ca is None and none.as_json()["ca"] is None


def test_status_shows_the_cas_retry_after_while_the_site_fails() -> None:
    c, cert = cfg(), _cert()
    until = T0 + timedelta(hours=3)
    failing = SiteState(failures=1, last_error="site=ex: rate-limited", last_reason="RateLimited",
                        retry_after=until)
    row = site_status(c.sites["ex"], Observation(cert, cert, None, failing), c, T0, ca=P)
    assert row.retry_after == until and row.as_json()["retry_after"] == "2026-06-01T03:00:00Z"
    assert "ex: rate-limited by the CA, which asks to retry after 2026-06-01T03:00:00Z" in render_table([row], T0)
    recovered = SiteState(retry_after=until)  # a success since: no longer shown
    assert site_status(c.sites["ex"], Observation(cert, cert, None, recovered), c, T0).retry_after is None


def test_page_shows_the_ca_and_the_retry_after() -> None:
    page = render([PageRow(name="ex", domains=("example.com",), state="failing", issuer="CN=x",
                           ca="second.test (fallback)", retry_after=T0 + timedelta(hours=3), failures=1)],
                  T0, PageMeta(version="t", ready=True))
    assert "CA second.test (fallback)" in page
    assert "rate-limited: the CA asks to retry after 2026-06-01 03:00 UTC" in page


def test_the_retry_after_survives_the_state_store(tmp_path: Path) -> None:
    from tlsbridge.adapters.statestore import StateStore

    store = StateStore(tmp_path)
    store.save("ex", SiteState(failures=1, retry_after=T0))
    assert store.get("ex").retry_after == T0
    store.close()
