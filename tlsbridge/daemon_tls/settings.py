"""Settings of `daemon-tls`: the flags over the config's `daemon_tls:` section, validated.

Shared by the `daemon-tls` command and the long-running `run` (which has no flags). A list flag
replaces the config's list. Errors name the flag or the config key (exit code 2).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlsbridge import names
from tlsbridge.config import Config
from tlsbridge.daemon_tls import pki
from tlsbridge.errors import ConfigError, TlsbridgeError, UsageError
from tlsbridge.render.daemon_json import DEFAULT_SOCKET, DROPIN_NAME, unsafe_exec_path


@dataclass(frozen=True)
class DaemonTlsSettings:
    """What `ensure_daemon_tls` works from; build it with `resolve_settings`."""

    out: Path  # absolute
    names: pki.Names  # the server certificate's subjectAltNames (empty with a site certificate)
    connect_host: str  # what clients put in DOCKER_HOST
    listen_host: str = "0.0.0.0"
    listen_port: int = 2376
    clients: tuple[str, ...] = ()
    merge: Path | None = None
    server_cert_site: str | None = None
    site_fullchain: Path | None = None  # <publish.dir>/<site>/fullchain.pem
    site_privkey: Path | None = None
    # With a public server certificate, clients verify the engine against this bundle (the
    # system trust store): their ca.pem is the only trust anchor the docker CLI then uses.
    trust_bundle: Path | None = None
    unix_socket: str = DEFAULT_SOCKET
    dockerd: str = "/usr/bin/dockerd"
    ca_dir: Path | None = None  # where the CA's key lives when not in `out` (absolute)


@dataclass(frozen=True)
class Flags:
    """The command-line values; None (or an empty default) means "not given"."""

    out: Path | None = None
    hostname: list[str] | None = None
    ip: list[str] | None = None
    listen: str | None = None
    client: list[str] | None = None
    merge: Path | None = None
    server_cert_site: str | None = None
    unix_socket: str | None = None
    dockerd: str | None = None
    ca_dir: Path | None = None


def resolve_settings(cfg: Config | None, args: Flags | None = None) -> DaemonTlsSettings:
    """`args` (the flags) over the config's daemon_tls section, validated.

    `run` calls it with the config alone. Raises UsageError (a flag) or ConfigError (a config
    key), both exit code 2, before anything is written.
    """
    args = args or Flags()
    base = cfg.daemon_tls if cfg is not None else None
    source = cfg.source if cfg is not None else ""

    def fail(where: str, problem: str) -> TlsbridgeError:
        if where.startswith("daemon_tls."):
            return ConfigError(source, where, problem)
        return UsageError(f"daemon-tls {where}: {problem}")

    out: Path | None = args.out if args.out is not None else base.out if base else None
    if out is None:
        raise UsageError("daemon-tls: no output folder: give --out DIR "
                         "(or set daemon_tls.out in the config file)")

    # The config's values were validated when it was loaded (names.py); flags are checked here
    # by the same validators.
    def check(flag: list[str] | None, flag_name: str, key: str,
              validate: Callable[[str], str]) -> list[str]:
        if flag is None:
            return list(getattr(base, key)) if base is not None else []
        try:
            return [validate(v) for v in flag]
        except ValueError as exc:
            raise UsageError(f"daemon-tls {flag_name}: {exc}") from None

    def client(name: str) -> str:
        if not names.is_client_name(name):
            raise ValueError(f"{name!r}: {names.CLIENT_NAME_RULE}")
        return name

    dns = check(args.hostname, "--hostname", "hostnames", names.host_name)
    ips = check(args.ip, "--ip", "ips", names.ip_address)
    clients = list(dict.fromkeys(check(args.client, "--client", "clients", client)))
    listen = args.listen if args.listen is not None else base.listen if base else "0.0.0.0:2376"
    try:
        listen_host, listen_port = names.host_port(listen)
    except ValueError as exc:
        raise fail("--listen" if args.listen is not None else "daemon_tls.listen", str(exc)) from None
    merge: Path | None = args.merge if args.merge is not None else base.merge if base else None
    site: str | None = args.server_cert_site or (base.server_cert_site if base else None)

    socket: str = args.unix_socket or DEFAULT_SOCKET
    if not socket.startswith("/"):
        raise UsageError(f"daemon-tls --unix-socket {socket!r}: must be an absolute path")
    # Where this runs without dockerd (the `run` sidecar's container), keep the drop-in's path.
    dockerd: str = (args.dockerd or shutil.which("dockerd") or _dropin_dockerd(out)
                    or "/usr/bin/dockerd")
    problem = unsafe_exec_path(dockerd)
    if problem:
        raise UsageError(f"daemon-tls --dockerd {dockerd!r}: {problem}")

    site_chain = site_key = trust_bundle = None
    san = pki.Names.of(dns, ips)
    if site is not None:
        where = "--server-cert-site" if args.server_cert_site else "daemon_tls.server_cert_site"
        if cfg is None:
            raise UsageError(f"daemon-tls --server-cert-site {site}: needs a config file that "
                             "defines the site (give -c CONFIG)")
        if site not in cfg.sites:
            raise fail(where, f"no site named {site!r} in sites")
        site_dir = (cfg.publish.dir / site).absolute()
        site_chain, site_key = site_dir / "fullchain.pem", site_dir / "privkey.pem"
        trust_bundle = _trust_bundle()
        connect = (dns or ips or [cfg.sites[site].domains[0]])[0]
        san = pki.Names()
    else:
        if not san and _specific_ip(listen_host):
            san = pki.Names.of([], [listen_host])
        if not san:
            raise UsageError("daemon-tls: give --hostname NAME or --ip ADDR: the names clients "
                             "use to reach the engine (they go into its certificate)")
        connect = (san.dns or san.ips)[0]

    return DaemonTlsSettings(
        out=out.absolute(), names=san, connect_host=connect, listen_host=listen_host,
        listen_port=listen_port, clients=tuple(clients),
        merge=merge.absolute() if merge is not None else None, server_cert_site=site,
        site_fullchain=site_chain, site_privkey=site_key, trust_bundle=trust_bundle,
        unix_socket=socket, dockerd=dockerd,
        ca_dir=args.ca_dir.absolute() if args.ca_dir is not None else None)


def _trust_bundle() -> Path | None:
    """The system CA bundle ($SSL_CERT_FILE or OpenSSL's default file)."""
    import ssl

    cafile = ssl.get_default_verify_paths().cafile
    return Path(cafile) if cafile else None


def _specific_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _dropin_dockerd(out: Path) -> str | None:
    """The dockerd path in an earlier run's drop-in, if any."""
    try:
        text = (out / "docker.service.d" / DROPIN_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    starts = re.findall(r"^ExecStart=(/\S+)\s*$", text, re.MULTILINE)
    return starts[-1] if starts else None
