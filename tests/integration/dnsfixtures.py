"""Session fixtures for DNS-01: one bind9 and a Pebble that validates against it.

Imported by conftest.py, so every module shares the same two servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bindserver import BindServer
from servers import PebbleServer, free_port

# example.test: the wildcard site (DNS-01); web.test: an HTTP-01 site resolved through bind9.
ZONES = ("example.test", "web.test")


@pytest.fixture(scope="session")
def bind9() -> Iterator[BindServer]:
    """named on a free 127.0.0.1 port, authoritative for ZONES, with a TSIG key that may update them."""
    with BindServer(ZONES) as server:
        yield server


@pytest.fixture(scope="session")
def dns_pebble(bind9: BindServer) -> Iterator[PebbleServer]:
    """A Pebble whose -dnsserver is ``bind9``: DNS-01 TXT lookups and HTTP-01 addresses both come
    from it. PEBBLE_AUTHZREUSE=0: every order validates anew, so a broken challenge always fails
    (Pebble's default reuses half of the valid authorizations)."""
    with PebbleServer(http_01_port=free_port(), dns_server=bind9.address, authz_reuse=0) as server:
        yield server
