"""The only module that runs certbot: an argv builder (pure) and a subprocess runner.

certbot runs as a child of the same interpreter (certbot 5 has no `__main__`, so through
`certbot.main.main`), non-interactive, with a timeout; its failures become typed errors carrying
the tail of its output.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from tlsbridge.config import Config, Site
from tlsbridge.errors import (
    CAUnreachableError,
    CertbotError,
    RateLimitedError,
    TransientCAError,
    ValidationFailedError,
)
from tlsbridge.model import Action
from tlsbridge.retry import retry

logger = logging.getLogger(__name__)

# certbot's main with a more patient badNonce retry (see tlsbridge/adapters/certbot_main.py).
_ENTRY = ["-m", "tlsbridge.adapters.certbot_main"]
_SECRET_FLAGS = ("--eab-hmac-key",)
_KEY_ARGS = {
    "ecdsa": ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"],
    "ecdsa-p384": ["--key-type", "ecdsa", "--elliptic-curve", "secp384r1"],
    "rsa2048": ["--key-type", "rsa", "--rsa-key-size", "2048"],
    "rsa3072": ["--key-type", "rsa", "--rsa-key-size", "3072"],
    "rsa4096": ["--key-type", "rsa", "--rsa-key-size", "4096"],
}


def has_account(config_dir: Path, server: str) -> bool:
    """Whether certbot already holds an ACME account for `server` in `config_dir`."""
    parts = urlsplit(server)
    accounts = config_dir / "accounts" / parts.netloc / parts.path.strip("/")
    try:
        return any(accounts.iterdir())
    except OSError:
        return False


def build_argv(cfg: Config, site: Site, action: Action, *, register: bool = True) -> list[str]:
    """certbot's arguments (after the program) to obtain `site`'s certificate.

    `register` adds the EAB credentials, needed only while no account exists (keeps the HMAC
    key out of the process list on every later run).
    """
    argv = [
        "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
        "--config-dir", str(cfg.certbot.config_dir),
        "--work-dir", str(cfg.certbot.work_dir),
        "--logs-dir", str(cfg.certbot.logs_dir),
        "--server", cfg.acme.directory,
        "--cert-name", site.name,
    ]
    argv += ["-m", cfg.acme.email] if cfg.acme.email else ["--register-unsafely-without-email"]
    for domain in site.domains:
        argv += ["-d", domain]
    argv += _KEY_ARGS[cfg.acme.key_type]
    if cfg.acme.profile:
        argv += ["--preferred-profile", cfg.acme.profile]
    if cfg.acme.eab and register:
        argv += ["--eab-kid", cfg.acme.eab.kid, "--eab-hmac-key", cfg.acme.eab.hmac_key]
    ch = cfg.challenge
    if ch.method == "webroot":
        argv += ["--webroot", "--webroot-path", str(ch.webroot)]
    elif ch.method == "standalone":
        argv += ["--standalone", "--http-01-port", str(ch.http_port)]
    else:
        plugin = f"dns-{ch.dns_plugin}"
        argv += ["--authenticator", plugin]
        if ch.dns_credentials:
            argv += [f"--{plugin}-credentials", str(ch.dns_credentials)]
        if ch.dns_propagation is not None:
            argv += [f"--{plugin}-propagation-seconds", str(int(ch.dns_propagation.total_seconds()))]
    if action in (Action.RENEW, Action.REISSUE):
        # Our policy decided; certbot's own "not yet due" rule must not second-guess it.
        argv.append("--force-renewal")
    return argv


def redact(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in _SECRET_FLAGS:
            out[i + 1] = "***"
    return out


@dataclass(frozen=True)
class RunResult:
    returncode: int
    output: str


class CertbotRunner:
    """Runs certbot for sites of one config."""

    def __init__(self, cfg: Config, attempts: int = 3) -> None:
        self.cfg = cfg
        self.attempts = attempts

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cfg.acme.ca_bundle:
            env["REQUESTS_CA_BUNDLE"] = str(self.cfg.acme.ca_bundle)
        return env

    def obtain(self, site: Site, action: Action) -> None:
        """Issue or renew `site`'s certificate into certbot's lineage named after the site.

        Raises RateLimitedError, ValidationFailedError, CAUnreachableError or CertbotError.
        """
        if self.cfg.challenge.method == "webroot":
            self.cfg.challenge.webroot.mkdir(parents=True, exist_ok=True)
        register = not has_account(self.cfg.certbot.config_dir, self.cfg.acme.directory)
        argv = build_argv(self.cfg, site, action, register=register)
        logger.info("site=%s running certbot %s", site.name, " ".join(redact(argv)))

        def attempt() -> None:
            result = self.run(argv)
            if result.returncode != 0:
                raise classify(site.name, result.output, self.cfg.acme.directory)

        # certbot retries a rejected nonce once; a CA that is briefly away or rejects more
        # nonces than that gets a few more whole attempts, with backoff. Rate limits, failed
        # validations and other errors are not retried.
        retry(attempt, on=(TransientCAError,), attempts=self.attempts, base=2.0, cap=30.0,
              what=f"site={site.name} certbot")

    def run(self, argv: list[str]) -> RunResult:
        timeout = self.cfg.certbot.timeout.total_seconds()
        proc = subprocess.Popen(
            [sys.executable, *_ENTRY, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,  # so a timeout can end certbot and anything it started
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise CertbotError(f"certbot did not finish within {int(timeout)}s (certbot.timeout)",
                               tail(out)) from None
        except BaseException:
            # Interrupted (SIGTERM/SIGINT): do not leave certbot running on our behalf.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
            raise
        logger.debug("certbot exited %d:\n%s", proc.returncode, out)
        return RunResult(proc.returncode, out)


_NOISE = re.compile(
    r"^(Saving debug log|Ask for help|See the logfile|Requesting a certificate|Account registered"
    r"|Simulating|Hint:|- - -|\s*$)"
)


def tail(output: str, lines: int = 4) -> str:
    """The last meaningful lines of certbot's output, joined into one line."""
    kept = [ln.strip() for ln in output.splitlines() if not _NOISE.match(ln)]
    return " | ".join(kept[-lines:])


