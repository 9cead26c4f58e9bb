"""Publish certificate files atomically into `<publish.dir>/<site>/`.

Layout (every link relative, none leaves the site's folder, so it resolves inside a container
that mounts the folder anywhere):

    <site>/.gen-<ns>/{fullchain,privkey,chain,cert}.pem   real bytes, one folder per generation
    <site>/current -> .gen-<ns>                           swapped with one rename(2)
    <site>/fullchain.pem -> current/fullchain.pem         (and privkey, chain, cert)

A generation is written under a `.tmp` name, fsynced, renamed, then `current` is replaced by a
rename: at every instant the four names resolve to one complete, matching generation, even if the
process is killed half-way. Leftover `.tmp` folders and old generations are pruned.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tlsbridge.errors import PublishError

logger = logging.getLogger(__name__)

FILES = ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem")
_GEN_PREFIX = ".gen-"


@dataclass(frozen=True)
class CertFiles:
    fullchain: bytes
    privkey: bytes
    chain: bytes
    cert: bytes

    def by_name(self) -> dict[str, bytes]:
        return {"fullchain.pem": self.fullchain, "privkey.pem": self.privkey,
                "chain.pem": self.chain, "cert.pem": self.cert}


@dataclass(frozen=True)
class Ownership:
    owner: str | None = None
    group: str | None = None
    key_mode: int = 0o600
    cert_mode: int = 0o644
    keep: int = 2


class Publisher:
    def __init__(self, root: Path, ownership: Ownership | None = None) -> None:
        self.root = root
        self.own = ownership or Ownership()

    def site_dir(self, site: str) -> Path:
        return self.root / site

    def cert_path(self, site: str) -> str:
        """The published cert.pem, as the string the certificate memo knows it by (no Path
        joins: this is asked for every site on every pass)."""
        return f"{self.root}/{site}/cert.pem"

    def read(self, site: str, name: str = "cert.pem") -> bytes | None:
        """The bytes currently published under a name, or None."""
        try:
            return (self.site_dir(site) / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PublishError(f"site={site}: cannot read published {name}: {exc}") from exc

    def is_current(self, site: str, files: CertFiles) -> bool:
        return all(self.read(site, name) == data for name, data in files.by_name().items())

    def publish(self, site: str, files: CertFiles) -> bool:
        """Make `files` the site's published certificate. Returns False if it already was.

        Raises PublishError; what was published before stays in place.
        """
        from tlsbridge.certinfo import key_matches_cert

        try:
            if not key_matches_cert(files.privkey, files.cert):
                raise PublishError(f"site={site}: refusing to publish a key that does not match its certificate")
        except ValueError as exc:
            raise PublishError(f"site={site}: refusing to publish unreadable PEM data: {exc}") from exc
        if self.is_current(site, files):
            return False
        uid, gid = self._ids()
        sdir = self.site_dir(site)
        try:
            sdir.mkdir(parents=True, exist_ok=True)
            os.chmod(sdir, 0o750 if self.own.group else 0o755)
            if uid != -1 or gid != -1:
                os.chown(sdir, uid, gid)
            name = f"{_GEN_PREFIX}{time.time_ns()}"
            tmp = sdir / f"{name}.tmp"
            tmp.mkdir(mode=0o755)
            for fname, data in files.by_name().items():
                mode = self.own.key_mode if fname == "privkey.pem" else self.own.cert_mode
                _write(tmp / fname, data, mode, uid, gid)
            os.chmod(tmp, 0o750 if self.own.group else 0o755)
            if uid != -1 or gid != -1:
                os.chown(tmp, uid, gid)
            _fsync_dir(tmp)
            os.rename(tmp, sdir / name)
            _replace_symlink(sdir / "current", name)
            for fname in FILES:
                link = sdir / fname
                target = f"current/{fname}"
                if not (link.is_symlink() and os.readlink(link) == target):
                    _replace_symlink(link, target)
            _fsync_dir(sdir)
        except OSError as exc:
            raise PublishError(f"site={site}: publishing into {sdir} failed: {exc}") from exc
        self.prune(site)
        return True

    def prune(self, site: str) -> None:
        """Remove unfinished generations and all but the newest `keep` finished ones."""
        sdir = self.site_dir(site)
        try:
            current = os.readlink(sdir / "current")
        except OSError:
            current = None
        gens = sorted(p for p in sdir.iterdir() if p.name.startswith(_GEN_PREFIX))
        finished = [p for p in gens if not p.name.endswith(".tmp")]
        keep = {p.name for p in finished[-self.own.keep:]}
        if current:
            keep.add(current)
        for p in gens:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def _ids(self) -> tuple[int, int]:
        uid = gid = -1
        try:
            if self.own.owner:
                uid = int(self.own.owner) if self.own.owner.isdigit() else pwd.getpwnam(self.own.owner).pw_uid
            if self.own.group:
                gid = int(self.own.group) if self.own.group.isdigit() else grp.getgrnam(self.own.group).gr_gid
        except KeyError as exc:
            raise PublishError(f"publish.owner/group: unknown user or group {exc}") from None
        return uid, gid


def _write(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.rename(tmp, link)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
