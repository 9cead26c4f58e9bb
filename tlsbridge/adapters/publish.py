"""Publish certificate files atomically into `<publish.dir>/<site>/`.

Layout (every link relative, none leaves the site's folder, so it resolves inside a container
that mounts the folder anywhere):

    <site>/.gen-<ns>/{fullchain,privkey,chain,cert}.pem   real bytes, one folder per generation
    <site>/current -> .gen-<ns>                           swapped with one rename(2)
    <site>/fullchain.pem -> current/fullchain.pem         (and privkey, chain, cert)

A generation is written under a `.tmp` name, fsynced, renamed, then `current` is replaced by a
rename: at every instant the four names resolve to one complete, matching generation, even if the
process is killed half-way. A failed write removes its `.tmp` folder; leftovers of killed
processes and old generations are pruned.

What a reader may rely on: `current` always names a complete generation; it is never pruned while
it is current, nor within a minute after it was replaced (and `publish.keep` generations stay).
To read a key and certificate that belong together, resolve `current` once and open both files
in that folder (`generation()` and `read_files()` do that); two separate opens of the public
names may straddle a swap.

Safety: tlsbridge never follows a symbolic link under publish.dir that it did not make. The site
folder and everything in it are opened relative to directory descriptors with O_NOFOLLOW, modes
and owners are set on descriptors (fchmod/fchown); a symlink planted at `<publish.dir>/<site>`
(or a publish.dir that is one) fails the site. Publishers exclude each other with flock(2) on the
site folder, held around publish and prune, so a generation another process is writing is never
pruned.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import logging
import os
import pwd
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tlsbridge.adapters.files import write_all
from tlsbridge.errors import PublishError

logger = logging.getLogger(__name__)

FILES = ("fullchain.pem", "privkey.pem", "chain.pem", "cert.pem")
_GEN_PREFIX = ".gen-"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_RETRIES = 5  # a reader whose generation was pruned under it looks again
_MIN_FREE = 64 * 1024  # bytes a publication needs at least (four PEM files and a folder)
PRUNE_GRACE = 60.0  # seconds a replaced generation stays for readers that resolved it just before


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
    def __init__(self, root: Path, ownership: Ownership | None = None, *,
                 grace: float = PRUNE_GRACE) -> None:
        self.root = root
        self.own = ownership or Ownership()
        self.grace = grace

    def site_dir(self, site: str) -> Path:
        return self.root / site

    def cert_path(self, site: str) -> str:
        """The published cert.pem, as the string the certificate memo knows it by (no Path
        joins: this is asked for every site on every pass). One file, so one generation.

        Raises PublishError when the site folder is a symbolic link: a planted link is refused
        when the site is looked at, not only when something is written (one lstat)."""
        folder = f"{self.root}/{site}"
        try:
            link = stat.S_ISLNK(os.lstat(folder).st_mode)
        except OSError:
            link = False  # nothing published yet
        if link:
            raise PublishError(f"site={site}: {folder}: " + _why(Path(folder), OSError(errno.ELOOP, "")))
        return f"{folder}/cert.pem"

    # -- readers: one generation, resolved once ----------------------------------------------------
    def generation(self, site: str) -> Path | None:
        """The folder of the generation `current` names, or None when nothing is published.

        Raises PublishError when publish.dir or the site folder is a symbolic link (never followed).
        """
        with self._open_site(site, create=False) as sfd:
            if sfd is None:
                return None
            name = _current(sfd)
        return None if name is None else self.site_dir(site) / name

    def read_files(self, site: str) -> CertFiles | None:
        """The four published files, all from one generation, or None when nothing is published."""
        with self._open_site(site, create=False) as sfd:
            return None if sfd is None else self._read_generation(site, sfd)

    def read(self, site: str, name: str = "cert.pem") -> bytes | None:
        """The bytes currently published under a name, or None."""
        files = self.read_files(site)
        return None if files is None else files.by_name()[name]

    def is_current(self, site: str, files: CertFiles) -> bool:
        return self.read_files(site) == files

    def _read_generation(self, site: str, sfd: int) -> CertFiles | None:
        for _ in range(_READ_RETRIES):
            name = _current(sfd)
            if name is None:
                return None
            try:
                gfd = os.open(name, _DIR, dir_fd=sfd)
                try:
                    data = {f: _read_file(gfd, f) for f in FILES}
                finally:
                    os.close(gfd)
            except FileNotFoundError:
                continue  # pruned between readlink and open: `current` names a newer one now
            except OSError as exc:
                raise PublishError(f"site={site}: cannot read the published generation "
                                   f"{self.site_dir(site) / name}: {exc.strerror or exc}") from exc
            return CertFiles(**{f.removesuffix(".pem"): d for f, d in data.items()})
        return None

    # -- writers -------------------------------------------------------------------------------------
    def check_writable(self, site: str) -> None:
        """Before asking a CA: the site's folder can be written (publish.dir exists or can be made,
        is not a symbolic link, nor is the site folder, and the filesystem takes a new file).

        Raises PublishError naming the path.
        """
        with self._open_site(site, create=True) as sfd:
            assert sfd is not None
            # Asked of the filesystem, not by writing a probe: a check changes no file's mtime.
            try:
                vfs = os.fstatvfs(sfd)
                writable = os.access(".", os.W_OK | os.X_OK, dir_fd=sfd)
            except OSError as exc:
                raise PublishError(f"site={site}: {self.site_dir(site)}: {exc.strerror or exc}") from exc
            if vfs.f_flag & os.ST_RDONLY:
                problem = "is on a read-only filesystem"
            elif not writable:
                problem = "is not writable by this user"
            elif vfs.f_bfree * vfs.f_frsize < _MIN_FREE or (vfs.f_files and not vfs.f_ffree):
                problem = "is on a full filesystem"
            else:
                return
            raise PublishError(f"site={site}: {self.site_dir(site)} {problem}; nothing was ordered")

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
        uid, gid = self._ids()
        sdir = self.site_dir(site)
        with self._open_site(site, create=True) as sfd:
            assert sfd is not None
            _flock(sfd, site, sdir)
            if self._read_generation(site, sfd) == files:
                return False
            try:
                _set_owner(sfd, 0o750 if self.own.group else 0o755, uid, gid)
                name = f"{_GEN_PREFIX}{time.time_ns()}"
                self._write_generation(sfd, name, files, uid, gid)
                _replace_symlink(sfd, "current", name)
                for fname in FILES:
                    target = f"current/{fname}"
                    if _readlink(sfd, fname) != target:
                        _replace_symlink(sfd, fname, target)
                os.fsync(sfd)
            except OSError as exc:
                raise PublishError(f"site={site}: publishing into {sdir} failed: "
                                   f"{exc.strerror or exc}") from exc
            self._prune(sfd)
        return True

    def _write_generation(self, sfd: int, name: str, files: CertFiles, uid: int, gid: int) -> None:
        """Write, fsync and rename `<name>.tmp` to `name`; on failure leave no `.tmp` folder."""
        tmp = f"{name}.tmp"
        os.mkdir(tmp, 0o700, dir_fd=sfd)
        try:
            gfd = os.open(tmp, _DIR, dir_fd=sfd)
            try:
                for fname, data in files.by_name().items():
                    mode = self.own.key_mode if fname == "privkey.pem" else self.own.cert_mode
                    _write(gfd, fname, data, mode, uid, gid)
                _set_owner(gfd, 0o750 if self.own.group else 0o755, uid, gid)
                os.fsync(gfd)
            finally:
                os.close(gfd)
            os.rename(tmp, name, src_dir_fd=sfd, dst_dir_fd=sfd)
        except OSError:
            _remove(sfd, tmp)
            raise

    def prune(self, site: str) -> None:
        """Remove unfinished generations and all but the newest `keep` finished ones."""
        with self._open_site(site, create=False) as sfd:
            if sfd is not None:
                _flock(sfd, site, self.site_dir(site))
                self._prune(sfd)

    def _prune(self, sfd: int) -> None:
        """Under the site's lock: nobody else is writing a generation, so `.tmp` ones are dead."""
        current = _current(sfd)
        with os.scandir(sfd) as it:
            gens = sorted((e.name for e in it if e.name.startswith(_GEN_PREFIX)), key=_gen_order)
        finished = [n for n in gens if not n.endswith(".tmp")]
        keep = set(finished[-self.own.keep:]) if self.own.keep > 0 else set()
        if current:
            keep.add(current)
        # A reader that resolved `current` just before a swap gets `grace` seconds to open its
        # files: a generation goes only once the one that replaced it is that old.
        horizon = time.time_ns() - int(self.grace * 1e9)
        for older, newer in zip(finished, finished[1:], strict=False):
            if _gen_order(newer)[0] > horizon:
                keep.add(older)
        for n in gens:
            if n not in keep:
                _remove(sfd, n)

    # -- descriptors -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open_site(self, site: str, create: bool) -> Iterator[int | None]:
        """A descriptor of the site's folder (None if it does not exist and create is False).

        Neither publish.dir nor the site folder may be a symbolic link.
        """
        root, sdir = self.root, self.site_dir(site)
        try:
            if create:
                root.mkdir(parents=True, exist_ok=True)
            rfd = os.open(root, _DIR)
        except FileNotFoundError:
            if create:
                raise PublishError(f"site={site}: publish.dir {root} does not exist") from None
            yield None
            return
        except OSError as exc:
            raise PublishError(f"site={site}: publish.dir {root}: {_why(root, exc)}") from exc
        try:
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(site, 0o700, dir_fd=rfd)
                sfd = os.open(site, _DIR, dir_fd=rfd)
            except FileNotFoundError:
                if create:
                    raise PublishError(f"site={site}: cannot create {sdir}") from None
                yield None
                return
            except OSError as exc:
                raise PublishError(f"site={site}: {sdir}: {_why(sdir, exc)}") from exc
        finally:
            os.close(rfd)
        try:
            yield sfd
        finally:
            os.close(sfd)  # also releases the flock

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


