"""Session fixtures for integration tests: a Pebble CA, the Docker engine, the nginx image.

Logs of Pebble and pebble-challtestsrv are attached to the report of any failing test
that used the ``pebble`` fixture (section "pebble logs").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnsfixtures import bind9, dns_pebble  # noqa: E402, F401  (session fixtures for DNS-01 tests)
from servers import (  # noqa: E402
    PebbleServer,
    ensure_docker_engine,
    ensure_nginx_image,
    free_port,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pebble() -> Iterator[PebbleServer]:
    """One Pebble for the session: HTTP-01 on a free port (``pebble.http_01_port``), no nonce
    rejection, no VA sleep.

    Tests that need other settings start their own ``PebbleServer(...)`` (with their own free
    ``http_01_port``).
    """
    with PebbleServer(http_01_port=free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A ``docker.DockerClient`` for a running dockerd (started in the background if needed)."""
    ensure_docker_engine()
    import docker

    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def nginx_image(docker_engine: Any) -> str:
    """Tag of the registry-free nginx test image (built once if missing)."""
    return ensure_nginx_image()


@pytest.fixture
def certbot_env(pebble: PebbleServer) -> dict[str, str]:
    """os.environ plus REQUESTS_CA_BUNDLE for a certbot subprocess talking to ``pebble``."""
    return {**os.environ, **pebble.env}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "pebble" in getattr(item, "fixturenames", ()):
        server = getattr(item, "funcargs", {}).get("pebble")
        if isinstance(server, PebbleServer):
            report.sections.append(("pebble logs", server.logs(lines=60)))
    return report
