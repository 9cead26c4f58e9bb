"""Never spend a validation that cannot succeed (HTTP-01 with the webroot method).

Before the CA is asked, the containers that answer a site's challenge (its targets that mount
`challenge.webroot`) must run, and one of them must serve a token written into the webroot
through its port 80 when it listens there: a random file under `.well-known/acme-challenge/`,
fetched from the container's address with a short timeout, then removed. A container that does
not listen on port 80 is not held against the site (another server may answer the challenge).
A failed validation counts against the CA's limits (Let's Encrypt: 5 per name and hour), a
failed self-check costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from pathlib import Path

from tlsbridge.delivery.scope import within
from tlsbridge.targets import ContainerInfo

logger = logging.getLogger(__name__)

PREFIX = ".well-known/acme-challenge/"
SELF_CHECK_TIMEOUT = 2.0


def serves_webroot(c: ContainerInfo, webroot_host: str) -> bool:
    """Whether `c` mounts the webroot (as it lives on the Docker host) or a parent of it."""
    return any(m.type in ("bind", "volume") and m.source and within(webroot_host, m.source)
               for m in c.mounts)


def self_check(address: str, webroot: Path, server_name: str, container: str,
               timeout: float = SELF_CHECK_TIMEOUT) -> str | None:
    """Write a token into `webroot`, fetch it from http://`address`/ (Host `server_name`), remove
    it. Returns why the container does not answer the challenge (it is running but answers HTTP
    with something else), or None when it does, or when nothing is known (the token cannot be
    written here, nothing listens on its port 80): then the CA decides."""
    from tlsbridge.adapters.http01_reachable import fetch

    token = "tlsbridge-selfcheck-" + secrets.token_urlsafe(12)
    folder = webroot / PREFIX
    path = folder / token
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(token)
        path.chmod(0o644)
    except OSError as exc:
        logger.warning("cannot write a self-check token into %s (%s); not checking %s", folder, exc,
                       container)
        return None
    url = f"http://{address}/{PREFIX}{token}"
    try:
        status, body = fetch(address, 80, "/" + PREFIX + token, server_name, timeout=timeout)
    except OSError as exc:
        # Nothing listens on its port 80 (or not in time): another server may well answer the
        # challenge for it, so this says nothing; the CA decides.
        logger.info("self-check of %s inconclusive: %s failed (%s)", container, url, exc)
        return None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    if status != 200 or body.strip() != token.encode():
        return (f"container {container} does not answer the HTTP-01 challenge: {url} (Host "
                f"{server_name}) gave HTTP {status} instead of the token written into {webroot}")
    return None
