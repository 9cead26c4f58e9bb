"""`tlsbridge compose`: write a compose file and the nginx snippets it mounts.

Everything is rendered (and every problem reported, exit 2) before the first byte is written.
Files are replaced atomically (temp file, fsync, rename) and left alone when unchanged, so
running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tlsbridge.adapters import files
from tlsbridge.errors import TlsbridgeError, UsageError

if TYPE_CHECKING:
    from tlsbridge.cli import Context
    from tlsbridge.config import Config
    from tlsbridge.render.compose import ComposeSpec
    from tlsbridge.render.stack import StackFile

logger = logging.getLogger(__name__)

_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write the compose file here (atomically); default: stdout")
    parser.add_argument("--nginx-dir", type=Path, metavar="DIR",
                        help="where the nginx snippets go (default: nginx/ next to FILE, "
                             "or ./nginx without -o)")
    parser.add_argument("--sidecar", action="store_true",
                        help="add a tlsbridge service (`tlsbridge run`) sharing named volumes "
                             "with nginx, instead of mounting host folders")
    parser.add_argument("--socket-proxy", action="store_true",
                        help="with the sidecar: reach Docker through a filtering socket proxy "
                             "instead of mounting the socket (implies --sidecar)")
    parser.add_argument("--image", default="nginx:stable",
                        help="nginx image (default: nginx:stable)")
    parser.add_argument("--http2", choices=("listen", "on", "off"), default="listen",
                        help="listen: `listen 443 ssl http2` (any nginx; deprecated warning "
                             "from 1.25.1); on: `http2 on` (nginx >= 1.25.1); off. "
                             "Default: listen")
    parser.add_argument("--build-context", type=Path, metavar="DIR",
                        help="sidecar: a tlsbridge source folder with deploy/Dockerfile to "
                             "build the image from (default: the compose file's folder)")
    parser.add_argument("--sidecar-image", metavar="IMAGE",
                        help="sidecar: run this tlsbridge image instead of building one (default when "
                             "run in the sidecar image: that image, $TLSBRIDGE_IMAGE)")
    parser.add_argument("--socket-proxy-image", metavar="IMAGE",
                        help="--socket-proxy: the proxy's image, best pinned by digest "
                             "(NAME:TAG@sha256:...); default: tecnativa/docker-socket-proxy:latest, "
                             "marked as not pinned in the file")
    parser.add_argument("--post-quantum", action="store_true",
                        help="also offer the X25519MLKEM768 key exchange (Mozilla's first choice); "
                             "the nginx image needs OpenSSL >= 3.5 (Debian 12's 3.0 refuses it)")
    parser.add_argument("--swarm", action="store_true",
                        help="write a stack file for `docker stack deploy` instead: nginx gets "
                             "certificates as Swarm secrets, tlsbridge runs as a service on a "
                             "manager (implies the sidecar; see docs/swarm.md)")
    parser.add_argument("--publish-mode", choices=("ingress", "host"), default="ingress",
                        help="--swarm: publish 80/443 through the routing mesh (replicated nginx, "
                             "start-first updates) or on each node (global nginx, stop-first). "
                             "Default: ingress")
    parser.add_argument("--create-secrets", action="store_true",
                        help="--swarm: also create, in the engine's Swarm, placeholder "
                             "certificate secrets for sites that have none yet (before the "
                             "first deploy)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tlsbridge.render import compose, nginx

    cfg = ctx.config()
    to_stdout = args.output is None or str(args.output) == "-"
    out_file = None if to_stdout else Path(os.path.abspath(args.output))
    base = out_file.parent if out_file else Path(os.getcwd())
    if out_file is not None and not base.is_dir():
        raise UsageError(f"-o {args.output}: folder {base} does not exist")
    if out_file is not None and out_file.is_dir():
        raise UsageError(f"-o {args.output}: is a folder, give a file name")
    nginx_dir = Path(os.path.abspath(args.nginx_dir)) if args.nginx_dir else base / "nginx"
    if nginx_dir.exists() and not nginx_dir.is_dir():
        raise UsageError(f"--nginx-dir {args.nginx_dir}: not a folder")
    if args.sidecar_image is None and args.build_context is None:
        # Run in the sidecar image (which names itself here), the stack runs that image.
        args.sidecar_image = os.environ.get("TLSBRIDGE_IMAGE") or None
    if out_file is not None and not os.access(base, os.W_OK):
        raise UsageError(f"-o {args.output}: folder {base} is not writable by uid {os.getuid()}"
                         + ("; run the image with --user \"$(id -u):$(id -g)\" (the folder's owner)"
                            if os.environ.get("TLSBRIDGE_IMAGE") else ""))
    for opt, image in (("--image", args.image), ("--sidecar-image", args.sidecar_image),
                       ("--socket-proxy-image", args.socket_proxy_image)):
        if image is not None and not _IMAGE.fullmatch(image):
            raise UsageError(f"{opt} {image!r}: not an image reference like nginx:stable")
    if args.swarm:

        return _run_swarm(args, cfg, out_file, base, nginx_dir)
    if args.create_secrets or args.publish_mode != "ingress":
        raise UsageError("--create-secrets and --publish-mode go with --swarm")
    sidecar = args.sidecar or args.socket_proxy
    _warn(cfg)

    source = Path(cfg.source).name
    snippets = nginx.render_all(cfg.sites.values(), nginx.NginxOptions(
        args.http2, source, post_quantum=args.post_quantum))
    discovery = None
    if cfg.discovery.enabled:
        from tlsbridge.render.discovered import INCLUDE_FILE, render_include

        snippets[INCLUDE_FILE] = render_include(source)
        discovery = ("", "") if sidecar else (shown(cfg.publish.dir, base), shown(cfg.discovery.dir, base))
        if not sidecar:
            cfg.discovery.dir.mkdir(parents=True, exist_ok=True)  # so nginx mounts our folder
    spec = compose.ComposeSpec(
        source=source,
        sites=[compose.SiteMount(name, shown(cfg.publish.dir / name, base)) for name in cfg.sites],
        nginx_dir=shown(nginx_dir, base),
        webroot=shown(cfg.challenge.webroot, base),
        image=args.image,
        override=compose.override_name(out_file.name if out_file else "compose.yaml"),
        discovery=discovery,
    )
    if sidecar:
        spec = _sidecar_spec(cfg, spec, base, args)
    write_outputs(nginx_dir, snippets, out_file, compose.render(spec))
    if out_file is not None:
        write_override_once(base / spec.override, compose.render_override(spec))
    return 0


def write_override_once(path: Path, text: str) -> None:
    """Write the user's override starter unless a file (or link) is there: never overwritten."""
    if os.path.lexists(path):
        return
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        return
    except OSError as exc:
        raise TlsbridgeError(f"cannot write {path}: {exc}") from exc
    logger.info("wrote %s: your app and extra ports go there (never overwritten)", path)


