"""The only module that runs certbot: an argv builder (pure) and a subprocess runner.

certbot runs as a child of the same interpreter (certbot 5 has no `__main__`, so through
`certbot.main.main`), non-interactive, with a timeout; its failures become typed errors
(tlsbridge/adapters/certbot_output.py) carrying the tail of its output.

Each site's challenge is its effective one (`Site.challenge`), so one config can mix a wildcard
site on DNS-01 with sites on HTTP-01. Secrets stay off certbot's command line: the EAB HMAC key
reaches certbot through an anonymous in-memory file (memfd) given as `--config /dev/fd/N`, which
no other user can open, nothing writes to disk and which vanishes with the processes.
certbot dies with tlsbridge (PR_SET_PDEATHSIG, see certbot_main.py).

CAs: the primary (acme.directory) first on every attempt; a fallback (acme.fallback, in order) only
when the CAs before it failed this attempt by being away or rate-limiting the site. Each CA has
its own certbot account (certbot files accounts by server URL), and the lineage's
renewal/<site>.conf records the CA of its current certificate. A renewal at the CA that issued
the certificate names it in ARI's `replaces` (certbot_main.py adds the field to the order).
"""

from __future__ import annotations

import configparser
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from tlsbridge.adapters.certbot_main import PARENT_ENV, REPLACES_ENV
from tlsbridge.adapters.certbot_output import DnsSide, classify, tail
from tlsbridge.adapters.certstore import renewal_params
from tlsbridge.config import AcmeConfig, CaConfig, ChallengeConfig, Config, Site
from tlsbridge.errors import AccountGoneError, CertbotError, RateLimitedError, TransientCAError
from tlsbridge.model import Action
from tlsbridge.retry import retry

logger = logging.getLogger(__name__)

# certbot's main with a more patient badNonce retry (see tlsbridge/adapters/certbot_main.py).
_ENTRY = ["-m", "tlsbridge.adapters.certbot_main"]
_SECRET_FLAGS = ("--eab-hmac-key",)
# DNS plugins that take no --dns-NAME-credentials file but read one named by the environment, and
# that have no --dns-NAME-propagation-seconds (route53 waits until its change is INSYNC itself).
_CREDENTIALS_ENV = {"route53": "AWS_SHARED_CREDENTIALS_FILE"}
_NO_PROPAGATION = frozenset({"route53"})
_KEY_ARGS = {
    "ecdsa": ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"],
    "ecdsa-p384": ["--key-type", "ecdsa", "--elliptic-curve", "secp384r1"],
    "rsa2048": ["--key-type", "rsa", "--rsa-key-size", "2048"],
    "rsa3072": ["--key-type", "rsa", "--rsa-key-size", "3072"],
    "rsa4096": ["--key-type", "rsa", "--rsa-key-size", "4096"],
}


def _accounts_dir(config_dir: Path, server: str) -> Path:
    parts = urlsplit(server)
    return config_dir / "accounts" / parts.netloc / parts.path.strip("/")


def cas(acme: AcmeConfig) -> tuple[CaConfig, ...]:
    """The primary CA, then the fallbacks, in the order an attempt tries them."""
    return (CaConfig(acme.directory, acme.email, acme.eab), *acme.fallback)


def falls_back(error: CertbotError) -> bool:
    """Whether the next CA may succeed where this one failed: it stayed away (after retries) or
    rate-limited the site. A failed validation or a trust problem would fail there too."""
    return isinstance(error, TransientCAError | RateLimitedError)


def has_account(config_dir: Path, server: str) -> bool:
    """Whether certbot already holds an ACME account for `server` in `config_dir`."""
    try:
        return any(_accounts_dir(config_dir, server).iterdir())
    except OSError:
        return False


def build_argv(cfg: Config, site: Site, action: Action, *, register: bool = True,
               eab_config: str | None = None, ca: CaConfig | None = None) -> list[str]:
    """certbot's arguments (after the program) to obtain `site`'s certificate from `ca` (default:
    the primary).

    `register` adds the EAB key id, needed only while no account exists; the HMAC key itself is
    never an argument: it is in the certbot config file `eab_config` (see eab_config_file()).
    """
    ca = ca or cas(cfg.acme)[0]
    argv = [
        "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
        "--config-dir", str(cfg.certbot.config_dir),
        "--work-dir", str(cfg.certbot.work_dir),
        "--logs-dir", str(cfg.certbot.logs_dir),
        "--server", ca.directory,
        "--cert-name", site.name,
    ]
    argv += ["-m", ca.email] if ca.email else ["--register-unsafely-without-email"]
    for domain in site.domains:
        argv += ["-d", domain]
    argv += _KEY_ARGS[cfg.acme.key_type]
    if cfg.acme.profile:
        argv += ["--preferred-profile", cfg.acme.profile]
    if ca.eab and register:
        argv += ["--eab-kid", ca.eab.kid]
        if eab_config:
            argv += ["--config", eab_config]
    argv += challenge_args(site.challenge)
    if action in (Action.RENEW, Action.REISSUE):
        # Our policy decided; certbot's own "not yet due" rule must not second-guess it.
        argv.append("--force-renewal")
    return argv


