"""tlsbridge's own memory in `state.dir/state.sqlite3`: chosen renewal moments, the ARI cache,
failures and their backoff.

SQLite (standard library) in WAL mode with synchronous=FULL: each save is one transaction, so a
crash mid-write leaves the previous state, never a torn one. Opening is lazy: a pass that decides
nothing is due and has nothing new to remember only reads. `load_all` opens and closes its own
connection; saves share one until `close()` (the reconciler closes it after every pass), so no
connection outlives a pass.

Self-healing: everything stored here can be recomputed (the renewal moment is seeded by the
certificate, ARI windows are fetched again, a failure count restarts), so a store that cannot be
read (a truncated or garbage file, "database disk image is malformed", a row that is not valid
JSON) is moved aside to `state.sqlite3.corrupt-<UTC time>` with one WARNING naming it, and the
next pass rebuilds it from certbot's lineages and the published folders. Errors that say nothing
about the file's contents (busy, read-only, permission, disk full) stay StateErrors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from tlsbridge.errors import StateError
from tlsbridge.model import AriWindow, SiteState

logger = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS site_state (site TEXT PRIMARY KEY, data TEXT NOT NULL)"
# Primary result codes that say the file could not be reached, not that its contents are bad.
_TRANSIENT = {3, 5, 6, 7, 8, 9, 13, 14, 15}  # PERM BUSY LOCKED NOMEM READONLY INTERRUPT FULL CANTOPEN PROTOCOL
_IOERR, _IOERR_SHORT_READ = 10, 522


class _Unreadable(Exception):
    """The store's contents cannot be read: set it aside."""


# (database, site) -> (digest of its row's text, the state decoded from it): a pass over
# thousands of sites decodes only the rows that changed. Callers get copies (they change states
# in place).
_DECODED: dict[tuple[str, str], tuple[bytes, SiteState]] = {}


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "state.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        try:
            st = os.stat(self.path)
            self._ident = (st.st_dev, st.st_ino)
            if fresh:
                os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            self._raise(exc, "")
        except OSError as exc:
            db.close()
            raise StateError(f"state store {self.path}: {exc}") from exc
        return db

    def _raise(self, exc: sqlite3.Error, what: str) -> NoReturn:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and ((code & 0xFF) in _TRANSIENT or (code & 0xFF == _IOERR and code != _IOERR_SHORT_READ)):
            raise StateError(f"state store {self.path}: {what}{exc}") from exc
        raise _Unreadable(str(exc)) from exc

    @contextlib.contextmanager
    def _healing(self) -> Iterator[None]:
        try:
            yield
        except _Unreadable as exc:
            self.set_aside(str(exc))

    def load_all(self) -> dict[str, SiteState]:
        """Every site's state; {} when there is no store or it was unreadable (then set aside)."""
        with self._healing():
            db = self._open(create=False)
            if db is None:
                return {}
            try:
                rows = db.execute("SELECT site, data FROM site_state").fetchall()
            except sqlite3.Error as exc:
                self._raise(exc, "")
            finally:
                db.close()
            out = {}
            for site, data in rows:
                try:
                    out[site] = self._decoded(site, data)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise _Unreadable(f"the row of site {site!r} is not readable: "
                                      f"{exc.__class__.__name__}: {exc}") from exc
            return out
        return {}

    def _decoded(self, site: str, data: str) -> SiteState:
        key = (str(self.path), site)
        digest = hashlib.blake2b(data.encode(), digest_size=16).digest()
        hit = _DECODED.get(key)
        if hit is None or hit[0] != digest:
            hit = _DECODED[key] = (digest, _decode(data))
        state = object.__new__(SiteState)  # a copy: SiteState is mutable
        state.__dict__.update(hit[1].__dict__)
        return state

    def load_some(self, sites: list[str]) -> dict[str, SiteState]:
        """The states of `sites` only (one page of the status page, out of thousands)."""
        if not sites:
            return {}
        with self._healing():
            db = self._open(create=False)
            if db is None:
                return {}
            try:
                rows = db.execute(f"SELECT site, data FROM site_state WHERE site IN "
                                  f"({','.join('?' * len(sites))})", sites).fetchall()
            except sqlite3.Error as exc:
                self._raise(exc, "")
            finally:
                db.close()
            try:
                return {site: self._decoded(site, data) for site, data in rows}
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise _Unreadable(f"a row is not readable: {exc.__class__.__name__}: {exc}") from exc
        return {}

    def get(self, site: str) -> SiteState:
        return self.load_all().get(site, SiteState())

    def save(self, site: str, state: SiteState) -> None:
        data = _encode(state)
        for attempt in (1, 2):
            try:
                if self._db is None:
                    self._db = self._open(create=True)
                assert self._db is not None
                try:
                    self._db.execute(
                        "INSERT INTO site_state (site, data) VALUES (?, ?) "
                        "ON CONFLICT(site) DO UPDATE SET data = excluded.data",
                        (site, data),
                    )
                except sqlite3.Error as exc:
                    self._raise(exc, f"cannot save site {site}: ")
                return
            except _Unreadable as exc:
                self.set_aside(str(exc))
                if attempt == 2:
                    raise StateError(f"state store {self.path}: cannot save site {site}: {exc}") from exc

    def set_aside(self, why: str) -> None:
        """Move an unreadable store (and its -wal/-shm) aside, once, and log it."""
        self.close()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if self._ident is not None and (st.st_dev, st.st_ino) != self._ident:
            return  # another process has set it aside already; this one is new
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}")
        try:
            os.rename(self.path, aside)
        except OSError as exc:
            raise StateError(f"state store {self.path} is unreadable ({why}) and cannot be moved "
                             f"aside: {exc}") from exc
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
        self._ident = None
        logger.warning("state store %s was unreadable (%s): moved it aside to %s; rebuilding it from "
                       "certbot's lineages and the published folders (renewal moments, ARI windows "
                       "and backoff are recomputed)", self.path, why, aside)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _encode(state: SiteState) -> str:
    return json.dumps(asdict(state), default=_default, sort_keys=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


_DATES = ("chosen_renewal", "next_attempt", "last_attempt", "last_success", "ari_retry_at", "retry_after")


def _decode(data: str) -> SiteState:
    raw = json.loads(data)
    extra = raw.get("extra")  # before `delivered` was a field, it was kept as extra["delivered"]
    if isinstance(extra, dict) and "delivered" not in raw:
        raw["delivered"] = extra.get("delivered")
    known = SiteState.__dataclass_fields__
    raw = {k: v for k, v in raw.items() if k in known}
    to = raw.get("delivered_to")
    raw["delivered_to"] = ({str(k): str(v) for k, v in to.items()} if isinstance(to, dict) else {})
    for key in _DATES:
        if raw.get(key):
            raw[key] = datetime.fromisoformat(raw[key])
    for key in ("chosen_for", "ari_for", "delivered"):  # fingerprints: shared with the memo's
        if isinstance(raw.get(key), str):
            raw[key] = sys.intern(raw[key])
    if raw.get("ari"):
        a = raw["ari"]
        raw["ari"] = AriWindow(
            start=datetime.fromisoformat(a["start"]),
            end=datetime.fromisoformat(a["end"]),
            retry_after=datetime.fromisoformat(a["retry_after"]),
            explanation_url=a.get("explanation_url"),
        )
    return SiteState(**raw)
