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
    pub = Publisher(tmp_path, Ownership(keep=2), grace=0)
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


def test_a_symlink_at_the_site_folder_is_never_followed(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "certs", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir(mode=0o700)
    (root / "ex").symlink_to(elsewhere)
    pub = Publisher(root, Ownership(group=str(os.getgid())))
    with pytest.raises(PublishError, match=r"ex: is a symbolic link") as err:
        pub.publish("ex", cert_files())
    assert str(root / "ex") in str(err.value)
    with pytest.raises(PublishError, match="symbolic link"):
        pub.check_writable("ex")
    with pytest.raises(PublishError, match="symbolic link"):
        pub.read("ex")
    assert list(elsewhere.iterdir()) == []
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700


def test_a_symlinked_publish_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "certs").symlink_to(tmp_path / "real")
    with pytest.raises(PublishError, match="publish.dir .* symbolic link"):
        Publisher(tmp_path / "certs").publish("ex", cert_files())
    assert list((tmp_path / "real").iterdir()) == []


def test_planted_links_inside_the_site_folder_are_replaced_not_followed(tmp_path: Path) -> None:
    pub = Publisher(tmp_path / "certs")
    target = tmp_path / "victim"
    target.mkdir()
    (target / "keep").write_bytes(b"x")
    site = tmp_path / "certs" / "ex"
    site.mkdir(parents=True)
    (site / "current").symlink_to(target)
    (site / "privkey.pem").symlink_to(target / "keep")
    (site / ".gen-5.tmp").symlink_to(target)
    files = cert_files()
    assert pub.read("ex") is None  # a `current` that is not ours counts as nothing published
    assert pub.publish("ex", files)
    assert pub.read_files("ex") == files
    assert (target / "keep").read_bytes() == b"x" and sorted(p.name for p in target.iterdir()) == ["keep"]
    assert not (site / ".gen-5.tmp").exists() and not (site / ".gen-5.tmp").is_symlink()


def test_a_failed_write_leaves_no_tmp_generation_and_the_old_one_intact(tmp_path: Path) -> None:
    """A file-size limit makes write(2) fail like a full disk (EFBIG instead of ENOSPC)."""
    old = cert_files()
    Publisher(tmp_path).publish("ex", old)
    script = textwrap.dedent("""
        import resource, signal, sys
        sys.path.insert(0, sys.argv[2])
        from pathlib import Path
        from helpers import cert_files
        from tlsbridge.adapters.publish import Publisher
        from tlsbridge.errors import PublishError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
        try:
            Publisher(Path(sys.argv[1])).publish("ex", cert_files())
        except PublishError as exc:
            print(exc)
            sys.exit(1)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "publishing into" in proc.stdout
    assert Publisher(tmp_path).read_files("ex") == old
    assert not [p for p in (tmp_path / "ex").iterdir() if p.name.endswith(".tmp")]


_RACER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from helpers import cert_files
    from tlsbridge.adapters.publish import Publisher
    pub = Publisher(Path(sys.argv[1]))
    batch = [cert_files() for _ in range(4)]
    for i in range(int(sys.argv[3])):
        pub.publish("ex", batch[i % len(batch)])
""")


def test_concurrent_publishers_never_fail_nor_expose_a_missing_generation(tmp_path: Path) -> None:
    Publisher(tmp_path).publish("ex", cert_files())
    helpers_dir = str(Path(__file__).parent)
    site = tmp_path / "ex"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), helpers_dir, "40"],
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    reads = 0
    while any(p.poll() is None for p in procs):
        before = os.readlink(site / "current")
        there = (site / before).is_dir()
        assert there or os.readlink(site / "current") != before, "current names a pruned generation"
        files = Publisher(tmp_path).read_files("ex")
        assert files is not None and key_matches_cert(files.privkey, files.cert)
        reads += 1
    for p in procs:
        assert p.wait() == 0, p.stderr.read() if p.stderr else ""
    assert reads > 0
    assert not [p for p in site.iterdir() if p.name.endswith(".tmp")]
    Publisher(tmp_path, grace=0).prune("ex")
    assert len([p for p in site.iterdir() if p.name.startswith(".gen-")]) == 2
