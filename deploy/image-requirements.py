"""Print the sidecar image's requirements: tlsbridge's dependencies plus the named certbot DNS plugins.

Usage: python3 image-requirements.py PYPROJECT [PLUGINS]
PLUGINS: space- or comma-separated plugin names (rfc2136 cloudflare ...). A name with a tlsbridge
install extra uses its pinned requirement; certbot's other own plugins are pinned to certbot's
major as well; any other name becomes certbot-dns-NAME (third-party plugins version apart). Used by deploy/Dockerfile (build argument DNS_PLUGINS) and
scripts/build-sidecar-image.sh (--dns-plugins), so both install the same set.
"""

import re
import sys
import tomllib

# The DNS plugins released with certbot itself (same version numbers as certbot).
CERTBOT_OWN = {"cloudflare", "digitalocean", "dnsimple", "dnsmadeeasy", "gehirn", "google", "linode",
               "luadns", "nsone", "ovh", "rfc2136", "route53", "sakuracloud"}

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project.get("optional-dependencies", {})
reqs = list(project["dependencies"]) + extras.get("notify", [])  # notifications work in the image
for name in (sys.argv[2] if len(sys.argv) > 2 else "").replace(",", " ").split():
    name = name.removeprefix("certbot-dns-").removeprefix("dns-")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or name == "test":
        sys.exit(f"DNS_PLUGINS: {name!r} is not a certbot DNS plugin name (e.g. rfc2136, cloudflare)")
    pin = ">=5,<6" if name in CERTBOT_OWN else ""
    reqs += extras.get(name) or [f"certbot-dns-{name}{pin}"]
print("\n".join(reqs))
