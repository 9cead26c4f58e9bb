"""Atomic publication: real files, real renames, real SIGKILLs mid-write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import cert_files

from tlsbridge.adapters.publish import FILES, Ownership, Publisher
from tlsbridge.certinfo import key_matches_cert
from tlsbridge.errors import PublishError


def test_publish_writes_real_files_with_modes(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    files = cert_files()
    assert pub.publish("ex", files) is True
    site = tmp_path / "ex"
    for name, data in files.by_name().items():
        assert (site / name).read_bytes() == data
        real = (site / name).resolve()
        assert real.parent.parent == site.resolve(), "no link leaves the site's folder"
        assert not os.path.isabs(os.readlink(site / name))
    assert stat.S_IMODE((site / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((site / "cert.pem").stat().st_mode) == 0o644


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    files = cert_files()
    pub.publish("ex", files)
    gen = os.readlink(tmp_path / "ex" / "current")
    assert pub.publish("ex", files) is False
    assert os.readlink(tmp_path / "ex" / "current") == gen


def test_old_generations_are_pruned(tmp_path: Path) -> None:
    pub = Publisher(tmp_path, Ownership(keep=2))
    for _ in range(5):
        pub.publish("ex", cert_files())
    gens = [p for p in (tmp_path / "ex").iterdir() if p.name.startswith(".gen-")]
    assert len(gens) == 2


def test_mismatched_key_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    good = cert_files()
    pub.publish("ex", good)
    bad = cert_files()
    from dataclasses import replace

    with pytest.raises(PublishError, match="does not match"):
        pub.publish("ex", replace(bad, privkey=good.privkey))
    assert pub.is_current("ex", good)


def test_group_and_modes_for_a_non_root_nginx(tmp_path: Path) -> None:
    pub = Publisher(tmp_path, Ownership(group=str(os.getgid()), key_mode=0o640))
    pub.publish("ex", cert_files())
    key = tmp_path / "ex" / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    assert key.stat().st_gid == os.getgid()


def test_leftovers_of_an_interrupted_write_are_ignored_and_pruned(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    files = cert_files()
    pub.publish("ex", files)
    junk = tmp_path / "ex" / ".gen-1.tmp"
    junk.mkdir()
    (junk / "fullchain.pem").write_bytes(b"half")
    assert pub.is_current("ex", files)
    pub.publish("ex", cert_files())
    assert not junk.exists()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from helpers import cert_files
    from tlsbridge.adapters.publish import Publisher
    pub = Publisher(Path(sys.argv[1]))
    batch = [cert_files() for _ in range(8)]
    print("ready", flush=True)
    i = 0
    while True:
        pub.publish("ex", batch[i % len(batch)])
        i += 1
""")


def _consistent(site: Path) -> bool:
    """What the folder shows at one instant: `current` resolved once, then the files it holds.

    (Separate opens of the public names may straddle a swap, like any reader of any atomically
    replaced set of files; each name alone always resolves to a complete generation.)
    """
    for _ in range(5):
        gen = site / os.readlink(site / "current")
        try:
            fullchain = (gen / "fullchain.pem").read_bytes()
            cert = (gen / "cert.pem").read_bytes()
            key = (gen / "privkey.pem").read_bytes()
            break
        except FileNotFoundError:  # that generation was pruned while we read: look again
            continue
    return fullchain.startswith(cert) and key_matches_cert(key, cert) and all(
        os.readlink(site / name) == f"current/{name}" for name in FILES)


def test_killed_mid_publication_always_leaves_a_matching_pair(tmp_path: Path) -> None:
    """SIGKILL a process that publishes in a loop, at many moments; after each kill, and while
    it runs, the four names resolve to one matching key and certificate."""
    Publisher(tmp_path).publish("ex", cert_files())
    helpers_dir = str(Path(__file__).parent)
    site = tmp_path / "ex"
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), helpers_dir],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 0.02 + round_ * 0.013
        while time.monotonic() < deadline:
            assert _consistent(site)  # a reader racing the writer
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _consistent(site)
    names = {p.name for p in site.iterdir()}
    assert set(FILES) <= names and "current" in names
