from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from tlsbridge import config
from tlsbridge.adapters.certbot import (
    build_argv,
    challenge_args,
    challenge_env,
    classify,
    dns_side,
    eab_config_file,
    has_account,
    redact,
    tail,
)
from tlsbridge.adapters.certbot_output import DnsSide
from tlsbridge.config import ChallengeConfig
from tlsbridge.errors import (
    AccountGoneError,
    CAUnreachableError,
    CAUntrustedError,
    CertbotError,
    DnsChallengeError,
    RateLimitedError,
    TransientCAError,
    ValidationFailedError,
)
from tlsbridge.model import Action

CFG = """
acme: {directory: 'https://ca.test/dir', email: a@example.com, key_type: rsa3072, profile: shortlived,
       eab: {kid: k1, hmac_key: topsecret}}
certbot: {config_dir: /c, work_dir: /w, logs_dir: /l}
challenge: {method: standalone, http_port: 8080}
sites:
  ex: {domains: [example.com, www.example.com]}
"""


def argv(text: str = CFG, action: Action = Action.ISSUE, register: bool = True) -> list[str]:
    cfg = config.parse(text)
    return build_argv(cfg, cfg.sites["ex"], action, register=register)


def test_argv_carries_everything_certbot_needs() -> None:
    a = argv()
    assert a[:2] == ["certonly", "--non-interactive"]
    joined = " ".join(a)
    for part in ("--config-dir /c", "--work-dir /w", "--logs-dir /l", "--server https://ca.test/dir",
                 "--cert-name ex", "-d example.com -d www.example.com", "--key-type rsa --rsa-key-size 3072",
                 "--preferred-profile shortlived", "--eab-kid k1", "--standalone --http-01-port 8080",
                 "-m a@example.com"):
        assert part in joined
    assert "--force-renewal" not in a


def test_renew_and_reissue_force_certbot() -> None:
    assert "--force-renewal" in argv(action=Action.RENEW)
    assert "--force-renewal" in argv(action=Action.REISSUE)


def test_eab_only_while_registering_and_redacted() -> None:
    assert "--eab-kid" not in argv(register=False)
    assert "topsecret" not in " ".join(redact(argv()))


def test_webroot_and_dns_methods() -> None:
    web = " ".join(argv(CFG.replace("{method: standalone, http_port: 8080}", "{method: webroot, webroot: /srv/acme}")))
    assert "--webroot --webroot-path /srv/acme" in web
    dns = " ".join(argv(CFG.replace("{method: standalone, http_port: 8080}",
                                    "{method: dns, dns_plugin: rfc2136, dns_credentials: /etc/rfc.ini, dns_propagation: 30s}")))
    assert "--authenticator dns-rfc2136 --dns-rfc2136-credentials /etc/rfc.ini --dns-rfc2136-propagation-seconds 30" in dns


def test_ecdsa_key_types() -> None:
    assert "--elliptic-curve secp256r1" in " ".join(argv(CFG.replace("rsa3072", "ecdsa")))
    assert "--elliptic-curve secp384r1" in " ".join(argv(CFG.replace("rsa3072", "ecdsa-p384")))


def test_has_account(tmp_path: Path) -> None:
    assert not has_account(tmp_path, "https://ca.test:14000/dir")
    (tmp_path / "accounts" / "ca.test:14000" / "dir" / "abc").mkdir(parents=True)
    assert has_account(tmp_path, "https://ca.test:14000/dir")


RATE = """An unexpected error occurred:
Error creating new order :: too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-01 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/
Ask for help or search for solutions at https://community.letsencrypt.org."""

VALIDATION = """Certbot failed to authenticate some domains (authenticator: standalone). The Certificate Authority reported these problems:
  Domain: www.example.com
  Type:   connection
  Detail: 127.0.0.1: Fetching http://www.example.com/.well-known/acme-challenge/x: Connection refused

Hint: The Certificate Authority failed to download the challenge files."""

DOWN = """An unexpected error occurred:
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='127.0.0.1', port=14000): Max retries exceeded with url: /dir (Caused by NewConnectionError(': Failed to establish a new connection: [Errno 111] Connection refused'))"""

NONCE = "An unexpected error occurred:\nJWS has an invalid anti-replay nonce: \"abc\""


def test_classify() -> None:
    rl = classify("ex", RATE)
    assert isinstance(rl, RateLimitedError) and rl.retry_after is not None
    assert rl.retry_after.isoformat() == "2026-12-01T10:00:00+00:00"
    v = classify("ex", VALIDATION)
    assert isinstance(v, ValidationFailedError) and v.domain == "www.example.com"
    assert "www.example.com" in str(v) and "Connection refused" in str(v)
    down = classify("ex", DOWN, "https://127.0.0.1:14000/dir")
    assert isinstance(down, CAUnreachableError) and "127.0.0.1:14000" in str(down)
    assert isinstance(classify("ex", NONCE), TransientCAError)
    other = classify("ex", "Some other problem")
    assert type(other) is CertbotError and "Some other problem" in str(other)
    for err in (rl, v, down, other):
        assert "\n" not in str(err) and "site=ex" in str(err)


