"""Read-only view of certbot's tree: `<config_dir>/live/<site>/` -> ObservedCert and file bytes.

Never runs certbot: reading and parsing a lineage costs well under a millisecond.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.adapters.publish import CertFiles
from tlsbridge.model import ObservedCert


class CertStore:
    def __init__(self, config_dir: Path, memo: CertMemo) -> None:
        self.config_dir = config_dir
        self.memo = memo
        self._live = f"{config_dir}/live"

    def live_dir(self, site: str) -> Path:
        return self.config_dir / "live" / site

    def current_cert(self, site: str) -> ObservedCert | None:
        """The lineage's current certificate, or None when certbot holds none for the site.

        Parsed once per file: an unchanged lineage costs one stat() (adapters/certmemo.py).
        """
        return self.memo.read_cert(f"{self._live}/{site}/cert.pem")  # str(live_dir(site) / "cert.pem")

    def server(self, site: str) -> str | None:
        """The ACME directory certbot last obtained the site's certificate from (its lineage's
        renewal/<site>.conf), None when certbot holds no lineage for it."""
        return renewal_params(self.config_dir, site).get("server")

    def files(self, site: str) -> CertFiles | None:
        """The lineage's four files, all of one version (certbot swaps its live/ links one at a
        time: a read racing a renewal could otherwise mix two versions)."""
        live = self.live_dir(site)
        for _ in range(_RETRIES):
            links = _links(live)
            try:
                data = {name: (live / name).read_bytes() for name in _NAMES}
            except (FileNotFoundError, NotADirectoryError):
                return None
            if _one_version(links) and _links(live) == links:
                break
        return CertFiles(**{name.removesuffix(".pem"): d for name, d in data.items()})


_NAMES = ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem")
_RETRIES = 5


def _links(live: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _NAMES:
        try:
            out[name] = os.readlink(live / name)
        except OSError:
            out[name] = None  # a real file, or missing
    return out


def _one_version(links: dict[str, str | None]) -> bool:
    """certbot's archive/<name>/{cert,chain,fullchain,privkey}<N>.pem: the same N everywhere."""
    versions = set()
    for name, target in links.items():
        if target is None:
            continue
        stem = os.path.basename(target).removesuffix(".pem")
        versions.add(stem.removeprefix(name.removesuffix(".pem")))
    return len(versions) <= 1


def renewal_params(config_dir: Path, site: str) -> dict[str, str]:
    """`server` and `account` of certbot's renewal/<site>.conf (certbot rewrites both on every
    successful issuance), the ones found; {} without the file."""
    try:
        text = (config_dir / "renewal" / f"{site}.conf").read_text(errors="replace")
    except OSError:
        return {}
    return dict(re.findall(r"(?m)^\s*(server|account)\s*=\s*(\S+)\s*$", text))