def challenge_args(ch: ChallengeConfig) -> list[str]:
    """certbot's authenticator arguments for one (effective) challenge.

    DNS plugins go by `--authenticator dns-NAME`, which works for every installed plugin
    (third-party ones too), where the `--dns-NAME` shortcut exists only for certbot's own.
    Without dns_propagation the plugin's own default wait applies.
    """
    if ch.method == "webroot":
        return ["--webroot", "--webroot-path", str(ch.webroot)]
    if ch.method == "standalone":
        return ["--standalone", "--http-01-port", str(ch.http_port)]
    plugin = f"dns-{ch.dns_plugin}"
    args = ["--authenticator", plugin]
    if ch.dns_credentials and ch.dns_plugin not in _CREDENTIALS_ENV:
        args += [f"--{plugin}-credentials", str(ch.dns_credentials)]
    if ch.dns_propagation is not None and ch.dns_plugin not in _NO_PROPAGATION:
        args += [f"--{plugin}-propagation-seconds", str(int(ch.dns_propagation.total_seconds()))]
    return args


def challenge_env(ch: ChallengeConfig) -> dict[str, str]:
    """Environment for plugins that find their credentials file through it (route53: an AWS
    shared-credentials file)."""
    var = _CREDENTIALS_ENV.get(ch.dns_plugin or "") if ch.method == "dns" else None
    return {var: str(ch.dns_credentials)} if var and ch.dns_credentials else {}


def dns_side(ch: ChallengeConfig) -> DnsSide | None:
    """Who answers a DNS-01 challenge, for error messages: for rfc2136 the server and port of the
    credentials file (only those two keys are read), else the plugin's API."""
    if ch.method != "dns" or not ch.dns_plugin:
        return None
    creds = str(ch.dns_credentials) if ch.dns_credentials else None
    server = None
    if ch.dns_plugin == "rfc2136" and ch.dns_credentials:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string("[c]\n" + ch.dns_credentials.read_text(errors="replace"))
            host = parser.get("c", "dns_rfc2136_server", fallback="").strip().strip("\"'")
            port = parser.get("c", "dns_rfc2136_port", fallback="53").strip().strip("\"'") or "53"
            server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}" if host else None
        except (OSError, configparser.Error):
            server = None
    return DnsSide(ch.dns_plugin, server, creds)


