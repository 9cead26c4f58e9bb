"""Read-only view of certbot's tree: `<config_dir>/live/<site>/` -> ObservedCert and file bytes.

Never runs certbot: reading and parsing a lineage costs well under a millisecond.
"""

from __future__ import annotations

import re
from pathlib import Path

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.adapters.publish import CertFiles
from tlsbridge.model import ObservedCert


class CertStore:
    def __init__(self, config_dir: Path, memo: CertMemo) -> None:
        self.config_dir = config_dir
        self.memo = memo

    def live_dir(self, site: str) -> Path:
        return self.config_dir / "live" / site

    def current_cert(self, site: str) -> ObservedCert | None:
        """The lineage's current certificate, or None when certbot holds none for the site.

        Parsed once per file: an unchanged lineage costs one stat() (adapters/certmemo.py).
        """
        return self.memo.read_cert(self.live_dir(site) / "cert.pem")

    def server(self, site: str) -> str | None:
        """The ACME directory certbot last obtained the site's certificate from (its lineage's
        renewal/<site>.conf), None when certbot holds no lineage for it."""
        return renewal_params(self.config_dir, site).get("server")

    def files(self, site: str) -> CertFiles | None:
        live = self.live_dir(site)
        try:
            return CertFiles(
                fullchain=(live / "fullchain.pem").read_bytes(),
                privkey=(live / "privkey.pem").read_bytes(),
                chain=(live / "chain.pem").read_bytes(),
                cert=(live / "cert.pem").read_bytes(),
            )
        except (FileNotFoundError, NotADirectoryError):
            return None


def renewal_params(config_dir: Path, site: str) -> dict[str, str]:
    """`server` and `account` of certbot's renewal/<site>.conf (certbot rewrites both on every
    successful issuance), the ones found; {} without the file."""
    try:
        text = (config_dir / "renewal" / f"{site}.conf").read_text(errors="replace")
    except OSError:
        return {}
    return dict(re.findall(r"(?m)^\s*(server|account)\s*=\s*(\S+)\s*$", text))
