"""The state store heals itself: an unreadable file or row is set aside, never a dead end."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tlsbridge.adapters.statestore import StateStore
from tlsbridge.model import SiteState

T = datetime(2026, 5, 1, tzinfo=UTC)


def _filled(tmp_path: Path) -> StateStore:
    with StateStore(tmp_path) as store:
        for i in range(50):
            store.save(f"s{i}", SiteState(failures=i, next_attempt=T, last_error="x" * 200))
    return StateStore(tmp_path)


def _aside(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir()
                  if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm")))


def test_round_trip_and_no_connection_left_open(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    assert store.get("s7").failures == 7 and store.get("s7").next_attempt == T
    assert store._db is None  # load_all closes what it opened
    store.save("x", SiteState())
    store.close()
    assert store._db is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_an_unreadable_file_is_set_aside_with_one_warning(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _filled(tmp_path)
    db = tmp_path / "state.sqlite3"
    if damage == "truncate":
        os.truncate(db, db.stat().st_size // 2)
    elif damage == "garbage":
        db.write_bytes(b"not a database\n" * 400)
    else:
        with db.open("r+b") as fh:
            fh.seek(100)
            fh.write(b"\xff" * 60)
    with caplog.at_level(logging.WARNING):
        assert store.load_all() == {}
    aside = _aside(tmp_path)
    assert len(aside) == 1 and aside[0].startswith("state.sqlite3.corrupt-")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and aside[0] in warnings[0]
    store.save("s1", SiteState(failures=1))  # rebuilt: a fresh store takes saves again
    assert StateStore(tmp_path).get("s1").failures == 1


def test_a_bad_json_row_sets_the_file_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _filled(tmp_path)
    db = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)
    db.execute("UPDATE site_state SET data = '{not json' WHERE site = 's3'")
    db.close()
    with caplog.at_level(logging.WARNING):
        assert store.load_all() == {}
    assert "'s3'" in caplog.text and "JSONDecodeError" in caplog.text
    assert len(_aside(tmp_path)) == 1
    assert StateStore(tmp_path).load_all() == {}


def test_saving_into_a_garbage_file_sets_it_aside_then_saves(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").write_bytes(os.urandom(8192))
    store = StateStore(tmp_path)
    store.save("a", SiteState(failures=2))
    store.close()
    assert StateStore(tmp_path).get("a").failures == 2
    assert len(_aside(tmp_path)) == 1


def test_a_store_already_replaced_by_another_process_is_not_set_aside_again(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    store.load_all()  # remembers which file it opened
    (tmp_path / "state.sqlite3").rename(tmp_path / "state.sqlite3.corrupt-other")
    StateStore(tmp_path).save("new", SiteState(failures=5))
    store.set_aside("seen broken earlier")
    assert StateStore(tmp_path).get("new").failures == 5
