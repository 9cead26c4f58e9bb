"""Which containers belong to this tlsbridge instance: those that can see what it publishes.

Several tlsbridge instances may share one Docker engine (two compose projects, each with a site
named `app`), and the `tlsbridge.site` label is engine-global. Instead of a setting users must
remember, the scope is derived from what is physically needed: a container can only serve this
instance's certificates if it mounts this instance's published folder. So a container found
through a label (`tlsbridge.site=...` or a `label:` entry) is a target only if one of its bind or
volume mounts shows `publish.dir` as it lives on the Docker host, or if it shows no sign of
being another instance's (a folder mounted at `/etc/tlsbridge/certs` that is not ours):

- tlsbridge on the host: the real path of `publish.dir` (a bind of that folder, a parent of it,
  or a site's folder inside it);
- tlsbridge in a container (the sidecar): the volume or bind that backs its own `publish.dir`,
  found from its own container's mounts; two compose projects' `<project>_certs` volumes have
  different data folders, so they never match each other.

Containers named in `reload: - container: NAME` are the user's explicit choice and always in
scope. When the published folder's host location cannot be told (publish.dir on no mount of
tlsbridge's own container, which `doctor` reports), nothing is filtered.

The predicate is pure (`Scope.owns`); `own_scope` is the one adapter call (our own container's
mounts, and `com.docker.stack.namespace` for Swarm services).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tlsbridge.targets import ContainerInfo, Mount

if TYPE_CHECKING:
    from tlsbridge.adapters.docker import DockerAdapter

STACK_LABEL = "com.docker.stack.namespace"
MOUNT_POINT = "/etc/tlsbridge/certs"  # where the docs and generated files mount published folders


@dataclass(frozen=True)
class Scope:
    """This instance's published folder on the Docker host (None: unknown, nothing filtered),
    and the Swarm stack tlsbridge runs in (None: on the host, or not in a stack)."""

    publish: str | None
    stack: str | None = None

    def owns(self, c: ContainerInfo) -> bool:
        """Whether `c` is this instance's: it mounts our published folder, or at least nothing
        that marks it as another instance's (`foreign_mount`): a container a user labelled by hand
        without mounting our folder stays a target (and `doctor` tells how to mount it)."""
        return self.publish is None or self.mount_of(c) is not None or foreign_mount(c) is None

    def mount_of(self, c: ContainerInfo) -> Mount | None:
        """The mount through which `c` sees this instance's published folder, if any."""
        if self.publish is None:
            return None
        for m in c.mounts:
            if m.type not in ("bind", "volume") or not m.source:
                continue
            for src in {m.source, os.path.realpath(m.source)}:
                if within(self.publish, src) or within(src, self.publish):
                    return m
        return None

    def owns_service(self, labels: Mapping[str, str] | None) -> bool:
        """A Swarm service is ours when it is in our stack (or when we run in none: tlsbridge on
        a manager's host, or a sidecar started outside `docker stack deploy`)."""
        return self.stack is None or (labels or {}).get(STACK_LABEL) == self.stack


def foreign_mount(c: ContainerInfo) -> Mount | None:
    """A folder `c` mounts where tlsbridge's certificates go (`/etc/tlsbridge/certs`, as the docs
    and `tlsbridge compose` write it). For a container that does not mount our published folder,
    that is another instance's published folder."""
    for m in c.mounts:
        if m.type in ("bind", "volume") and m.source and within(m.destination, MOUNT_POINT):
            return m
    return None


def host_path(path: str, own_mounts: Sequence[Mount] | None) -> str | None:
    """Where `path` (as tlsbridge sees it) lives on the Docker host; None if only inside our container.

    On the host (own_mounts None) it is the path itself, symlinks resolved. In a container it is
    the source of the mount that holds it (a bind's host folder or a volume's data folder) plus
    the rest of the path.
    """
    if own_mounts is None:
        return os.path.realpath(path)
    best: Mount | None = None
    for m in own_mounts:
        if within(path, m.destination) and (best is None or len(m.destination) > len(best.destination)):
            best = m
    if best is None or not best.source:
        return None
    rest = os.path.relpath(path, best.destination)
    return best.source if rest == "." else str(PurePosixPath(best.source) / rest)


def scope_for(publish_dir: Path, own: ContainerInfo | None) -> Scope:
    """Pure: the scope of an instance publishing into `publish_dir`, running in `own` (None: host)."""
    return Scope(host_path(str(publish_dir), own.mounts if own is not None else None),
                 own.labels.get(STACK_LABEL) if own is not None else None)


def own_scope(publish_dir: Path, docker: DockerAdapter) -> Scope:
    """The scope of this process: finds its own container (if any) through the engine.

    In a container whose own details cannot be read, the scope is unknown (nothing filtered)."""
    from tlsbridge.adapters.docker import own_container_id

    own = docker.own_container()
    if own is None and own_container_id() is not None:
        return Scope(None)
    return scope_for(publish_dir, own)


def within(path: str, ancestor: str) -> bool:
    a = ancestor.rstrip("/") or "/"
    return path == a or path.startswith(a if a.endswith("/") else a + "/")
