"""The Swarm side of the Docker engine: services, secrets, tasks, rolling updates.

Goes through `DockerAdapter` (its connection, timeouts and error translation); like every
engine call it imports no SDK module itself. Everything returned is a value from
`tlsbridge.delivery.swarm_plan`; every engine error becomes a DockerError naming what was attempted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tlsbridge.adapters.docker import DockerAdapter
from tlsbridge.delivery.swarm_plan import (
    FILE_LABEL,
    FINGERPRINT_LABEL,
    INSTANCE_LABEL,
    STABLE_LABEL,
    PortInfo,
    SecretInfo,
    SecretRef,
    ServiceInfo,
    TaskInfo,
    UpdateStatus,
)
from tlsbridge.errors import DockerError
from tlsbridge.targets import SITE_LABEL

logger = logging.getLogger(__name__)

_NS = 1e9


class SwarmAdapter:
    def __init__(self, docker: DockerAdapter) -> None:
        self.docker = docker

    def manager_address(self) -> str | None:
        """This node's address when the engine is an active Swarm manager, else None."""
        with self.docker.calls("report its Swarm state"):
            info = self.docker.api().info()
        sw = info.get("Swarm") or {}
        if sw.get("LocalNodeState") != "active" or not sw.get("ControlAvailable"):
            return None
        return str(sw.get("NodeAddr") or "127.0.0.1")

    # -- reading ---------------------------------------------------------------------------------
    def services(self) -> list[ServiceInfo]:
        """Every service (tlsbridge's secrets may be used by services it does not target)."""
        with self.docker.calls("list Swarm services"):
            rows = self.docker.api().services()
        return [service_from(r) for r in rows]

    def service(self, ref: str) -> ServiceInfo:
        with self.docker.calls("inspect the service", ref, kind="service"):
            return service_from(self.docker.api().inspect_service(ref))

    def secrets(self) -> list[SecretInfo]:
        """tlsbridge's secrets (those labelled tlsbridge.site)."""
        with self.docker.calls("list Swarm secrets"):
            rows = self.docker.api().secrets(filters={"label": SITE_LABEL})
        out = []
        for r in rows:
            spec = r.get("Spec") or {}
            labels = spec.get("Labels") or {}
            if FILE_LABEL not in labels or FINGERPRINT_LABEL not in labels:
                continue  # labelled by someone else: not ours to replace or prune
            out.append(SecretInfo(id=str(r["ID"]), name=str(spec.get("Name", "")),
                                  site=str(labels[SITE_LABEL]), file=str(labels[FILE_LABEL]),
                                  fingerprint=str(labels[FINGERPRINT_LABEL]),
                                  stable=labels.get(STABLE_LABEL) == "true",
                                  created=str(r.get("CreatedAt", "")),
                                  instance=labels.get(INSTANCE_LABEL) or None))
        return out

    def tasks(self, service_id: str) -> list[TaskInfo]:
        with self.docker.calls("list the service's tasks", service_id, kind="service"):
            rows = self.docker.api().tasks(filters={"service": service_id})
        return [task_from(r) for r in rows]

    def node_addresses(self) -> dict[str, str]:
        """Node id -> the address the managers reach it at."""
        with self.docker.calls("list Swarm nodes"):
            rows = self.docker.api().nodes()
        return {str(n["ID"]): str((n.get("Status") or {}).get("Addr") or "") for n in rows}

    def task_logs(self, service_id: str, task_id: str, lines: int = 6) -> str:
        """The last lines a task wrote (through the service's log stream, which reaches every
        node); empty when the engine cannot tell."""
        try:
            with self.docker.calls("read the service's logs", service_id, kind="service"):
                raw = self.docker.api().service_logs(service_id, stdout=True, stderr=True,
                                                     details=True, tail=50)
                data = b"".join(raw)
        except Exception as exc:  # noqa: BLE001 - logs only garnish an error message
            logger.debug("cannot read logs of service %s: %s", service_id, exc)
            return ""
        mine = []
        marker = f"com.docker.swarm.task.id={task_id}"
        for line in data.decode("utf-8", "replace").splitlines():
            details, _, text = line.partition(" ")
            if marker in details and text.strip():
                mine.append(text.strip())
        return "\n".join(mine[-lines:])

    # -- acting ------------------------------------------------------------------------------------
    def create_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        with self.docker.calls(f"create the secret {name}", name, kind="secret"):
            return str(self.docker.api().create_secret(name, data, labels=dict(labels))["ID"])

    def remove_secret(self, secret: SecretInfo) -> None:
        with self.docker.calls(f"remove the secret {secret.name}", secret.name, kind="secret"):
            self.docker.api().remove_secret(secret.id)

    def set_secrets(self, service: ServiceInfo, refs: Sequence[SecretRef]) -> None:
        """Replace the service's secret list: a rolling update of its tasks.

        Refused (DockerError) when the list changed since `service` was read; the rest of the
        spec is taken as it is now (Swarm itself writes to the service object while it works).
        """
        api = self.docker.api()
        with self.docker.calls(f"update the service {service.name}", service.name, kind="service"):
            raw = api.inspect_service(service.id)
            spec: dict[str, Any] = raw["Spec"]
            if _refs(spec) != service.secrets:
                raise DockerError(f"the secrets of service {service.name} changed meanwhile; "
                                  "the next pass looks again")
            template: dict[str, Any] = spec["TaskTemplate"]
            template.setdefault("ContainerSpec", {})["Secrets"] = [
                {"File": {"Name": r.target, "UID": r.uid, "GID": r.gid, "Mode": r.mode},
                 "SecretID": r.secret_id, "SecretName": r.secret_name} for r in refs]
            api.update_service(service.id, int(raw["Version"]["Index"]), task_template=template,
                               name=spec.get("Name"), labels=spec.get("Labels") or {},
                               mode=spec.get("Mode"), update_config=spec.get("UpdateConfig"),
                               rollback_config=spec.get("RollbackConfig"),
                               endpoint_spec=spec.get("EndpointSpec"))

    def rollback(self, service: ServiceInfo) -> None:
        """`docker service rollback`: back to the service's previous spec."""
        api = self.docker.api()
        with self.docker.calls(f"roll back the service {service.name}", service.name, kind="service"):
            raw = api.inspect_service(service.id)
            # The SDK has no rollback parameter: the same request as the CLI's, through the
            # client's own JSON helpers (still one HTTP call with its timeout).
            url = api._url("/services/{0}/update", service.id)
            resp = api._post_json(url, data=raw["Spec"], params={
                "version": raw["Version"]["Index"], "rollback": "previous"})
            api._raise_for_status(resp)