def _why(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return ("is a symbolic link; tlsbridge never writes through one "
                        "(remove it, or point the config at the real folder)")
        return "is not a directory"
    return exc.strerror or str(exc)


def _flock(sfd: int, site: str, sdir: Path) -> None:
    """Exclusive lock on the site folder: one publisher (publish + prune) at a time."""
    try:
        fcntl.flock(sfd, fcntl.LOCK_EX)
    except OSError as exc:
        raise PublishError(f"site={site}: cannot lock {sdir}: {exc.strerror or exc}") from exc


def _current(sfd: int) -> str | None:
    """The generation `current` names; None when there is none or it is not one of ours."""
    target = _readlink(sfd, "current")
    if target is None or "/" in target or not target.startswith(_GEN_PREFIX) or target.endswith(".tmp"):
        return None
    return target


def _readlink(dfd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dfd)
    except OSError:
        return None  # missing, or not a symbolic link


def _gen_order(name: str) -> tuple[int, str]:
    digits = name.removeprefix(_GEN_PREFIX).removesuffix(".tmp")
    return (int(digits) if digits.isdigit() else -1, name)


def _read_file(gfd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=gfd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _write(dfd: int, name: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dfd)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        write_all(fd, data)
    finally:
        os.close(fd)


def _set_owner(fd: int, mode: int, uid: int, gid: int) -> None:
    os.fchmod(fd, mode)
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)


def _replace_symlink(dfd: int, name: str, target: str) -> None:
    tmp = f".{name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dfd)
    os.symlink(target, tmp, dir_fd=dfd)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces the link, never follows it
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def _remove(dfd: int, name: str) -> None:
    """Remove a generation folder (a planted link of that name is unlinked, not followed)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dfd)