def redact(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in _SECRET_FLAGS:
            out[i + 1] = "***"
    return out


@contextlib.contextmanager
def eab_config_file(hmac_key: str) -> Iterator[tuple[str, int]]:
    """A certbot config file holding only `eab-hmac-key`, as an anonymous in-memory file.

    Yields (path for `--config`, fd to pass to the child). The file has no name in any folder;
    /proc/PID/fd/N of its holders is reachable by their own user only.
    """
    fd = os.memfd_create("tlsbridge-certbot-eab")
    try:
        os.write(fd, f"eab-hmac-key = {hmac_key}\n".encode())
        yield f"/dev/fd/{fd}", fd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    output: str


class CertbotRunner:
    """Runs certbot for sites of one config (one instance per pass)."""

    def __init__(self, cfg: Config, attempts: int = 3) -> None:
        self.cfg = cfg
        self.attempts = attempts
        self.reregistered: set[str] = set()  # CAs re-registered at this pass: at most once each

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cfg.acme.ca_bundle:
            env["REQUESTS_CA_BUNDLE"] = str(self.cfg.acme.ca_bundle)
        env[PARENT_ENV] = str(os.getpid())
        return env

    def obtain(self, site: Site, action: Action) -> None:
        """Issue or renew `site`'s certificate into certbot's lineage named after the site: from
        the primary CA, else from the first fallback CA that issues it (falls_back()).

        Raises RateLimitedError, ValidationFailedError, DnsChallengeError, CAUntrustedError,
        CAUnreachableError, AccountGoneError or CertbotError: the primary CA's error, its message
        extended by the fallbacks' errors.
        """
        if site.challenge.method == "webroot":
            site.challenge.webroot.mkdir(parents=True, exist_ok=True)
        dns = dns_side(site.challenge)
        errors: list[CertbotError] = []
        for ca in cas(self.cfg.acme):
            if errors:
                logger.warning("site=%s trying the fallback CA %s (%s)", site.name, ca.directory, errors[-1])
            try:
                self.obtain_from(ca, site, action, dns)
            except CertbotError as exc:
                errors.append(exc)
                if falls_back(exc):
                    continue
                break
            if errors:
                logger.warning("site=%s issued by the fallback CA %s; its next renewal tries %s first again",
                               site.name, ca.directory, self.cfg.acme.directory)
            return
        first = errors[0]
        if len(errors) > 1:
            first.args = (f"{first}; " + "; ".join(
                f"fallback {ca.directory}: {str(e).removeprefix(f'site={site.name}: ')}"
                for ca, e in zip(self.cfg.acme.fallback, errors[1:], strict=False)),)
        raise first

    def obtain_from(self, ca: CaConfig, site: Site, action: Action, dns: DnsSide | None) -> None:
        """One CA, with a few whole attempts while it is briefly away."""
        def attempt() -> None:
            error = self.certonly(site, action, dns, ca)
            if isinstance(error, AccountGoneError) and ca.directory not in self.reregistered:
                # The CA was reset (staging, a test CA): certbot never re-registers by itself.
                self.reregistered.add(ca.directory)
                try:
                    moved = self.forget_account(ca)
                except OSError as exc:
                    raise CertbotError(f"{error}; its local copy could not be moved aside to register anew: "
                                       f"{exc.strerror or exc}") from None
                logger.warning("site=%s the CA %s no longer knows the ACME account; registering a new one "
                               "(the old one moved to %s)", site.name, ca.directory, moved)
                error = self.certonly(site, action, dns, ca)
            if error is not None:
                raise error

        # certbot retries a rejected nonce once; a CA that is briefly away or rejects more
        # nonces than that gets a few more whole attempts, with backoff. Rate limits, failed
        # validations, DNS and trust failures and other errors are not retried.
        retry(attempt, on=(TransientCAError,), attempts=self.attempts, base=2.0, cap=30.0,
              what=f"site={site.name} certbot {ca.directory}")

    def replaces(self, site: Site, action: Action, ca: CaConfig) -> str | None:
        """The ARI id of the certificate this order renews (RFC 9773 section 5), or None.

        Only a renewal of the same names (a new certificate or changed names is no replacement),
        at the CA that issued the certificate, by the account that ordered it (both from the
        lineage's renewal conf): any other CA or account would refuse the order. certbot_main.py
        also leaves it out when the CA's directory offers no renewalInfo.
        """
        if action is not Action.RENEW:
            return None
        config_dir = self.cfg.certbot.config_dir
        params = renewal_params(config_dir, site.name)
        account = params.get("account")
        if params.get("server") != ca.directory or not account:
            return None
        if not (_accounts_dir(config_dir, ca.directory) / account).is_dir():
            return None
        from tlsbridge.certinfo import parse_pem

        try:
            cert = parse_pem((config_dir / "live" / site.name / "cert.pem").read_bytes())
        except (OSError, ValueError):
            return None
        if cert.placeholder or set(cert.domains) != set(site.domains):
            return None
        return cert.ari_cert_id

    def certonly(self, site: Site, action: Action, dns: DnsSide | None,
                 ca: CaConfig | None = None) -> CertbotError | None:
        """One certbot run against `ca` (default: the primary); its failure as an error value
        (None on success)."""
        ca = ca or cas(self.cfg.acme)[0]
        register = not has_account(self.cfg.certbot.config_dir, ca.directory)
        eab = ca.eab if register else None
        env = challenge_env(site.challenge)
        if (replaces := self.replaces(site, action, ca)) is not None:
            env[REPLACES_ENV] = replaces
        with contextlib.ExitStack() as stack:
            path: str | None = None
            fds: tuple[int, ...] = ()
            if eab is not None:
                path, fd = stack.enter_context(eab_config_file(eab.hmac_key))
                fds = (fd,)
            argv = build_argv(self.cfg, site, action, register=register, eab_config=path, ca=ca)
            logger.info("site=%s running certbot %s%s", site.name, " ".join(redact(argv)),
                        f" (replaces {replaces})" if replaces else "")
            result = self.run(argv, pass_fds=fds, env=env)
        if result.returncode == 0:
            return None
        return classify(site.name, result.output, ca.directory, dns)

    def forget_account(self, ca: CaConfig | None = None) -> Path:
        """Move certbot's accounts for `ca` (default: the primary) aside (never deleted: they hold
        the account keys), so the next certbot run registers anew."""
        directory = (ca or cas(self.cfg.acme)[0]).directory
        src = _accounts_dir(self.cfg.certbot.config_dir, directory)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        dest = self.cfg.certbot.config_dir / "accounts-gone" / stamp
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(src, dest)
        return dest

    def _private_logs(self) -> None:
        """certbot's log folder 0700: its debug log records requests and the argument list."""
        logs = self.cfg.certbot.logs_dir
        try:
            logs.mkdir(mode=0o700, parents=True, exist_ok=True)
            if logs.stat().st_mode & 0o077:
                logs.chmod(0o700)
        except OSError as exc:
            logger.warning("cannot make certbot's logs folder %s private (0700): %s", logs, exc.strerror or exc)

    def run(self, argv: list[str], pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None) -> RunResult:
        self._private_logs()
        timeout = self.cfg.certbot.timeout.total_seconds()
        proc = subprocess.Popen(
            [sys.executable, *_ENTRY, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**self.env(), **(env or {})},
            start_new_session=True,  # so a timeout can end certbot and anything it started
            pass_fds=pass_fds,
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
            # Interrupted (SIGINT, or a SIGTERM turned into an exception): stop certbot first; it
            # removes what it set up (TXT records, its standalone server) on SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            raise
        logger.debug("certbot exited %d:\n%s", proc.returncode, out)
        return RunResult(proc.returncode, out)
