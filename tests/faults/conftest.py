"""Fault injection against the real things: Pebble, certbot, the tlsbridge CLI as processes,
tmpfs mounts for read-only and full filesystems. Run by `make test` (pytest tests)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from servers import PebbleServer, free_port  # noqa: E402


@pytest.fixture(scope="session")
def fault_pebble() -> Iterator[PebbleServer]:
    """A Pebble of this suite's own (authorization reuse off: every order validates)."""
    with PebbleServer(http_01_port=free_port(), authz_reuse=0) as server:
        yield server