def write_outputs(nginx_dir: Path, snippets: dict[str, str], out_file: Path | None, text: str) -> None:
    """Write the snippets (removing stale ones of ours) and the compose/stack file, or print it."""
    nginx_dir.mkdir(parents=True, exist_ok=True)
    changed = [name for name, body in sorted(snippets.items()) if write_atomic(nginx_dir / name, body)]
    removed = remove_stale(nginx_dir, set(snippets))
    logger.info("nginx snippets in %s: %d written, %d unchanged, %d stale removed", nginx_dir,
                len(changed), len(snippets) - len(changed), len(removed))
    if out_file is None:
        sys.stdout.write(text)
    elif write_atomic(out_file, text):
        logger.info("wrote %s", out_file)
    else:
        logger.info("%s is up to date", out_file)


def shown(path: Path, base: Path) -> str:
    """A host path as the compose file shows it: ./relative inside `base`, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        rel = absolute.relative_to(base)
    except ValueError:
        return str(absolute)
    return "." if str(rel) == "." else f"./{rel}"


def _sidecar_spec(cfg: Config, spec: ComposeSpec, base: Path,
                  args: argparse.Namespace) -> ComposeSpec:
    from dataclasses import replace

    from tlsbridge.render.compose import SIDECAR_CONFIG_DIR, SOCKET_PROXY_IMAGE, SidecarPaths, is_pinned

    config_file = Path(os.path.abspath(cfg.source))
    host_dir = config_file.parent
    inside = Path(SIDECAR_CONFIG_DIR)
    data = {
        "publish.dir": cfg.publish.dir,
        "challenge.webroot": cfg.challenge.webroot,
        "certbot.config_dir": cfg.certbot.config_dir,
        "state.dir": cfg.state.dir,
        **({"discovery.dir": cfg.discovery.dir} if cfg.discovery.enabled else {}),
    }
    scratch = {"certbot.work_dir": cfg.certbot.work_dir, "certbot.logs_dir": cfg.certbot.logs_dir}
    for key, path in {**data, **scratch}.items():
        if _under(path, host_dir) or _under(path, inside):
            raise UsageError(
                f"{cfg.source}: {key}: with --sidecar the paths in the config are paths inside "
                f"the tlsbridge container, where the config folder is mounted read-only at "
                f"{SIDECAR_CONFIG_DIR}; give an absolute path outside it, e.g. /var/lib/tlsbridge/...")
    seen: dict[Path, str] = {}
    for key, path in data.items():
        if path in seen:
            raise UsageError(f"{cfg.source}: {key}: same folder as {seen[path]}; with --sidecar "
                             "each becomes its own volume")
        seen[path] = key
    for key, extra in (("acme.ca_bundle", cfg.acme.ca_bundle),
                       ("challenge.dns_credentials", cfg.challenge.dns_credentials)):
        if extra is not None and not _under(extra, host_dir):
            logger.warning("%s: %s is outside the config's folder, which is all the sidecar "
                           "sees of the host: put it next to the config and refer to it "
                           "relatively", cfg.source, key)
    if args.socket_proxy_image and not args.socket_proxy:
        raise UsageError("--socket-proxy-image goes with --socket-proxy")
    if args.socket_proxy and not is_pinned(args.socket_proxy_image or SOCKET_PROXY_IMAGE):
        logger.warning("the socket proxy image %s is not pinned: give --socket-proxy-image "
                       "NAME:TAG@sha256:... of a version you have reviewed",
                       args.socket_proxy_image or SOCKET_PROXY_IMAGE)
    context = args.build_context if args.build_context is not None else base
    return replace(
        spec,
        sidecar=True,
        socket_proxy=bool(args.socket_proxy),
        config_dir=shown(host_dir, base),
        config_name=config_file.name,
        build_context=os.path.relpath(os.path.abspath(context), base),
        sidecar_image=args.sidecar_image,
        socket_proxy_image=args.socket_proxy_image or SOCKET_PROXY_IMAGE,
        inside=SidecarPaths(str(cfg.publish.dir), str(cfg.challenge.webroot),
                            str(cfg.certbot.config_dir), str(cfg.state.dir),
                            tuple(str(p) for p in scratch.values()),
                            str(cfg.discovery.dir) if cfg.discovery.enabled else None),
    )


def _under(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder)


def _warn(cfg: Config) -> None:
    for site in cfg.sites.values():
        for i, target in enumerate(site.reload):
            if target.container:
                logger.warning("%s: sites.%s.reload[%d]: compose names the generated nginx "
                               "container <project>-nginx-1, not %s; its tlsbridge.site label "
                               "already makes it a reload target, so this entry can go",
                               cfg.source, site.name, i, target.container)
    if cfg.challenge.method == "standalone" and cfg.sites:
        logger.warning("%s: challenge.method is standalone, but the generated nginx takes port "
                       "80; use method webroot (nginx serves challenge.webroot) for renewals "
                       "to work while nginx runs", cfg.source)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Replace `path` with `text` (adapters.files.write_atomic).

    Returns False, touching nothing, when the file already holds exactly this text.
    Raises TlsbridgeError (exit 1) when the file cannot be written.
    """
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TlsbridgeError(f"cannot read {path}: {exc}") from exc
    try:
        files.write_atomic(path, data, mode)
    except OSError as exc:
        raise TlsbridgeError(f"cannot write {path}: {exc}") from exc
    return True


