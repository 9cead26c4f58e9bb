"""One base error, one subclass per boundary.

Every error a user can meet carries a one-line message that says what failed, for which
site or file, and what to do next. `exit_code` is what the CLI returns for it.
"""

from __future__ import annotations

from datetime import datetime


class TlsbridgeError(Exception):
    """Base of every error tlsbridge raises on purpose."""

    exit_code = 1


class ConfigError(TlsbridgeError):
    """The config file or the command line is wrong. Nothing has been written."""

    exit_code = 2

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class UsageError(TlsbridgeError):
    """A command-line argument is wrong."""

    exit_code = 2


class StateError(TlsbridgeError):
    """tlsbridge's own state store could not be read or written."""


class PublishError(TlsbridgeError):
    """A certificate could not be published; what was published before is untouched."""


class CertbotError(TlsbridgeError):
    """certbot failed for a site; `tail` is the end of its output."""

    reason = "CertbotFailed"

    def __init__(self, message: str, tail: str = "") -> None:
        self.tail = tail
        super().__init__(f"{message}: {tail}" if tail else message)


class RateLimitedError(CertbotError):
    """The CA refused with a rate limit; `retry_after` is when it said to come back."""

    reason = "RateLimited"

    def __init__(self, message: str, tail: str = "", retry_after: datetime | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, tail)


class ValidationFailedError(CertbotError):
    """The CA could not validate control of a domain (the challenge failed)."""

    reason = "ValidationFailed"

    def __init__(self, message: str, tail: str = "", domain: str | None = None) -> None:
        self.domain = domain
        super().__init__(message, tail)


class TransientCAError(CertbotError):
    """A failure worth retrying soon: the CA was unreachable or answered with a transient error
    (a rejected nonce, a 5xx)."""

    reason = "CATransient"


class CAUnreachableError(TransientCAError):
    """The ACME server could not be reached (network, DNS, TLS, timeout)."""

    reason = "CAUnreachable"


class CAUntrustedError(CertbotError):
    """The ACME server's HTTPS certificate is not trusted (CERTIFICATE_VERIFY_FAILED): a setting
    to fix (acme.ca_bundle), not a network fault; never retried."""

    reason = "CAUntrusted"


class AccountGoneError(CertbotError):
    """The CA no longer knows the ACME account certbot holds (a reset staging or test CA)."""

    reason = "AccountGone"

    def __init__(self, message: str, tail: str = "", account_url: str | None = None) -> None:
        self.account_url = account_url
        super().__init__(message, tail)


class DnsChallengeError(CertbotError):
    """The DNS plugin could not set up the DNS-01 TXT record (credentials refused, DNS server down,
    no zone for the name); the CA was not asked to validate."""

    reason = "DnsChallengeFailed"

    def __init__(self, message: str, tail: str = "", dns_server: str | None = None) -> None:
        self.dns_server = dns_server
        super().__init__(message, tail)


class AriError(TlsbridgeError):
    """The CA's renewalInfo could not be fetched or parsed; callers fall back to the lifetime rule."""


class DockerError(TlsbridgeError):
    """The Docker engine could not be reached or refused a request."""


class ReloadError(TlsbridgeError):
    """nginx in a target container could not be config-tested or reloaded."""


class VerifyError(TlsbridgeError):
    """The certificate served by a target is not the one published."""
