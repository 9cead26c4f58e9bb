"""Security tests: each reproduces an attack on tlsbridge and checks it is refused.

Real components as in tests/integration (whose helpers are importable from here): the fixtures
below are the few the security tests share.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from servers import ensure_docker_engine, ensure_nginx_image  # noqa: E402


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
