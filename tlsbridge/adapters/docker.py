"""The only module that imports the `docker` SDK, and only when a method first needs it.

Connects per `docker.host`, else DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH for
tcp://...:2376), else the local socket, with `docker.timeout` on every call. Engine errors are
translated here, once: an unreachable engine or a refused request is a DockerError, a container
that vanished or stopped under us is a ContainerGoneError (a ReloadError).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tlsbridge.config import DockerConfig
from tlsbridge.errors import DockerError, ReloadError
from tlsbridge.targets import ContainerInfo, Mount

logger = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")
_UNSET: Any = object()


class ContainerGoneError(ReloadError):
    """A target container was removed or stopped between being listed and being acted on."""


@dataclass(frozen=True)
class DockerEvent:
    """One engine event, e.g. type "container", action "start"."""

    type: str
    action: str
    id: str
    name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)  # labels and name for containers
    time: float = 0.0


class EventStream:
    """Iterate engine events; `close()` (from any thread) ends the iteration."""

    def __init__(self, stream: Any, where: str) -> None:
        self._stream = stream
        self._where = where

    def __iter__(self) -> Iterator[DockerEvent]:
        try:
            for raw in self._stream:
                actor = raw.get("Actor") or {}
                attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
                yield DockerEvent(
                    type=str(raw.get("Type", "")),
                    action=str(raw.get("Action") or raw.get("status") or ""),
                    id=str(actor.get("ID") or raw.get("id") or ""),
                    name=attrs.get("name", ""),
                    attributes=attrs,
                    time=float(raw.get("timeNano", 0)) / 1e9 or float(raw.get("time", 0)),
                )
        except Exception as exc:  # the stream's transport errors, translated once
            raise DockerError(f"the Docker event stream from {self._where} broke: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


class DockerAdapter:
    """A thin, typed face of the Docker engine for delivery, doctor and `run`."""

    def __init__(self, cfg: DockerConfig, environ: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.environ = dict(os.environ if environ is None else environ)
        self._client: Any = None
        self._own: Any = _UNSET
        self._pid1: dict[tuple[str, int], str | None] = {}

    @property
    def where(self) -> str:
        return self.cfg.host or self.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    # -- connection ------------------------------------------------------------------------
    def api(self) -> Any:
        """The SDK's low-level client (docker.APIClient), connected on first use."""
        if self._client is None:
            from docker.utils import kwargs_from_env

            kwargs: dict[str, Any] = kwargs_from_env(environment=self.environ)
            if self.cfg.host:
                kwargs["base_url"] = self.cfg.host
            kwargs["timeout"] = max(1, int(self.cfg.timeout.total_seconds()))
            with self._calls("connect"):
                self._client = _api_class()(**kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    @contextlib.contextmanager
    def _calls(self, what: str, name: str | None = None, kind: str = "container") -> Iterator[None]:
        """Translate the SDK's and the transport's errors into ours, naming what was attempted.

        `kind`: what `name` is; a missing container is a ContainerGoneError, a missing Swarm
        object (service, secret, ...) a DockerError.
        """
        import docker.errors
        import requests.exceptions

        try:
            yield
        except docker.errors.NotFound as exc:
            if kind != "container":
                raise DockerError(f"{kind} {name or '?'} does not exist (while trying to {what}): "
                                  f"{exc.explanation or exc}") from exc
            raise ContainerGoneError(f"container {name or '?'} does not exist any more "
                                     f"(while trying to {what})") from exc
        except docker.errors.APIError as exc:
            explanation = str(exc.explanation or exc)
            # "is restarting": an nginx in its restart loop (no certificate yet) between two tries
            if exc.status_code == 409 and ("not running" in explanation or "is restarting" in explanation):
                raise ContainerGoneError(f"container {name or '?'} is not running any more "
                                         f"(while trying to {what})") from exc
            raise DockerError(f"Docker refused to {what}: {explanation}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
            raise DockerError(f"the Docker engine at {self.where} is not reachable ({what}): "
                              f"{_short(exc)}") from exc

    calls = _calls  # for the other engine adapters (adapters/swarm.py), which import no SDK

    # -- reading ------------------------------------------------------------------------------
    def version(self) -> str:
        with self._calls("report its version"):
            return str(self.api().version().get("Version", "?"))

    def containers(self) -> list[ContainerInfo]:
        """Every container, running or not (one API call)."""
        with self._calls("list containers"):
            rows = self.api().containers(all=True)
        return [_from_summary(r) for r in rows]

    def container(self, ref: str) -> ContainerInfo:
        """One container by id or name (raises ContainerGoneError if it does not exist)."""
        with self._calls("inspect the container", ref):
            return _from_inspect(self.api().inspect_container(ref))

    def own_container(self) -> ContainerInfo | None:
        """The container tlsbridge runs in, on this engine; None on the host (cached)."""
        if self._own is _UNSET:
            self._own = None
            cid = own_container_id()
            if cid is not None:
                with contextlib.suppress(ContainerGoneError, DockerError):
                    self._own = self.container(cid)
        own: ContainerInfo | None = self._own
        return own

    def own_networks(self) -> frozenset[str] | None:
        own = self.own_container()
        if own is None:
            return None
        return frozenset(own.networks) | ({"host"} if own.network_mode == "host" else set())

    def logs(self, ref: str, lines: int = 20) -> str:
        with self._calls("read the container's logs", ref):
            data = self.api().logs(ref, stdout=True, stderr=True, tail=lines)
        return bytes(data).decode("utf-8", "replace")

    def pid1_command(self, ref: str, name: str) -> str | None:
        """The command line of the container's PID 1 (None if the engine cannot tell)."""
        with self._calls("inspect the container", name):
            pid = int(self.api().inspect_container(ref)["State"].get("Pid") or 0)
        key = (ref, pid)
        if key not in self._pid1:
            cmd = None
            try:
                with self._calls("list the container's processes", name):
                    top = self.api().top(ref)
                titles = list(top.get("Titles") or [])
                ipid, icmd = titles.index("PID"), titles.index("CMD")
                for row in top.get("Processes") or []:
                    if str(row[ipid]) == str(pid):
                        cmd = str(row[icmd])
            except (DockerError, ValueError, IndexError) as exc:
                logger.debug("cannot list processes of %s: %s", name, exc)
            self._pid1[key] = cmd
        return self._pid1[key]

    # -- acting -------------------------------------------------------------------------------
    def exec(self, ref: str, argv: Sequence[str], name: str) -> tuple[int, str]:
        """Run `argv` in a running container: (exit code, output). A failing command does not raise."""
        what = f"run {' '.join(argv)} in {name}"
        with self._calls(what, name):
            api = self.api()
            exec_id = api.exec_create(ref, list(argv), stdout=True, stderr=True)["Id"]
            out = api.exec_start(exec_id)
            code = api.exec_inspect(exec_id).get("ExitCode")
        text = bytes(out or b"").decode("utf-8", "replace")
        return (int(code) if code is not None else -1), text

    def kill(self, ref: str, signal: str, name: str) -> None:
        with self._calls(f"send {signal} to {name}", name):
            self.api().kill(ref, signal=signal)

    def start(self, ref: str, name: str) -> None:
        with self._calls(f"start {name}", name):
            self.api().start(ref)

    def events(self, filters: Mapping[str, str | Sequence[str]] | None = None,
               since: datetime | None = None) -> EventStream:
        """The engine's event stream, e.g. filters={"type": "container", "event": ["start"]}.

        Blocks while iterating (no read timeout); call `close()` on the stream to stop.
        """
        with self._calls("stream events"):
            stream = self.api().events(since=since, filters=dict(filters or {}), decode=True)
        return EventStream(stream, self.where)


_API_CLASS: Any = None


def _api_class() -> Any:
    """docker.APIClient that ignores $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE when it has a CA file.

    requests lets those variables replace a session's CA file, so wherever they are set (often
    system-wide) the engine's TLS certificate would be checked against the wrong CA and fail.
    The SDK asks the engine for its API version inside the constructor, hence a property rather
    than setting `trust_env` afterwards. Without TLS, proxies from the environment still apply.
    """
    global _API_CLASS
    if _API_CLASS is None:
        import docker

        class _ApiClient(docker.APIClient):  # type: ignore[misc]
            @property
            def trust_env(self) -> bool:
                return not isinstance(getattr(self, "verify", None), str)

            @trust_env.setter
            def trust_env(self, value: bool) -> None:
                pass

        _API_CLASS = _ApiClient
    return _API_CLASS


def own_container_id() -> str | None:
    """Our container's id when we run in a container (from mountinfo, else the hostname)."""
    if not (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()):
        return None
    with contextlib.suppress(OSError):
        # Only the engine's bind mount of our own /etc/hostname names us: on a host that itself
        # has a /.dockerenv, other containers' /var/lib/docker/containers/<id>/mounts/... show
        # up in mountinfo too (as mount points), and must not be taken for ours.
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] == "/etc/hostname":
                m = _CONTAINER_ID.search(fields[3])
                if m:
                    return m.group(1)
    host = socket.gethostname()
    return host if re.fullmatch(r"[0-9a-f]{12,64}", host) else None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _mounts(raw: Any) -> tuple[Mount, ...]:
    return tuple(
        Mount(type=str(m.get("Type", "")), source=str(m.get("Source", "")),
              destination=str(m.get("Destination", "")), name=m.get("Name"),
              rw=bool(m.get("RW", True)))
        for m in raw or ()
    )


def _networks(settings: Any) -> dict[str, str]:
    nets = (settings or {}).get("Networks") or {}
    return {str(k): str((v or {}).get("IPAddress") or "") for k, v in nets.items()}


def _from_summary(r: Mapping[str, Any]) -> ContainerInfo:
    names = r.get("Names") or ["/" + str(r.get("Id", ""))[:12]]
    return ContainerInfo(
        id=str(r["Id"]),
        name=str(names[0]).lstrip("/"),
        state=str(r.get("State", "")),
        status=str(r.get("Status", "")),
        labels=dict(r.get("Labels") or {}),
        networks=_networks(r.get("NetworkSettings")),
        network_mode=str((r.get("HostConfig") or {}).get("NetworkMode", "")),
        mounts=_mounts(r.get("Mounts")),
        ports=tuple(sorted({int(p["PrivatePort"]) for p in r.get("Ports") or ()
                            if p.get("Type", "tcp") == "tcp" and p.get("PrivatePort")})),
    )


def _from_inspect(r: Mapping[str, Any]) -> ContainerInfo:
    state = r.get("State") or {}
    status = str(state.get("Status", ""))
    text = f"Exited ({state.get('ExitCode', 0)})" if status == "exited" else status
    return ContainerInfo(
        id=str(r["Id"]),
        name=str(r.get("Name", "")).lstrip("/"),
        state=status,
        status=text,
        labels=dict((r.get("Config") or {}).get("Labels") or {}),
        networks=_networks(r.get("NetworkSettings")),
        network_mode=str((r.get("HostConfig") or {}).get("NetworkMode", "")),
        mounts=_mounts(r.get("Mounts")),
        ports=tuple(sorted({int(k.split("/")[0]) for k in (r.get("Config") or {}).get("ExposedPorts") or {}
                            if k.endswith("/tcp") and k.split("/")[0].isdigit()})),
    )
