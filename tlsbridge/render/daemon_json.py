"""Pure renderers for `daemon-tls`: daemon.json, the systemd drop-in, client instructions.

There is deliberately no parameter that turns client verification off: every daemon.json this
module renders has `"tls": true` and `"tlsverify": true` next to its TCP listener, because TLS
without tlsverify lets anyone who reaches the port run containers as root on the host.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The keys daemon-tls owns; a merged daemon.json keeps every other key as it was.
OWNED_KEYS = ("hosts", "tls", "tlsverify", "tlscacert", "tlscert", "tlskey")
DEFAULT_SOCKET = "/var/run/docker.sock"
DROPIN_NAME = "tlsbridge.conf"
# What may stand in the drop-in's ExecStart line as dockerd's path: an absolute path of plain
# characters. systemd gives meaning to whitespace, quotes, `\\`, `%` (specifiers), `$`
# (variables) and `;`, and a newline would start a new directive (ExecStartPre=, a second
# --config-file): none of them can reach the file.
_SAFE_EXEC_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")


def unsafe_exec_path(path: str) -> str | None:
    """Why `path` cannot be the drop-in's dockerd, or None when it is safe. Pure."""
    if not path.startswith("/"):
        return "must be an absolute path"
    if not _SAFE_EXEC_PATH.fullmatch(path) or "/../" in f"{path}/":
        return ("must be an absolute path of letters, digits and . _ + - / only (no spaces, "
                "quotes, newlines, %, $ or ;)")
    return None


def host_port(host: str, port: int) -> str:
    """HOST:PORT with IPv6 literals in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def hosts(unix_socket: str, listen_host: str, listen_port: int) -> list[str]:
    """daemon.json `hosts`: the local unix socket plus the TLS-verified TCP listener."""
    return [f"unix://{unix_socket}", f"tcp://{host_port(listen_host, listen_port)}"]


def render_daemon_json(existing: Mapping[str, Any] | None, *, hosts: Sequence[str], ca: str,
                       cert: str, key: str) -> dict[str, Any]:
    """`existing` with its hosts/TLS keys replaced by a mutual-TLS listener; other keys kept.

    Key order is kept (the owned keys go last), so the same input renders the same bytes.
    Raises ValueError if a file path is not absolute (dockerd resolves relative paths against
    its own working directory, not the daemon.json's folder).
    """
    for label, path in (("tlscacert", ca), ("tlscert", cert), ("tlskey", key)):
        if not path.startswith("/"):
            raise ValueError(f"{label} must be an absolute path, got {path!r}")
    out = {k: v for k, v in (existing or {}).items() if k not in OWNED_KEYS}
    out.update({"hosts": list(hosts), "tls": True, "tlsverify": True, "tlscacert": ca,
                "tlscert": cert, "tlskey": key})
    return out


def daemon_json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_dropin(dockerd: str) -> str:
    """A docker.service drop-in that starts dockerd without `-H fd://`.

    systemd's unit passes `-H fd://`; dockerd refuses to start when `hosts` is also set in
    daemon.json, so the drop-in clears ExecStart and starts dockerd with no -H at all.
    Raises ValueError for a path `unsafe_exec_path` refuses.
    """
    problem = unsafe_exec_path(dockerd)
    if problem:
        raise ValueError(f"dockerd path {dockerd!r}: {problem}")
    return (
        "# Written by tlsbridge daemon-tls. Lets daemon.json set `hosts` (the unix socket and the\n"
        "# mutual-TLS TCP listener): the packaged unit's `dockerd -H fd://` would conflict.\n"
        "# Install as /etc/systemd/system/docker.service.d/" + DROPIN_NAME + ", then run:\n"
        "#   systemctl daemon-reload && systemctl restart docker\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={dockerd}\n"
    )


def context_name(host: str) -> str:
    """A valid `docker context` name for a host: [a-zA-Z0-9][a-zA-Z0-9_.+-]*."""
    name = re.sub(r"[^a-zA-Z0-9_.+-]+", "-", host).strip("-.+_")
    return name or "tlsbridge"


def context_command(name: str, docker_host: str, *, ca: str | None, cert: str, key: str) -> str:
    """`docker context create NAME --docker "host=...,ca=...,cert=...,key=..."`, shell-quoted.

    The --docker value is parsed as one CSV record, so fields with commas or quotes are CSV-quoted
    before the whole value is shell-quoted. `ca=None` leaves the CA out (the system roots then
    verify the engine, as for a public server certificate).
    """
    fields = [f"host={docker_host}"]
    if ca is not None:
        fields.append(f"ca={ca}")
    fields += [f"cert={cert}", f"key={key}"]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return f"docker context create {shlex.quote(name)} --docker {shlex.quote(buf.getvalue())}"


@dataclass(frozen=True)
class ClientInfo:
    name: str
    cert_dir: str  # absolute: DIR/clients/NAME, holding ca.pem, cert.pem, key.pem


def client_instructions(client: ClientInfo, *, host: str, port: int) -> str:
    """How a client uses its certificate: a docker context, or the DOCKER_* variables."""
    url = f"tcp://{host_port(host, port)}"
    d = client.cert_dir.rstrip("/")
    cmd = context_command(context_name(host), url, ca=f"{d}/ca.pem",
                          cert=f"{d}/cert.pem", key=f"{d}/key.pem")
    return (
        f"# client {client.name}: copy {d}/ to the client machine (same path, or adjust it), then\n"
        f"{cmd}\n"
        f"docker --context {shlex.quote(context_name(host))} version\n"
        f"# or, without a context:\n"
        f"export DOCKER_HOST={url}\n"
        f"export DOCKER_TLS_VERIFY=1\n"
        f"export DOCKER_CERT_PATH={shlex.quote(d)}\n"
    )


def apply_instructions(*, daemon_json: str, dropin: str, merged: bool = True,
                       target_json: str = "/etc/docker/daemon.json") -> str:
    """The commands that put the generated files in place on a systemd host."""
    lines = ["# apply on the Docker host (as root):"]
    if daemon_json != target_json:
        if not merged:
            lines.append(f"# this replaces {target_json}: to keep its other settings, re-run "
                         f"with --merge {target_json}")
        lines.append(f"install -m 0644 {shlex.quote(daemon_json)} {shlex.quote(target_json)}")
    lines += [
        f"install -D -m 0644 {shlex.quote(dropin)} "
        f"/etc/systemd/system/docker.service.d/{DROPIN_NAME}",
        "systemctl daemon-reload && systemctl restart docker",
    ]
    return "\n".join(lines) + "\n"
