"""nginx text for discovered sites (app containers with tlsbridge.* labels): pure, no I/O.

A discovered site's server block is exactly what render.nginx renders for a YAML site with an
`upstream` (HTTPS with the Mozilla snippet, the HTTP-01 location, the redirect, `proxy_pass`
through a variable resolved by Docker's DNS per request, so an app recreated with a new address
keeps working); the upstream is the app container's name and port. The generated nginx includes
the folder tlsbridge writes them into with one http-level snippet.
"""

from __future__ import annotations

from tlsbridge.config import Site
from tlsbridge.render.nginx import MARKER, NginxOptions, render_site

INCLUDE_FILE = "tlsbridge-discovered.conf"  # in conf.d, next to the YAML sites' snippets
NGINX_DIR = "/etc/tlsbridge/discovered"  # where the generated nginx sees discovery.dir


def render_block(site: Site, source: str, http2: str = "listen") -> str:
    """The server blocks of one discovered site (ports 80 and 443)."""
    body = render_site(site, NginxOptions(http2=http2, source=source))
    head = (f"{MARKER} (discovery) from {source}: site {site.name} of container {site.discovered}.\n"
            "# tlsbridge writes and removes this file as the container comes and goes.\n")
    return head + body.split("\n", 2)[2]


def render_include(source: str) -> str:
    """The conf.d snippet that makes nginx read the discovered sites' blocks."""
    return (f"{MARKER} from {source}: the sites of app containers labelled tlsbridge.domains.\n"
            "# Edits are overwritten when it runs again; put your own files next to these.\n"
            "#\n"
            f"# tlsbridge (`run`, `renew`) writes one file per discovered site into {NGINX_DIR},\n"
            "# runs `nginx -t` and reloads; a folder without files is fine for nginx.\n"
            f"include {NGINX_DIR}/*.conf;\n")