# -- engine JSON -> values ---------------------------------------------------------------------------
def _refs(spec: Mapping[str, Any] | None) -> tuple[SecretRef, ...]:
    container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    out = []
    for s in container.get("Secrets") or ():
        f = s.get("File") or {}
        out.append(SecretRef(secret_id=str(s.get("SecretID", "")), secret_name=str(s.get("SecretName", "")),
                             target=str(f.get("Name", "")), uid=str(f.get("UID", "0")),
                             gid=str(f.get("GID", "0")), mode=int(f.get("Mode", 0o444))))
    return tuple(out)


def service_from(r: Mapping[str, Any]) -> ServiceInfo:
    spec = r.get("Spec") or {}
    mode = spec.get("Mode") or {}
    uc = spec.get("UpdateConfig") or {}
    endpoint = r.get("Endpoint") or {}
    ports = endpoint.get("Ports") or (endpoint.get("Spec") or {}).get("Ports") or ()
    us = r.get("UpdateStatus") or {}
    replicated = "Replicated" in mode or not mode
    return ServiceInfo(
        id=str(r["ID"]),
        name=str(spec.get("Name", "")),
        version=int((r.get("Version") or {}).get("Index", 0)),
        labels=dict(spec.get("Labels") or {}),
        secrets=_refs(spec),
        previous_secrets=_refs(r.get("PreviousSpec")),
        mode="replicated" if replicated else "global",
        replicas=int((mode.get("Replicated") or {}).get("Replicas", 1)) if replicated else None,
        order=str(uc.get("Order") or "stop-first"),
        failure_action=str(uc.get("FailureAction") or "pause"),
        monitor=float(uc.get("Monitor") or 5 * _NS) / _NS,
        delay=float(uc.get("Delay") or 0) / _NS,
        ports=tuple(PortInfo(int(p.get("TargetPort", 0)), int(p.get("PublishedPort") or 0),
                             str(p.get("PublishMode") or "ingress")) for p in ports),
        update=UpdateStatus(str(us.get("State", "")), str(us.get("StartedAt", "")),
                            str(us.get("Message", ""))),
    )


def task_from(r: Mapping[str, Any]) -> TaskInfo:
    status = r.get("Status") or {}
    cs = status.get("ContainerStatus") or {}
    addresses: dict[str, str] = {}
    for att in r.get("NetworksAttachments") or ():
        name = str(((att.get("Network") or {}).get("Spec") or {}).get("Name", ""))
        for addr in att.get("Addresses") or ():
            addresses.setdefault(name, str(addr).split("/")[0])
    code = cs.get("ExitCode")
    return TaskInfo(
        id=str(r["ID"]),
        node_id=str(r.get("NodeID", "")),
        desired=str(r.get("DesiredState", "")),
        state=str(status.get("State", "")),
        err=str(status.get("Err", "")),
        message=str(status.get("Message", "")),
        exit_code=int(code) if code is not None else None,
        addresses=addresses,
        timestamp=str(status.get("Timestamp", "")),
        container_id=str(cs.get("ContainerID", "")),
    )
