"""adapters/files.py: the one atomic write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tlsbridge.adapters.files import write_atomic


def test_writes_replaces_and_sets_the_mode_despite_the_umask(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    old = os.umask(0o077)
    try:
        write_atomic(f, b"one", 0o644)
    finally:
        os.umask(old)
    assert f.read_bytes() == b"one" and stat.S_IMODE(f.stat().st_mode) == 0o644
    inode = f.stat().st_ino
    write_atomic(f, b"two" * 100_000, 0o600)
    assert f.read_bytes() == b"two" * 100_000 and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_symlink_at_the_path_is_replaced_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    link = tmp_path / "file"
    link.symlink_to(target)
    write_atomic(link, b"new", 0o600)
    assert target.read_bytes() == b"keep"
    assert not link.is_symlink() and link.read_bytes() == b"new"


def test_a_failure_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    f = tmp_path / "a"
    write_atomic(f, b"old", 0o644)
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores folder modes: make the rename fail instead
            os.chmod(tmp_path, 0o700)
            f.unlink()
            f.mkdir()
            (f / "x").write_bytes(b"")  # a non-empty folder cannot be replaced by a file
        with pytest.raises(OSError):
            write_atomic(f, b"new", 0o644)
    finally:
        os.chmod(tmp_path, 0o700)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert f.is_dir() or f.read_bytes() == b"old"
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "folder", b"x", 0o644)