def test_tail_drops_noise() -> None:
    assert "Ask for help" not in tail(RATE)
    assert "too many certificates" in tail(RATE)


# ---- per-site challenges, secrets off the command line -------------------------------------------

MIXED = """
acme: {directory: 'https://ca.test/dir', email: a@example.com, eab: {kid: k1, hmac_key: topsecret}}
certbot: {config_dir: /c, work_dir: /w, logs_dir: /l}
challenge: {method: webroot, webroot: /srv/acme}
sites:
  web: {domains: [www.example.com]}
  wild:
    domains: [example.test, '*.example.test']
    challenge: {method: dns, dns_plugin: rfc2136, dns_credentials: /etc/rfc.ini}
"""


def test_each_site_gets_its_own_effective_challenge() -> None:
    cfg = config.parse(MIXED)
    web = " ".join(build_argv(cfg, cfg.sites["web"], Action.ISSUE))
    wild = " ".join(build_argv(cfg, cfg.sites["wild"], Action.ISSUE))
    assert "--webroot --webroot-path /srv/acme" in web and "dns-rfc2136" not in web
    assert "--authenticator dns-rfc2136 --dns-rfc2136-credentials /etc/rfc.ini" in wild
    assert "--webroot" not in wild and "-d *.example.test" in wild
    # no dns_propagation: the plugin's own default wait, so no flag at all
    assert "propagation-seconds" not in wild


def test_the_eab_hmac_key_is_never_an_argument() -> None:
    cfg = config.parse(MIXED)
    a = build_argv(cfg, cfg.sites["web"], Action.ISSUE, register=True, eab_config="/dev/fd/7")
    assert "topsecret" not in " ".join(a) and "--eab-hmac-key" not in a
    assert a[a.index("--eab-kid") + 1] == "k1" and a[a.index("--config") + 1] == "/dev/fd/7"
    assert "--config" not in build_argv(cfg, cfg.sites["web"], Action.ISSUE, register=False, eab_config="/dev/fd/7")


def test_eab_config_file_is_anonymous_and_readable_through_its_path() -> None:
    with eab_config_file("topsecret") as (path, fd):
        assert path == f"/dev/fd/{fd}"
        assert Path(path).read_text() == "eab-hmac-key = topsecret\n"
        assert "memfd:" in os.readlink(f"/proc/self/fd/{fd}")


def test_dns_side_names_the_rfc2136_server_from_the_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "rfc.ini"
    creds.write_text("dns_rfc2136_server = 192.0.2.53\ndns_rfc2136_port = 8053\ndns_rfc2136_secret = s3cret==\n")
    side = dns_side(ChallengeConfig(method="dns", dns_plugin="rfc2136", dns_credentials=creds))
    assert side is not None and side.server == "192.0.2.53:8053" and side.where.startswith("the DNS server 192.0.2.53:8053")
    creds.write_text("dns_rfc2136_server = 192.0.2.53\n")
    side = dns_side(ChallengeConfig(method="dns", dns_plugin="rfc2136", dns_credentials=creds))
    assert side is not None and side.server == "192.0.2.53:53"
    cf = dns_side(ChallengeConfig(method="dns", dns_plugin="cloudflare", dns_credentials=creds))
    assert cf is not None and cf.server is None and cf.where == "the cloudflare DNS API"
    assert dns_side(ChallengeConfig(method="webroot")) is None


# Outputs of certbot 5.8 + certbot-dns-rfc2136 against bind9 9.18 (tests/integration/test_dns01.py).
BADSIG = """Requesting a certificate for a.example.test
 Saving debug log to /tmp/x/logs/letsencrypt.log
Encountered exception during recovery: certbot.errors.PluginError: Encountered error deleting TXT record: The peer didn't like the signature we sent
Encountered error adding TXT record: The peer didn't like the signature we sent
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /tmp/x/logs/letsencrypt.log or re-run Certbot with -v for more details."""
DNSDOWN = """Requesting a certificate for b.example.test
Encountered exception during recovery: certbot.errors.PluginError: Encountered error when making query: The DNS operation timed out.
Encountered error when making query: The DNS operation timed out.
Ask for help or search for solutions at https://community.letsencrypt.org."""
NOZONE = """Requesting a certificate for x.other.invalid
Encountered exception during recovery: certbot.errors.PluginError: Unable to determine base domain for _acme-challenge.x.other.invalid using names: ['_acme-challenge.x.other.invalid', 'x.other.invalid', 'other.invalid', 'invalid'].
Unable to determine base domain for _acme-challenge.x.other.invalid using names: ['_acme-challenge.x.other.invalid', 'x.other.invalid', 'other.invalid', 'invalid']."""
REFUSED = "Encountered error adding TXT record: nope\nReceived response from server: REFUSED"
OTHERPLUGIN = "certbot.errors.PluginError: Error determining zone identifier for example.com: 9103: Unknown X-Auth-Key"
RFC = DnsSide("rfc2136", "127.0.0.1:8053", "/etc/rfc.ini")