def remove_stale(folder: Path, keep: set[str]) -> list[str]:
    """Remove generated site snippets of sites no longer in the config (only files we wrote)."""
    from tlsbridge.render.nginx import SITE_PREFIX, is_generated

    removed = []
    for path in sorted(folder.glob(f"{SITE_PREFIX}*.conf")):
        if path.name in keep or not path.is_file():
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                head = fh.read(200)
            if is_generated(head):
                path.unlink()
                removed.append(path.name)
        except OSError as exc:
            raise TlsbridgeError(f"cannot remove stale snippet {path}: {exc}") from exc
    return removed


# --swarm ------------------------------------------------------------------------------------


def _run_swarm(args: argparse.Namespace, cfg: Config, out_file: Path | None, base: Path,
               nginx_dir: Path) -> int:
    """`--swarm`: a stack file for `docker stack deploy` and its nginx snippets; with
    `--create-secrets`, the certificate secrets the stack names where they are missing."""
    from tlsbridge.render import compose, nginx, stack

    if args.socket_proxy:
        raise UsageError("--socket-proxy is not available with --swarm (the tlsbridge service "
                         "mounts the socket of the manager it runs on)")
    if args.build_context is not None:
        raise UsageError("--build-context: docker stack deploy does not build images; give "
                         "--sidecar-image IMAGE (pushed where your managers can pull it)")
    if cfg.discovery.enabled:
        raise UsageError(f"{cfg.source}: discovery.enabled: discovery works with compose, not "
                         "yet with --swarm (label Swarm services tlsbridge.site instead)")
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
    opts = nginx.NginxOptions(args.http2, source, secrets=True, post_quantum=args.post_quantum,
                              acme_proxy=stack.acme_proxy_url(http_port) if http_port else "")
    snippets = nginx.render_all(cfg.sites.values(), opts)
    spec = stack.StackSpec(
        source=source,
        sites=list(cfg.sites),
        snippets=[stack.StackFile(_snippet_key(name), shown(nginx_dir / name, base),
                                  f"{nginx.CONF_DIR}/{name}", body.encode())
                  for name, body in sorted(snippets.items())],
        tlsbridge_files=_tlsbridge_files(cfg, base),
        publish_dir=inside.publish_dir,
        certbot_config_dir=inside.certbot_config_dir,
        state_dir=inside.state_dir,
        http_port=http_port,
        scratch=inside.scratch,
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
    from tlsbridge.render.compose import SIDECAR_CONFIG_DIR
    from tlsbridge.render.stack import StackFile

    config_file = Path(os.path.abspath(cfg.source))
    folder = config_file.parent
    files = [StackFile("config", shown(config_file, base),
                       f"{SIDECAR_CONFIG_DIR}/{config_file.name}", _read_input(config_file))]
    for key, path, secret in (("ca-bundle", cfg.acme.ca_bundle, False),
                              ("dns-credentials", cfg.challenge.dns_credentials, True)):
        if path is None:
            continue
        absolute = Path(os.path.abspath(path))
        target = (f"{SIDECAR_CONFIG_DIR}/{absolute.relative_to(folder)}"
                  if absolute.is_relative_to(folder) else str(absolute))
        files.append(StackFile(key, shown(absolute, base), target, _read_input(absolute),
                               secret=secret))
    return files


def _snippet_key(snippet: str) -> str:
    """tlsbridge-site-shop.conf -> nginx-site-shop: the snippet's key in the stack file."""
    return "nginx-" + snippet.rsplit(".", 1)[0].removeprefix("tlsbridge-")


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _create_secrets(cfg: Config) -> None:
    from tlsbridge.adapters.docker import DockerAdapter
    from tlsbridge.clock import SystemClock
    from tlsbridge.delivery.swarm_rollout import create_placeholder_pairs

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
