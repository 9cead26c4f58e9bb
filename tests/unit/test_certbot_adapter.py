from __future__ import annotations

from pathlib import Path

from tlsbridge import config
from tlsbridge.adapters.certbot import build_argv, classify, has_account, redact, tail
from tlsbridge.errors import (
    CAUnreachableError,
    CertbotError,
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
