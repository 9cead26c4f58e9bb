"""Open one fresh TLS connection and return the leaf certificate the server presents.

No trust decisions here: certificate verification is off on purpose (a bootstrap placeholder is
self-signed, and what we check is identity with the published bytes, not a chain).
"""

from __future__ import annotations

import socket
import ssl

_CTX: ssl.SSLContext | None = None


def _context() -> ssl.SSLContext:
    global _CTX
    if _CTX is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _CTX = ctx
    return _CTX


def served_leaf(host: str, port: int, server_name: str, timeout: float = 2.0) -> bytes:
    """The DER of the leaf served to a new connection with SNI `server_name`.

    Raises OSError (refused, unreachable, timeout) or ssl.SSLError.
    """
    with (socket.create_connection((host, port), timeout=timeout) as raw,
          _context().wrap_socket(raw, server_hostname=server_name) as tls):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return der


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
