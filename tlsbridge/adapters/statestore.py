"""tlsbridge's own memory in `state.dir/state.sqlite3`: chosen renewal moments, the ARI cache,
failures and their backoff.

SQLite (standard library) in WAL mode with synchronous=FULL: each save is one transaction, so a
crash mid-write leaves the previous state, never a torn one. Opening is lazy: a pass that decides
nothing is due and has nothing new to remember only reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from tlsbridge.errors import StateError
from tlsbridge.model import AriWindow, SiteState

_SCHEMA = "CREATE TABLE IF NOT EXISTS site_state (site TEXT PRIMARY KEY, data TEXT NOT NULL)"


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "state.sqlite3"
        self._db: sqlite3.Connection | None = None

    def _conn(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            if create:
                os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        self._db = db
        return db

    def load_all(self) -> dict[str, SiteState]:
        db = self._conn(create=False)
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT site, data FROM site_state").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        return {site: _decode(data) for site, data in rows}

    def get(self, site: str) -> SiteState:
        return self.load_all().get(site, SiteState())

    def save(self, site: str, state: SiteState) -> None:
        db = self._conn(create=True)
        assert db is not None
        try:
            db.execute(
                "INSERT INTO site_state (site, data) VALUES (?, ?) "
                "ON CONFLICT(site) DO UPDATE SET data = excluded.data",
                (site, _encode(state)),
            )
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: cannot save site {site}: {exc}") from exc

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


_DATES = ("chosen_renewal", "next_attempt", "last_attempt", "last_success", "ari_retry_at")


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
    if raw.get("ari"):
        a = raw["ari"]
        raw["ari"] = AriWindow(
            start=datetime.fromisoformat(a["start"]),
            end=datetime.fromisoformat(a["end"]),
            retry_after=datetime.fromisoformat(a["retry_after"]),
            explanation_url=a.get("explanation_url"),
        )
    return SiteState(**raw)
