"""The Compose Specification file of `tlsbridge compose`: pure text, no I/O.

Rendered as text rather than through a YAML dumper so the file carries comments that explain
the choices a person would otherwise undo (folder mounts, the Docker socket). The same inputs
always give the same bytes. Host paths arrive already written the way the file should show
them (relative to the compose file's folder, or absolute); `$` is escaped for Compose.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from tlsbridge.render.discovered import NGINX_DIR as DISCOVERED_DIR
from tlsbridge.render.nginx import CERTS_DIR, CONF_DIR, WEBROOT_DIR

HTTP_PORT_VAR = "TLSBRIDGE_HTTP_PORT"
HTTPS_PORT_VAR = "TLSBRIDGE_HTTPS_PORT"
DEFAULT_IMAGE = "nginx:stable"
# Not pinned by default (no tag here has been reviewed for you): the generated file says so and
# `compose --socket-proxy-image NAME:TAG@sha256:...` pins it.
SOCKET_PROXY_IMAGE = "tecnativa/docker-socket-proxy:latest"
SIDECAR_CONFIG_DIR = "/etc/tlsbridge"  # where the sidecar sees the config file's folder
DOCKER_SOCKET = "/var/run/docker.sock"
SIDECAR_LISTEN = "0.0.0.0:8400"  # on the stack's network only: no port is published
SIDECAR_UID = 10001  # deploy/Dockerfile's TLSBRIDGE_UID: the owner of its scratch tmpfs folders
# Where nginx writes at run time (pid file, temp files of request bodies and proxying) in the
# official image (/var/cache/nginx) and Debian's build (/var/lib/nginx); the rest is read-only.
NGINX_TMPFS = ("/run", "/var/cache/nginx", "/var/lib/nginx", "/tmp")
# Measured with cap_drop ALL: the master chowns its temp folders (CHOWN), starts workers as
# another user (SETUID, SETGID), reads keys owned by the sidecar's user (DAC_OVERRIDE) and binds
# 80/443 (NET_BIND_SERVICE: engines that do not open ports below 1024 to containers).
NGINX_CAPS = ("CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE", "DAC_OVERRIDE")


@dataclass(frozen=True)
class SiteMount:
    name: str
    host_dir: str  # <publish.dir>/<name> as written in the file (host mode)


@dataclass(frozen=True)
class SidecarPaths:
    """Where the sidecar's config puts things (paths inside the tlsbridge container)."""

    publish_dir: str
    webroot: str
    certbot_config_dir: str
    state_dir: str
    # certbot's work_dir and logs_dir: scratch, on tmpfs (the root filesystem is read-only)
    scratch: tuple[str, ...] = ("/var/lib/tlsbridge/certbot-work", "/var/log/tlsbridge")
    discovery_dir: str | None = None  # discovery.enabled: where tlsbridge writes server blocks


@dataclass(frozen=True)
class ComposeSpec:
    source: str  # config file name, for the header
    sites: Sequence[SiteMount]
    nginx_dir: str
    webroot: str  # host mode: challenge.webroot on the host
    image: str = DEFAULT_IMAGE
    sidecar: bool = False
    socket_proxy: bool = False
    config_dir: str = "."  # sidecar: the host folder holding the config file
    config_name: str = "tlsbridge.yaml"
    build_context: str = "."
    sidecar_image: str | None = None  # sidecar: use this image instead of building
    socket_proxy_image: str = SOCKET_PROXY_IMAGE
    inside: SidecarPaths | None = field(default=None)
    override: str = "compose.override.yaml"  # where the user's additions go (override_name)
    # discovery.enabled: host mode, the folders as written in the file (publish.dir, discovery.dir);
    # sidecar mode, "" (named volumes) with SidecarPaths.discovery_dir
    discovery: tuple[str, str] | None = None


def q(text: str) -> str:
    """A double-quoted YAML scalar with `$` escaped for Compose interpolation."""
    return json.dumps(text.replace("$", "$$"), ensure_ascii=False)


def render(spec: ComposeSpec) -> str:
    out: list[str] = _header(spec)
    out += ["services:"]
    out += _nginx(spec)
    if spec.sidecar:
        out += _tlsbridge(spec)
        if spec.socket_proxy:
            out += _socket_proxy(spec.socket_proxy_image)
        out += ["", "volumes:"]
        for name in ("certs", "acme-webroot", "letsencrypt", "state"):
            out.append(f"  {name}: {{}}")
        if spec.discovery is not None:
            out.append("  discovered: {}")
        if spec.socket_proxy:
            out += [
                "",
                "networks:",
                "  default: {}",
                "  # Only tlsbridge and the socket proxy are on this network; it has no way out.",
                "  docker-api:",
                "    internal: true",
            ]
    return "\n".join(out) + "\n"


