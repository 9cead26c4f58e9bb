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

Run as `python -m tlsbridge.adapters.certbot_main ARGS` (certbot 5 has no `python -m certbot`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any

BAD_NONCE_ATTEMPTS = 6
PARENT_ENV = "TLSBRIDGE_CERTBOT_PARENT"  # the pid of the tlsbridge that started this process
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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


def main() -> int:
    die_with_parent()
    _install_patient_post()
    from certbot.main import main as certbot_main

    return int(certbot_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