def classify(site: str, output: str, server: str = "") -> CertbotError:
    """Turn certbot's output into the error type callers act on (retry, backoff, report)."""
    low = output.lower()
    if "ratelimited" in low or "too many" in low or "rate limit" in low:
        retry_at = None
        m = re.search(r"retry after (\d{4}-\d\d-\d\d[ t]\d\d:\d\d:\d\d)", output, re.IGNORECASE)
        if m:
            retry_at = datetime.fromisoformat(m.group(1).replace(" ", "T")).replace(tzinfo=UTC)
        when = f" (retry after {retry_at:%Y-%m-%dT%H:%MZ})" if retry_at else ""
        return RateLimitedError(f"site={site}: the CA rate-limited the order{when}", tail(output),
                                retry_after=retry_at)
    if "failed to authenticate some domains" in low or "challenges have failed" in low:
        m = re.search(r"Domain:\s*(\S+)", output)
        domain = m.group(1) if m else None
        detail = re.search(r"Detail:\s*(.+)", output)
        what = f"domain {domain}" if domain else "a domain"
        return ValidationFailedError(
            f"site={site}: the CA could not validate {what} ({detail.group(1).strip() if detail else tail(output, 1)})",
            "check that the challenge reaches this host (DNS, port 80, webroot served)",
            domain=domain,
        )
    if "badnonce" in low or "anti-replay nonce" in low or "servererror" in low or "503 service" in low:
        return TransientCAError(f"site={site}: the ACME server answered with a transient error", tail(output))
    unreachable = ("max retries exceeded", "failed to establish a new connection", "connection refused",
                   "name or service not known", "temporary failure in name resolution", "timed out",
                   "unable to connect", "certificate verify failed", "connection aborted",
                   "remote end closed connection", "connection reset")
    if any(s in low for s in unreachable):
        return CAUnreachableError(f"site={site}: the ACME server {server} could not be reached", tail(output))
    return CertbotError(f"site={site}: certbot failed", tail(output))