def _header(spec: ComposeSpec) -> list[str]:
    n = len(spec.sites)
    if spec.sidecar:
        how = ("tlsbridge runs next to nginx as a sidecar (`tlsbridge run`) and shares the "
               "certificates and the ACME webroot with it through named volumes.")
    else:
        how = ("tlsbridge runs on the host (a systemd timer runs `tlsbridge renew`) and "
               "nginx mounts the host folders it publishes into.")
    return [
        f"# Generated by `tlsbridge compose` from {spec.source}: nginx serving {n} site(s).",
        *_wrap(how),
        "# Run it again after changing the sites; edits here are overwritten.",
        *_wrap(f"YOUR additions (your app's service, more ports) go in {spec.override}: "
               f"{_merged_how(spec.override)} `tlsbridge compose` writes a commented starter "
               "of it once and never touches it again."),
        "#",
        *(_DISCOVERY_HELP if spec.discovery is not None else []),
        f"# Published ports: {HTTP_PORT_VAR} and {HTTPS_PORT_VAR} (a port, or ADDRESS:PORT) "
        "override",
        "# 80 and 443 without editing this file, e.g.",
        f"#   {HTTPS_PORT_VAR}=127.0.0.1:8443 docker compose up -d",
        "",
    ]


# The files Compose v2 reads by itself in a folder (when no -f is given), and their overrides.
AUTO_MERGED = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def override_name(compose_file: str) -> str:
    """compose.yaml -> compose.override.yaml (the name Compose merges by itself)."""
    stem, dot, ext = compose_file.rpartition(".")
    return f"{stem}.override.{ext}" if dot and stem else f"{compose_file}.override.yaml"


def _merged_how(override: str) -> str:
    main = override.replace(".override", "", 1)
    if main in AUTO_MERGED:
        return "`docker compose` run in this folder merges it over this file by itself."
    return f"give both files: `docker compose -f {main} -f {override} ...`."


def render_override(spec: ComposeSpec) -> str:
    """The starter of the user's own override file: valid as it is (it changes nothing), with
    commented examples of an app service on the stack's network and more published ports."""
    main = spec.override.replace(".override", "", 1)
    return "\n".join([
        f"# {spec.override}: YOUR part of the stack. Written once by `tlsbridge compose` as a",
        "# starter; it never writes this file again, so edit freely.",
        *_wrap(_merged_how(spec.override)),
        *_wrap(f"Compose adds list entries (ports, volumes) to those of {main} and replaces "
               "single values, per service."),
        "",
        "services:",
        "  # Your app. Every service of this file is on the stack's network (`default`), so nginx",
        "  # reaches it by its service name: in the tlsbridge config set the site's",
        "  #   upstream: http://app:8080",
        "  # then run `tlsbridge compose` again and `docker compose up -d`. No `ports:` needed:",
        "  # nginx is the way in.",
        "  # app:",
        "  #   image: example/app:1.0",
        "  #   restart: unless-stopped",
        "",
        "  nginx:",
        "    # More published ports, added to 80 and 443 (HOST:CONTAINER; a port your own nginx",
        f"    # snippet in {spec.nginx_dir}/ listens on):",
        "    ports:",
        '    #  - "8443:8443"',
        "",
    ])


_DISCOVERY_HELP = [
    "# Discovery is on: an app container gets HTTPS with a label and this stack's network, e.g.",
    "#   docker run -d --network <project>_default --label tlsbridge.domains=app.example.com my/app",
    "# (<project>: the compose project name, by default this folder's name). tlsbridge writes its",
    "# server block, proxies to it by container name and port (label tlsbridge.port, else its one",
    "# exposed port, else 80) and issues its certificate. See the README, section Discovery.",
    "#",
]


