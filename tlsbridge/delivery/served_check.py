"""What `doctor` looks at beyond the config: the published folder and what each target serves.

- The published folder of each site, read through one generation (`current` resolved once, so
  a publication swapping it meanwhile never mixes two): missing names, an emptied or unreadable
  folder (nginx -t then fails on the next reload or start) are errors.
- Every running target's port 443, one fresh TLS connection with the site's SNI: the served
  leaf must be the published one (SHA-256 of the DER), else served != published.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tlsbridge.config import Site
from tlsbridge.delivery.verify import describe, fingerprint
from tlsbridge.names import HTTPS_PORT
from tlsbridge.targets import ContainerInfo, probe_address, sni_for

NAMES = ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem")
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Published:
    fingerprint: str | None  # sha256 of the published leaf; None when there is none to compare
    problem: str | None = None  # an error: emptied, unreadable, incomplete
    never: bool = False  # nothing was ever published (no folder): bootstrapped by the next renew


def read_published(publish_dir: Path, site: str) -> Published:
    """The published leaf of `site`, read through one generation, or what is wrong with it."""
    from cryptography import x509

    folder = publish_dir / site
    try:
        if not folder.exists():
            return Published(None, never=True)
        entries = os.listdir(folder)
        gen = Path(os.path.realpath(folder / "current")) if "current" in entries else folder
        missing = [n for n in NAMES if n not in entries or not (gen / n).is_file()]
        if not entries:
            return Published(None, f"the published folder {folder} is empty")
        if missing:
            return Published(None, f"the published folder {folder} lacks {', '.join(missing)}")
        pem = (gen / "cert.pem").read_bytes()
        (gen / "privkey.pem").open("rb").close()  # readable (by us)
    except PermissionError as exc:
        return Published(None, f"the published folder {folder} cannot be read ({exc.strerror}: "
                               f"{exc.filename})")
    except OSError as exc:
        return Published(None, f"the published folder {folder} cannot be read ({exc})")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return Published(None, f"{gen / 'cert.pem'} is not a PEM certificate")
    from cryptography.hazmat.primitives.serialization import Encoding

    return Published(fingerprint(cert.public_bytes(Encoding.DER)))


def served_mismatches(site: Site, want: str, targets: Sequence[ContainerInfo],
                      own_networks: frozenset[str] | None) -> list[str]:
    """One fresh connection to each running target: what it serves when it is not `want`."""
    from tlsbridge.adapters.tlsprobe import served_leaf

    out = []
    sni = sni_for(site)
    for c in targets:
        if not c.running:
            continue
        addr = probe_address(c, own_networks)
        if site.verify is not None:
            addr_port = site.verify
        elif addr is None:
            continue  # not reachable from here (doctor says nothing it cannot know)
        else:
            addr_port = (addr, HTTPS_PORT)
        where = f"{addr_port[0]}:{addr_port[1]}"
        try:
            der = served_leaf(addr_port[0], addr_port[1], sni, timeout=PROBE_TIMEOUT)
        except (OSError, ssl.SSLError) as exc:
            out.append(f"container {c.name} ({where}) did not complete a TLS handshake with SNI {sni} "
                       f"({type(exc).__name__}: {exc})")
            continue
        if fingerprint(der) != want:
            out.append(f"container {c.name} ({where}) serves {describe(der)} instead of the "
                       f"published certificate (SNI {sni})")
        if site.verify is not None:
            break  # one address for the whole site
    return out