def test_dns_plugin_failures_are_one_line_naming_site_server_and_cause() -> None:
    cases = {BADSIG: "TSIG signature", DNSDOWN: "did not answer", NOZONE: "no zone that covers x.other.invalid",
             REFUSED: "refused the update (REFUSED)"}
    for output, cause in cases.items():
        err = classify("wild", output, "https://ca.test/dir", RFC)
        assert isinstance(err, DnsChallengeError), output
        msg = str(err)
        assert "site=wild" in msg and "DNS server 127.0.0.1:8053" in msg and cause in msg, msg
        assert "\n" not in msg and "Traceback" not in msg and "community.letsencrypt" not in msg
        assert not isinstance(err, TransientCAError)  # never retried at once: backoff instead
    assert "/etc/rfc.ini" in str(classify("wild", BADSIG, "", RFC))
    cf = classify("cf", OTHERPLUGIN, "", DnsSide("cloudflare", None, "/etc/cf.ini"))
    assert isinstance(cf, DnsChallengeError) and "the cloudflare DNS API" in str(cf) and "Unknown X-Auth-Key" in str(cf)
    # the same output from an HTTP-01 site is not read as a DNS failure
    assert isinstance(classify("web", DNSDOWN, "https://ca.test/dir"), CAUnreachableError)


VALIDATION5 = """Certbot failed to authenticate some domains (authenticator: dns-rfc2136). The Certificate Authority reported these problems:
  Identifier: example.test
  Type:   unauthorized
  Detail: Incorrect TXT record "abc" found at _acme-challenge.example.test

  Identifier: *.example.test
  Type:   unauthorized
  Detail: Incorrect TXT record "abc" found at _acme-challenge.example.test

Hint: The Certificate Authority failed to verify the DNS TXT records created by --dns-rfc2136."""


def test_validation_failed_names_every_failed_identifier() -> None:
    v = classify("wild", VALIDATION5, "", RFC)
    assert isinstance(v, ValidationFailedError) and v.domain == "example.test"
    assert "could not validate example.test, *.example.test (Incorrect TXT record" in str(v)
    assert "dns_propagation" in str(v) and "a domain" not in str(v)
    http = classify("web", VALIDATION.replace("Domain:", "Identifier:"))
    assert isinstance(http, ValidationFailedError) and http.domain == "www.example.com" and "port 80" in str(http)


UNTRUSTED = """An unexpected error occurred:
requests.exceptions.SSLError: HTTPSConnectionPool(host='127.0.0.1', port=14000): Max retries exceeded with url: /dir (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:992)')))"""
GONE = """Renewing an existing certificate for x.example.com
An unexpected error occurred:
Account https://127.0.0.1:58831/my-account/216708c2c75fc2eb not found.
Ask for help or search for solutions at https://community.letsencrypt.org."""


def test_an_untrusted_ca_is_its_own_clear_error_not_retried() -> None:
    err = classify("ex", UNTRUSTED, "https://127.0.0.1:14000/dir")
    assert isinstance(err, CAUntrustedError) and not isinstance(err, TransientCAError)
    assert str(err) == ("site=ex: the CA's certificate is not trusted (https://127.0.0.1:14000/dir): set acme.ca_bundle "
                        "to the PEM file of the CA that signed the ACME server's HTTPS certificate")


def test_an_account_the_ca_forgot() -> None:
    err = classify("ex", GONE, "https://127.0.0.1:58831/dir")
    assert isinstance(err, AccountGoneError)
    assert err.account_url == "https://127.0.0.1:58831/my-account/216708c2c75fc2eb"
    assert "no longer knows the ACME account" in str(err) and "\n" not in str(err)


def test_route53_reads_aws_credentials_from_the_environment_and_waits_by_itself() -> None:
    ch = ChallengeConfig(method="dns", dns_plugin="route53", dns_credentials=Path("/etc/aws.ini"),
                         dns_propagation=timedelta(seconds=30))
    assert challenge_args(ch) == ["--authenticator", "dns-route53"]
    assert challenge_env(ch) == {"AWS_SHARED_CREDENTIALS_FILE": "/etc/aws.ini"}
    cf = ChallengeConfig(method="dns", dns_plugin="cloudflare", dns_credentials=Path("/etc/cf.ini"))
    assert challenge_args(cf) == ["--authenticator", "dns-cloudflare", "--dns-cloudflare-credentials", "/etc/cf.ini"]
    assert challenge_env(cf) == {}


def test_a_missing_dns_plugin_says_how_to_install_it() -> None:
    for output in ("certbot: error: unrecognized arguments: --dns-cloudflare-credentials /etc/cf.ini",
                   "The requested dns-cloudflare plugin does not appear to be installed"):
        err = classify("cf", output, "", DnsSide("cloudflare", None, "/etc/cf.ini"))
        assert str(err) == ("site=cf: the certbot DNS plugin dns-cloudflare is not installed in tlsbridge's "
                            "environment: pip install certbot-dns-cloudflare (`tlsbridge validate` checks this)")