def _wrap(text: str, prefix: str = "# ", width: int = 96) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(prefix) + len(line) + 1 + len(word) > width:
            lines.append(prefix + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(prefix + line)
    return lines


def _bind(source: str, target: str, *, create: bool = True, read_only: bool = True) -> list[str]:
    lines = [
        "      - type: bind",
        f"        source: {q(source)}",
        f"        target: {q(target)}",
    ]
    if read_only:
        lines.append("        read_only: true")
    if create:
        lines += ["        bind:", "          create_host_path: true"]
    return lines


def _volume(name: str, target: str, *, read_only: bool) -> list[str]:
    lines = [
        "      - type: volume",
        f"        source: {name}",
        f"        target: {q(target)}",
    ]
    if read_only:
        lines.append("        read_only: true")
    return lines


_FOLDER_NOT_FILE = [
    "      # Certificates are mounted as FOLDERS, read-only, never as a single .pem file: a",
    "      # bind-mounted file pins the inode the container saw when it started, and a renewal",
    "      # is published as new files plus a rename, so a file mount would keep serving the",
    "      # old certificate until the container is recreated. A folder mount sees every",
    "      # renewal. Inside a site's folder fullchain.pem -> current/fullchain.pem ->",
    "      # .gen-N/fullchain.pem are relative links that resolve within the folder.",
]


def _nginx(spec: ComposeSpec) -> list[str]:
    # Sidecar: "*", every site of the tlsbridge whose certificates volume this nginx mounts, so
    # adding a site leaves the service unchanged and `docker compose up -d` does not recreate
    # (stop) nginx; the sidecar loads the new server block with a config-tested reload once the
    # site's placeholder exists. On the host each site has its own mount anyway: its names.
    label = "*" if spec.sidecar else ",".join(s.name for s in spec.sites)
    out = [
        "  nginx:",
        f"    image: {q(spec.image)}",
        "    restart: unless-stopped",
        "    ports:",
        f'      - "${{{HTTP_PORT_VAR}:-80}}:80"',
        f'      - "${{{HTTPS_PORT_VAR}:-443}}:443"',
    ]
    if spec.discovery is not None:
        out += [
            "    labels:",
            "      # tlsbridge writes the server blocks of app containers labelled tlsbridge.domains",
            "      # for this nginx (it mounts them), tests them with nginx -t and reloads it.",
            '      tlsbridge.discovery: "true"',
        ]
        if spec.sites:
            out.append(f"      tlsbridge.site: {q(label)}")
    elif spec.sites:
        out += [
            "    labels:",
            "      # tlsbridge reloads every container carrying this label (nginx -t first) after it",
            "      # publishes a new certificate for one of these sites.",
            *(["      # \"*\": every site, so adding one does not recreate nginx (see docs/compose.md)."]
              if spec.sidecar else []),
            f"      tlsbridge.site: {q(label)}",
        ]
    out += ["    volumes:"]
    if spec.sidecar:
        out += _FOLDER_NOT_FILE
        out += [f"      # Here: the whole certs volume, one folder per site at {CERTS_DIR}/<site>."]
        out += _volume("certs", CERTS_DIR, read_only=True)
        out += ["      # ACME HTTP-01: tlsbridge's certbot writes the tokens, nginx serves them."]
        out += _volume("acme-webroot", WEBROOT_DIR, read_only=True)
    elif spec.discovery is not None:
        out += _FOLDER_NOT_FILE
        out += [f"      # Here: all of publish.dir (discovered sites come and go), {CERTS_DIR}/<site>."]
        out += _bind(spec.discovery[0], CERTS_DIR)
    else:
        out += _FOLDER_NOT_FILE
        for site in spec.sites:
            out += _bind(site.host_dir, f"{CERTS_DIR}/{site.name}")
    if not spec.sidecar:
        out += ["      # ACME HTTP-01: certbot (challenge.webroot) writes the tokens, nginx serves them."]
        out += _bind(spec.webroot, WEBROOT_DIR)
    out += ["      # The nginx snippets written by `tlsbridge compose` (one file per site + shared)."]
    out += _bind(spec.nginx_dir, CONF_DIR, create=False)
    if spec.discovery is not None:
        out += ["      # discovery.dir: the server blocks of discovered apps, written by tlsbridge at run time."]
        out += (_volume("discovered", DISCOVERED_DIR, read_only=True) if spec.sidecar
                else _bind(spec.discovery[1], DISCOVERED_DIR))
    out += [
        "    healthcheck:",
        "      # A config test that also loads every certificate and key; needs nothing but nginx.",
        '      test: ["CMD", "nginx", "-t", "-q"]',
        "      interval: 30s",
        "      timeout: 10s",
        "      retries: 3",
        "      start_period: 10s",
    ]
    out += _hardening(NGINX_CAPS, [f"      - {q(p)}" for p in NGINX_TMPFS])
    return out


def _hardening(caps: Sequence[str], tmpfs: Sequence[str]) -> list[str]:
    """A read-only root filesystem with tmpfs where the service writes, no capabilities but
    `caps`, and no privilege gain through setuid binaries."""
    which = "only these Linux capabilities" if caps else "no Linux capabilities"
    out = [
        f"    # Hardened: a read-only root filesystem (tmpfs where it writes), {which},",
        "    # no gaining privileges through setuid binaries.",
        "    read_only: true",
        "    tmpfs:",
        *tmpfs,
        "    cap_drop: [ALL]",
    ]
    if caps:
        out.append(f"    cap_add: [{', '.join(caps)}]")
    out.append('    security_opt: ["no-new-privileges:true"]')
    return out


def sidecar_tmpfs(scratch: Sequence[str], uid: int = SIDECAR_UID) -> list[str]:
    """tmpfs mounts (Docker's `PATH:OPTIONS` syntax) of the sidecar: /tmp, certbot's scratch."""
    owned = f"uid={uid},gid={uid},mode=0700"
    return ["/tmp:mode=1777", *(f"{path}:{owned}" for path in scratch)]


def _tlsbridge(spec: ComposeSpec) -> list[str]:
    assert spec.inside is not None
    p = spec.inside
    config = f"{SIDECAR_CONFIG_DIR}/{spec.config_name}"
    out = ["", "  tlsbridge:"]
    if spec.sidecar_image:
        out.append(f"    image: {q(spec.sidecar_image)}")
    else:
        out += [
            "    build:",
            f"      context: {q(spec.build_context)}",
            "      dockerfile: deploy/Dockerfile",
        ]
    out += [
        "    restart: unless-stopped",
        '    entrypoint: ["tlsbridge"]',
        "    # Listens on the stack's network (for the healthcheck and a Prometheus scraper there);",
        "    # no port is published. Add `ports: [\"127.0.0.1:8400:8400\"]` to see the page locally.",
        f'    command: ["-c", {q(config)}, "run", "--listen", {q(SIDECAR_LISTEN)}]',
    ]
    if not spec.socket_proxy:
        out += [
            "    # The image runs as an unprivileged user and the socket is root:docker 0660: give the",
            "    # user the socket's group. DOCKER_GID=$(stat -c %g /var/run/docker.sock) docker compose up -d",
            "    group_add:",
            '      - "${DOCKER_GID:?set DOCKER_GID to the group id of /var/run/docker.sock}"',
        ]
    if spec.socket_proxy:
        out += [
            "    environment:",
            "      # The Docker API through the socket proxy (a docker.host in the config wins).",
            '      DOCKER_HOST: "tcp://socket-proxy:2375"',
            "    depends_on:",
            "      - socket-proxy",
            "    networks:",
            "      - default",
            "      - docker-api",
        ]
    out += [
        "    volumes:",
        "      # The config file's folder; the paths in the config are paths in this container.",
    ]
    out += _bind(spec.config_dir, SIDECAR_CONFIG_DIR, create=False)
    out += _volume("certs", p.publish_dir, read_only=False)
    out += _volume("acme-webroot", p.webroot, read_only=False)
    out += _volume("letsencrypt", p.certbot_config_dir, read_only=False)
    out += _volume("state", p.state_dir, read_only=False)
    if p.discovery_dir is not None:
        out += _volume("discovered", p.discovery_dir, read_only=False)
    if not spec.socket_proxy:
        out += [
            "      # The Docker socket, to find, test and reload the nginx containers. Read-only",
            "      # only stops the socket file from being replaced: whoever can talk to it can",
            "      # start a privileged container, i.e. it grants root-equivalent access to the",
            "      # host. `tlsbridge compose --socket-proxy` puts a filtering proxy in between.",
        ]
        out += _bind(DOCKER_SOCKET, DOCKER_SOCKET, create=False)
    out += _hardening((), [f"      - {q(t)}" for t in sidecar_tmpfs(p.scratch)])
    return out


def is_pinned(image: str) -> bool:
    """Whether an image reference names one reviewed thing: a digest, or a tag but `latest`."""
    if "@sha256:" in image:
        return True
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest"


def _socket_proxy(image: str) -> list[str]:
    pinned = is_pinned(image)
    return [
        "",
        "  # Lets tlsbridge list containers, exec `nginx -t` and send the reload signal, and",
        "  # nothing outside the container and exec endpoints. It narrows the API but is not a",
        "  # security boundary: POST on containers still allows creating one, so treat access to",
        "  # it like access to the socket. Some hosts (SELinux) need `privileged: true` here.",
        *(["  # Pinned with --socket-proxy-image."] if pinned else [
            "  # NOT PINNED: pin a version you have reviewed, by digest, with",
            "  # `tlsbridge compose --socket-proxy-image IMAGE:TAG@sha256:...`.",
        ]),
        "  socket-proxy:",
        f"    image: {q(image)}",
        "    restart: unless-stopped",
        "    environment:",
        '      CONTAINERS: "1"',
        '      EXEC: "1"',
        '      POST: "1"',
        "    volumes:",
        "      # The Docker socket (root-equivalent access to the host); only this proxy sees it.",
        *_bind(DOCKER_SOCKET, DOCKER_SOCKET, create=False),
        "    networks:",
        "      - docker-api",
        '    security_opt: ["no-new-privileges:true"]',
    ]
