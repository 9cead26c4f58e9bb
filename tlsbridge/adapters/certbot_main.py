"""Entry point of the certbot subprocess: certbot's own main, with a more patient badNonce retry.

RFC 8555 section 6.5: a server rejects a nonce with `badNonce` and the client retries with the
fresh nonce it got back. acme's ClientNetwork.post retries exactly once, so with a CA that
rejects nonces often (under load, or Pebble's PEBBLE_WFE_NONCEREJECT=30) two unlucky nonces in a
row abort the whole certbot run, and its order with it. A rejected nonce means the request was
not processed, so repeating it is safe.

It also dies with its parent: tlsbridge starts it in its own session (so a timeout can end its
whole group), which keeps a terminal's signals away from it; PR_SET_PDEATHSIG makes the kernel
send it SIGTERM when tlsbridge exits for any reason, `kill -9` included. certbot handles SIGTERM
by undoing what it set up (TXT records, its standalone server) and exiting.

ARI `replaces` (RFC 9773 section 5): certbot 5.8 never sends it. When tlsbridge passes the old
certificate's ARI id in $TLSBRIDGE_ARI_REPLACES (only for a renewal of the same names at the CA
and account that issued it), the newOrder payload carries `replaces`, so the CA counts the order
as a renewal (Let's Encrypt exempts those from its rate limits). It is left out when the CA's
directory has no renewalInfo; a CA refusing it (already replaced, unknown certificate) gets the
same order again without it: a lost exemption, never a failed renewal.

A rate-limited answer's Retry-After header (certbot's message shows only the problem's detail)
is printed as one line, `RETRY_AFTER_LINE`, for tlsbridge's reading of the output.

Run as `python -m tlsbridge.adapters.certbot_main ARGS` (certbot 5 has no `python -m certbot`).
"""

from __future__ import annotations

import ctypes
import email.utils
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

BAD_NONCE_ATTEMPTS = 6
PARENT_ENV = "TLSBRIDGE_CERTBOT_PARENT"  # the pid of the tlsbridge that started this process
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
REPLACES_ENV = "TLSBRIDGE_ARI_REPLACES"  # the ARI id of the certificate a renewal replaces
RETRY_AFTER_LINE = "tlsbridge: the CA asked to retry after"  # + " 2026-12-01T17:00:00Z"
logger = logging.getLogger(__name__)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent goes; exit at once if it is already gone
    (it died between our fork and the prctl)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if str(os.getppid()) != parent:
        sys.exit(128 + signal.SIGTERM)


def _install_patient_post() -> None:
    from acme import client, messages

    network = client.ClientNetwork
    post_once = getattr(network, "_post_once", None)
    if post_once is None:  # acme changed shape: keep its own behaviour rather than guess
        return

    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, BAD_NONCE_ATTEMPTS + 1):
            try:
                return post_once(self, *args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_ATTEMPTS:
                    raise
                logger.debug("badNonce, retrying with a fresh nonce (%d/%d)", attempt, BAD_NONCE_ATTEMPTS)
        raise AssertionError("unreachable")

    network.post = post  # type: ignore[method-assign]


def offers_ari(directory: Any) -> bool:
    """Whether an acme Directory lists renewalInfo (RFC 9773)."""
    try:
        return bool(directory["renewalInfo"])
    except KeyError:
        return False


def refuses_replaces(error: Any) -> bool:
    """Whether an ACME problem is the CA refusing the order's `replaces` (RFC 9773
    alreadyReplaced; Pebble and Boulder name the replaced certificate in a malformed/unauthorized
    problem's detail)."""
    # acme's Error.code knows only RFC 8555's types: read alreadyReplaced from the type URN itself.
    return bool(str(error.typ or "").endswith(":alreadyReplaced") or "replace" in (error.detail or "").lower())


def install_replaces(cert_id: str) -> bool:
    """Make acme's ClientV2.new_order send `replaces: cert_id`; False when acme changed shape
    (then certbot orders as it always did)."""
    from acme import client, messages
    from josepy.json_util import field

    original: Callable[..., Any] | None = getattr(client.ClientV2, "new_order", None)
    if original is None or not hasattr(client.ClientV2, "_post") or not hasattr(messages.NewOrder, "_fields"):
        logger.warning("acme's ClientV2 changed shape: the order goes without ARI's replaces")
        return False

    class ReplacingOrder(messages.NewOrder):
        replaces: str = field("replaces", omitempty=True)

    def new_order(self: Any, csr_pem: bytes, profile: str | None = None) -> Any:
        assert original is not None
        if not offers_ari(self.directory):
            return original(self, csr_pem, profile=profile)
        url, post = self.directory["newOrder"], self._post

        def post_replacing(target: str, obj: Any, *args: Any, **kwargs: Any) -> Any:
            if target == url and type(obj) is messages.NewOrder:
                obj = ReplacingOrder(**{name: getattr(obj, name) for name in obj._fields}, replaces=cert_id)
            return post(target, obj, *args, **kwargs)

        self._post = post_replacing
        try:
            return original(self, csr_pem, profile=profile)
        except messages.Error as error:
            if not refuses_replaces(error):
                raise
            logger.warning("The CA refused the order's ARI replaces %s (%s): ordering without it", cert_id, error)
        finally:
            del self._post
        return original(self, csr_pem, profile=profile)

    client.ClientV2.new_order = new_order  # type: ignore[method-assign]
    return True


def retry_at(header: str | None, now: datetime) -> datetime | None:
    """A Retry-After header (seconds or an HTTP-date) as a moment, None when absent or unreadable."""
    if not header or not header.strip():
        return None
    text = header.strip()
    if text.isdigit():
        return now + timedelta(seconds=int(text))
    try:
        at = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _install_retry_after_report() -> None:
    from acme import client, messages

    check = client.ClientNetwork.__dict__.get("_check_response")
    if not isinstance(check, classmethod):  # acme changed shape: the detail's own date is all we have
        return
    func = check.__func__

    def checked(cls: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(cls, response, *args, **kwargs)
        except messages.Error as error:
            at = retry_at(response.headers.get("Retry-After"), datetime.now(UTC))
            if at is not None and (error.code == "rateLimited" or response.status_code == 429):
                print(f"{RETRY_AFTER_LINE} {at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}", file=sys.stderr, flush=True)
            raise

    client.ClientNetwork._check_response = classmethod(checked)  # type: ignore[method-assign,assignment]


def main() -> int:
    die_with_parent()
    _install_patient_post()
    _install_retry_after_report()
    replaces = os.environ.pop(REPLACES_ENV, "")
    if replaces:
        install_replaces(replaces)
    from certbot.main import main as certbot_main

    return int(certbot_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
