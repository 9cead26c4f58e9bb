"""The Swarm stack file of `tlsbridge compose --swarm`, for `docker stack deploy`: pure text.

Differences from the compose file (render/compose.py), all because a Swarm task may run on any
node, where no host folder of the person deploying exists:

- nginx gets its certificates as Swarm **secrets** (tlsbridge-<site>-fullchain.pem /
  -privkey.pem, `external`: tlsbridge creates and keeps them current) and its snippets as Swarm
  **configs** (from the files next to the stack file; a content hash in each name, because
  configs cannot change: an edited snippet becomes a new config and a rolling update);
- the site label is a *service* label (deploy.labels): tlsbridge updates the service, Swarm
  rolls its tasks (update_config: one at a time, rolled back when a new task fails);
- ACME HTTP-01 goes to certbot's standalone server inside the tlsbridge service (nginx
  passes /.well-known/acme-challenge/ on), since no webroot folder is shared between nodes;
- the tlsbridge service runs once, on a manager (only managers manage services and secrets).

The file sets `version: "3.8"` because Docker 20.10's `docker stack deploy` requires one
(Compose v2 only warns that it is obsolete).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tlsbridge.delivery.swarm_plan import FILES, INSTANCE_LABEL, MODES, secret_name
from tlsbridge.render.compose import (
    DOCKER_SOCKET,
    HTTP_PORT_VAR,
    HTTPS_PORT_VAR,
    NGINX_CAPS,
    NGINX_TMPFS,
    _wrap,
    q,
)
from tlsbridge.render.nginx import CERTS_DIR

PUBLISH_MODES = ("ingress", "host")
DEFAULT_SIDECAR_IMAGE = "tlsbridge:latest"
NODE_LABEL = "tlsbridge"  # the manager that keeps tlsbridge's volumes: node.labels.tlsbridge == true
INGRESS_REPLICAS = 2
SIDECAR_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


@dataclass(frozen=True)
class StackFile:
    """A file that becomes a Swarm config (or secret) of the stack."""

    key: str  # the key under configs:/secrets: in the stack file
    path: str  # as the stack file shows it (./relative or absolute)
    target: str  # where it lands in the container
    content: bytes  # only hashed, for the object's name
    secret: bool = False


@dataclass(frozen=True)
class StackSpec:
    source: str  # config file name, for the header
    sites: Sequence[str]
    snippets: Sequence[StackFile]  # nginx's, from --nginx-dir
    tlsbridge_files: Sequence[StackFile]  # the config file, its CA bundle, DNS credentials
    publish_dir: str  # paths inside the tlsbridge container (from the config)
    certbot_config_dir: str
    state_dir: str
    http_port: int | None  # challenge.http_port with the standalone method; None: dns method
    scratch: Sequence[str] = ("/var/lib/tlsbridge/certbot-work", "/var/log/tlsbridge")  # tmpfs
    image: str = "nginx:stable"
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    publish_mode: str = "ingress"
    extra: Sequence[str] = field(default_factory=tuple)  # header notes
    # The stack name the file is for: it prefixes the names of the stack's secrets and configs
    # and labels the tlsbridge service, so two stacks on one engine never share them ("": none).
    stack: str = ""


STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,29}")


def default_stack(folder: str) -> str:
    """The stack name from the stack file's folder, as Compose makes project names: lowercase,
    only letters, digits, - and _ (at most 30); "tlsbridge" when nothing is left."""
    name = re.sub(r"[^a-z0-9_-]", "", folder.lower()).lstrip("_-")[:30].rstrip("_-")
    return name or "tlsbridge"


def object_name(key: str, content: bytes, stack: str = "") -> str:
    """`[<stack>_]tlsbridge-<key>-<sha256[:12]>`, at most 64 characters (Swarm's limit)."""
    digest = hashlib.sha256(content).hexdigest()[:12]
    head = f"{stack}_" if stack else ""
    return f"{head}tlsbridge-{key[:64 - 24 - len(head)].rstrip('.-_')}-{digest}"


def acme_proxy_url(http_port: int) -> str:
    """Where nginx passes ACME HTTP-01 requests: the tlsbridge service by its name."""
    return f"http://tlsbridge:{http_port}"


def render(spec: StackSpec) -> str:
    if spec.publish_mode not in PUBLISH_MODES:
        raise ValueError(f"publish_mode must be one of {PUBLISH_MODES}, got {spec.publish_mode!r}")
    out = _header(spec)
    out += ['version: "3.8"', "", "services:"]
    out += _nginx(spec)
    out += _tlsbridge(spec)
    out += ["", "configs:"]
    for f in [*spec.snippets, *spec.tlsbridge_files]:
        if not f.secret:
            out += [f"  {f.key}:", f"    name: {object_name(f.key, f.content, spec.stack)}",
                    f"    file: {q(f.path)}"]
    out += ["", "secrets:"]
    out += ["  # Created and kept current by tlsbridge (`tlsbridge compose --swarm --create-secrets`",
            "  # makes placeholders before the first deploy). Each always holds the newest",
            "  # certificate that no service still runs on, so deploying this file again is safe."]
    for site in spec.sites:
        for name in FILES:
            out += [f"  {_secret_key(site, name)}:", "    external: true",
                    f"    name: {secret_name(site, name, instance=spec.stack or None)}"]
    for f in spec.tlsbridge_files:
        if f.secret:
            out += [f"  {f.key}:", f"    name: {object_name(f.key, f.content, spec.stack)}",
                    f"    file: {q(f.path)}"]
    out += [
        "",
        "volumes:",
        "  # Local to the node tlsbridge runs on: keep it on one node (see its placement).",
        "  letsencrypt: {}",
        "  state: {}",
        "  certs: {}",
    ]
    return "\n".join(out) + "\n"


def _secret_key(site: str, file: str) -> str:
    return f"{site}-{file.removesuffix('.pem')}"


def _header(spec: StackSpec) -> list[str]:
    host = spec.publish_mode == "host"
    how = (f"A Docker Swarm stack generated by `tlsbridge compose --swarm` from {spec.source}: "
           f"nginx serving {len(spec.sites)} site(s), and tlsbridge (`tlsbridge run`) on a manager "
           "delivering certificates as Swarm secrets through rolling updates of nginx.")
    lines = [*_wrap(how), "# Run it again after changing the sites; edits here are overwritten.", "#"]
    lines += [
        "# Before the first deploy, once: the secrets nginx starts with, and the node that keeps",
        "# tlsbridge's data (certbot's account and certificates):",
        "#   tlsbridge -c CONFIG compose --swarm --create-secrets ...",
        f"#   docker node update --label-add {NODE_LABEL}=true <manager>",
        f"# Then: docker stack deploy -c <this file> {spec.stack or '<stack>'}",
        "#",
        f"# Published ports: {HTTP_PORT_VAR} and {HTTPS_PORT_VAR} override 80 and 443, e.g.",
        f"#   {HTTPS_PORT_VAR}=8443 docker stack deploy -c <this file> <stack>",
        f"# Ports are published in {spec.publish_mode} mode"
        + (": on the node each nginx task runs on (one per node), no routing mesh." if host
           else ": the routing mesh answers on every node."),
    ]
    lines += [f"# {note}" for note in spec.extra]
    return [*lines, ""]


def _ports(spec: StackSpec) -> list[str]:
    out = ["    ports:"]
    for target, var, default in ((80, HTTP_PORT_VAR, 80), (443, HTTPS_PORT_VAR, 443)):
        out += [
            f"      - target: {target}",
            f"        published: ${{{var}:-{default}}}",
            "        protocol: tcp",
            f"        mode: {spec.publish_mode}",
        ]
    return out


def _nginx(spec: StackSpec) -> list[str]:
    host = spec.publish_mode == "host"
    order = "stop-first" if host else "start-first"
    out = ["  nginx:", f"    image: {q(spec.image)}"]
    out += _ports(spec)
    out += ["    configs:", "      # The nginx snippets written by `tlsbridge compose` (one per site + shared)."]
    for f in spec.snippets:
        out += [f"      - source: {f.key}", f"        target: {q(f.target)}"]
    out += [
        "    secrets:",
        "      # Certificates as Swarm secrets at the paths the snippets use. tlsbridge replaces",
        "      # them with each new certificate (an update of this service), never edits a file.",
    ]
    for site in spec.sites:
        for name in FILES:
            out += [f"      - source: {_secret_key(site, name)}",
                    f"        target: {q(f'{CERTS_DIR}/{site}/{name}')}",
                    f"        mode: 0{MODES[name]:o}"]
    out += ["    deploy:"]
    if host:
        out += ["      # One task per node: each answers on its node's ports 80 and 443.",
                "      mode: global"]
    else:
        out += [f"      replicas: {INGRESS_REPLICAS}"]
    out += [
        "      labels:",
        "        # A service label: tlsbridge delivers each new certificate of these sites to",
        "        # this service as new secrets (a rolling update).",
        f"        tlsbridge.site: {q(','.join(spec.sites))}",
        "      update_config:",
        "        parallelism: 1",
    ]
    if host:
        out += [
            "        # stop-first: a new task needs the host ports its predecessor holds, so each",
            "        # node is without nginx for the second or two its task restarts. Ingress ports",
            "        # (--publish-mode ingress) allow start-first, with no gap at all.",
        ]
    else:
        out += ["        # start-first: the new task runs before the old one stops: no gap, and a new",
                "        # task that cannot start never replaces a working one."]
    out += [
        f"        order: {order}",
        "        # A new task that exits within `monitor` (nginx refusing the new certificate or",
        "        # configuration) rolls the whole update back: the previous certificate stays.",
        "        failure_action: rollback",
        "        monitor: 5s",
        "      rollback_config:",
        "        parallelism: 1",
        f"        order: {order}",
        "      restart_policy:",
        "        condition: any",
        "        delay: 5s",
    ]
    out += _hardening(NGINX_CAPS, NGINX_TMPFS)
    return out


def _tmpfs(targets: Sequence[str]) -> list[str]:
    """Entries of a `volumes:` list: tmpfs where a read-only service writes."""
    out = []
    for target in targets:
        out += ["      - type: tmpfs", f"        target: {q(target)}"]
    return out


def _hardening(caps: Sequence[str], tmpfs: Sequence[str]) -> list[str]:
    """Read-only root filesystem with `tmpfs` (a `volumes:` list of its own, or nothing when the
    service's list already has them), and only `caps`.

    Swarm ignores security_opt, so there is no no-new-privileges here (the compose file has it).
    """
    which = "only these Linux capabilities" if caps else "no Linux capabilities"
    out = [f"    # Hardened: a read-only root filesystem (tmpfs where it writes), {which}."]
    out += ["    read_only: true"]
    if tmpfs:
        out += ["    volumes:", *_tmpfs(tmpfs)]
    out += ["    cap_drop: [ALL]"]
    if caps:
        out += [f"    cap_add: [{', '.join(caps)}]"]
    return out


def _tlsbridge(spec: StackSpec) -> list[str]:
    out = ["", "  tlsbridge:", f"    image: {q(spec.sidecar_image)}"]
    out += [
        "    # docker stack deploy does not build: push this image where every manager can pull",
        "    # it (scripts/build-sidecar-image.sh builds it from deploy/Dockerfile).",
        '    entrypoint: ["tlsbridge"]',
        f'    command: ["-c", {q(spec.tlsbridge_files[0].target)}, "run"]',
        "    # Root, for the Docker socket (stack files have no group_add); whoever uses the",
        "    # socket is root on the host anyway.",
        '    user: "0"',
    ]
    if spec.stack:
        out += [
            "    labels:",
            "      # The stack this file is for: names and labels this stack's certificate secrets,",
            "      # so another stack's tlsbridge (same site names or not) never touches them.",
            f"      {INSTANCE_LABEL}: {q(spec.stack)}",
        ]
    out += [
        "    configs:",
        "      # The config and the files it names, at the paths the config gives inside here.",
    ]
    for f in spec.tlsbridge_files:
        if not f.secret:
            out += [f"      - source: {f.key}", f"        target: {q(f.target)}"]
    secrets = [f for f in spec.tlsbridge_files if f.secret]
    if secrets:
        out += ["    secrets:"]
        for f in secrets:
            out += [f"      - source: {f.key}", f"        target: {q(f.target)}", "        mode: 0400"]
    out += [
        "    volumes:",
        "      - type: volume",
        "        source: letsencrypt",
        f"        target: {q(spec.certbot_config_dir)}",
        "      - type: volume",
        "        source: state",
        f"        target: {q(spec.state_dir)}",
        "      - type: volume",
        "        source: certs",
        f"        target: {q(spec.publish_dir)}",
        "      # The Docker socket of the manager it runs on: Swarm services and secrets.",
        "      - type: bind",
        f"        source: {q(DOCKER_SOCKET)}",
        f"        target: {q(DOCKER_SOCKET)}",
        "      # Scratch space: the root filesystem is read-only.",
        *_tmpfs(("/tmp", *spec.scratch)),
    ]
    # Root (for the socket) in volumes the image's user 10001 made: DAC_OVERRIDE, FOWNER and
    # CHOWN let certbot and the publisher write and set modes there, nothing more.
    out += _hardening(SIDECAR_CAPS, ())
    out += [
        "    healthcheck:",
        "      # The image's own check (GET /healthz), every 10 s instead of 30 s: Swarm gives a",
        "      # task a DNS name only once it is healthy, and nginx reaches certbot by that name.",
        "      interval: 10s",
        "      timeout: 5s",
        "      retries: 3",
        "      start_period: 30s",
        "    deploy:",
        "      # Exactly one, never two at once (certbot's account and locks live in its volumes).",
        "      replicas: 1",
    ]
    if spec.http_port is not None:
        out += [
            f"      # nginx reaches certbot's standalone server here by name ({acme_proxy_url(spec.http_port)}):",
            "      # DNS round robin to the task itself, no virtual IP needed.",
        ]
    out += [
        "      endpoint_mode: dnsrr",
        "      placement:",
        "        constraints:",
        "          - node.role == manager",
        "          # Its volumes are local to a node: moving to another one would start from",
        "          # nothing (a new ACME account, every certificate issued again). Label the",
        f"          # manager that keeps them: docker node update --label-add {NODE_LABEL}=true NODE",
        f"          - node.labels.{NODE_LABEL} == true",
        "      update_config:",
        "        order: stop-first",
        "      restart_policy:",
        "        condition: any",
        "        delay: 5s",
    ]
    return out

