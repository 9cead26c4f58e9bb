"""`tlsbridge compose --swarm`: a stack file for `docker stack deploy` and its nginx snippets.

Like the compose file, everything is rendered and checked (exit 2) before anything is written,
and unchanged files are left alone. `--create-secrets` then creates, in the Swarm the Docker
engine belongs to, the certificate secrets the stack file names where they are missing.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tlsbridge.errors import UsageError

if TYPE_CHECKING:
    from tlsbridge.config import Config
    from tlsbridge.render.stack import StackFile

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace, cfg: Config, out_file: Path | None, base: Path,
        nginx_dir: Path) -> int:
    from tlsbridge.commands.compose import _sidecar_spec, shown, write_outputs
    from tlsbridge.render import compose, nginx, stack

    if args.socket_proxy:
        raise UsageError("--socket-proxy is not available with --swarm (the tlsbridge service "
                         "mounts the socket of the manager it runs on)")
    if args.build_context is not None:
        raise UsageError("--build-context: docker stack deploy does not build images; give "
                         "--sidecar-image IMAGE (pushed where your managers can pull it)")
    method = cfg.challenge.method
    if method == "webroot":
        raise UsageError(
            f"{cfg.source}: challenge.method: webroot cannot work on Swarm (no folder is shared "
            "between nodes); use standalone: certbot answers in the tlsbridge service on "
            "challenge.http_port and nginx passes /.well-known/acme-challenge/ to it")
    # The same checks of the paths inside the tlsbridge container as the compose sidecar.
    inside = _sidecar_spec(cfg, compose.ComposeSpec("", [], "", ""), base, args).inside
    assert inside is not None

    source = Path(cfg.source).name
    http_port = cfg.challenge.http_port if method == "standalone" else None
    opts = nginx.NginxOptions(args.http2, source, secrets=True,
                              acme_proxy=stack.acme_proxy_url(http_port) if http_port else "")
    snippets = nginx.render_all(cfg.sites.values(), opts)
    spec = stack.StackSpec(
        source=source,
        sites=list(cfg.sites),
        snippets=[stack.StackFile(_key(name), shown(nginx_dir / name, base),
                                  f"{nginx.CONF_DIR}/{name}", body.encode())
                  for name, body in sorted(snippets.items())],
        tlsbridge_files=_tlsbridge_files(cfg, base),
        publish_dir=inside.publish_dir,
        certbot_config_dir=inside.certbot_config_dir,
        state_dir=inside.state_dir,
        http_port=http_port,
        image=args.image,
        sidecar_image=args.sidecar_image or stack.DEFAULT_SIDECAR_IMAGE,
        publish_mode=args.publish_mode,
    )
    write_outputs(nginx_dir, snippets, out_file, stack.render(spec))
    if args.create_secrets:
        _create_secrets(cfg)
    return 0


def _tlsbridge_files(cfg: Config, base: Path) -> list[StackFile]:
    """The config file and the files it names, as configs/secrets of the tlsbridge service at
    the paths the config gives them inside the container (its folder is /etc/tlsbridge)."""
    from tlsbridge.commands.compose import shown
    from tlsbridge.render.compose import SIDECAR_CONFIG_DIR
    from tlsbridge.render.stack import StackFile

    config_file = Path(os.path.abspath(cfg.source))
    folder = config_file.parent
    files = [StackFile("config", shown(config_file, base),
                       f"{SIDECAR_CONFIG_DIR}/{config_file.name}", _read(config_file))]
    for key, path, secret in (("ca-bundle", cfg.acme.ca_bundle, False),
                              ("dns-credentials", cfg.challenge.dns_credentials, True)):
        if path is None:
            continue
        absolute = Path(os.path.abspath(path))
        target = (f"{SIDECAR_CONFIG_DIR}/{absolute.relative_to(folder)}"
                  if absolute.is_relative_to(folder) else str(absolute))
        files.append(StackFile(key, shown(absolute, base), target, _read(absolute),
                               secret=secret))
    return files


def _key(snippet: str) -> str:
    """tlsbridge-site-shop.conf -> nginx-site-shop: the snippet's key in the stack file."""
    return "nginx-" + snippet.rsplit(".", 1)[0].removeprefix("tlsbridge-")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _create_secrets(cfg: Config) -> None:
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.clock import SystemClock
    from tlsbridge.swarm_ops import create_placeholder_pairs

    docker = DockerAdapter(cfg.docker)
    try:
        made = create_placeholder_pairs(cfg, docker, SystemClock().now())
    finally:
        docker.close()
    for name in made:
        logger.info("site=%s created placeholder secrets for the first deploy; tlsbridge replaces "
                    "them with the issued certificate", name)
    if not made:
        logger.info("every site's secrets exist already; nothing created")
