"""Parsed certificates remembered by file identity (what keeps an idle sidecar parser-free).

The memo gets a counting parser: the tests count parses instead of spying on an import.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import cert_files

from tlsbridge.adapters.certmemo import CertMemo
from tlsbridge.certinfo import parse_pem
from tlsbridge.model import ObservedCert


class CountingParser:
    def __init__(self) -> None:
        self.parsed: list[bytes] = []

    def __call__(self, pem: bytes) -> ObservedCert:
        self.parsed.append(pem)
        return parse_pem(pem)


def memo_counting() -> tuple[CertMemo, CountingParser]:
    parser = CountingParser()
    return CertMemo(parse=parser), parser


def write(path: Path, data: bytes) -> None:
    """Replace `path` the way certbot and the publisher do: a new file, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_parsed_once_per_file_and_again_when_the_file_is_replaced(tmp_path: Path) -> None:
    memo, parser = memo_counting()
    path = tmp_path / "cert.pem"
    first = cert_files(("a.example",)).cert
    write(path, first)
    got = memo.read_cert(path)
    assert got == parse_pem(first) and memo.dirty
    assert parser.parsed == [first]
    assert memo.read_cert(path) is got  # same file: no read, no parse
    assert parser.parsed == [first]

    second = cert_files(("b.example",)).cert
    write(path, second)
    assert memo.read_cert(path) == parse_pem(second)
    assert parser.parsed == [first, second]


def test_the_default_parser_is_certinfos(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    write(path, cert_files(("a.example",)).cert)
    assert CertMemo().read_cert(path) == parse_pem(path.read_bytes())


def test_missing_and_broken_files(tmp_path: Path) -> None:
    memo, parser = memo_counting()
    assert memo.read_cert(tmp_path / "nope.pem") is None
    assert memo.read_cert(tmp_path / "nope" / "cert.pem") is None
    assert parser.parsed == []
    (tmp_path / "bad.pem").write_bytes(b"not a certificate")
    with pytest.raises(ValueError):
        memo.read_cert(tmp_path / "bad.pem")


def test_saved_and_loaded_without_parsing(tmp_path: Path) -> None:
    path, gone = tmp_path / "cert.pem", tmp_path / "gone.pem"
    write(path, cert_files(("a.example", "www.a.example")).cert)
    write(gone, cert_files(("g.example",)).cert)
    memo = CertMemo()
    want = memo.read_cert(path)
    memo.read_cert(gone)
    gone.unlink()
    store = tmp_path / "state" / "certs-memo.json"
    memo.save(store)
    assert not memo.dirty
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert str(gone) not in store.read_text()  # vanished files are forgotten

    fresh, parser = memo_counting()
    fresh.load(store)
    assert fresh.read_cert(path) == want
    assert parser.parsed == [] and not fresh.dirty


def test_a_corrupt_memo_file_is_ignored(tmp_path: Path) -> None:
    store = tmp_path / "certs-memo.json"
    for text in ("{", '{"version": 99, "certs": {}}', '{"version": 1, "certs": {"x": {"key": 1}}}'):
        store.write_text(text)
        memo = CertMemo()
        memo.load(store)
        assert memo.read_cert(tmp_path / "x") is None


def test_refusing_parse_raises_on_a_miss_in_that_thread_only(tmp_path: Path) -> None:
    import threading

    from tlsbridge.adapters.certmemo import ParseRefused

    known, new = tmp_path / "known.pem", tmp_path / "new.pem"
    write(known, cert_files(("k.example",)).cert)
    write(new, cert_files(("n.example",)).cert)
    memo = CertMemo()
    want = memo.read_cert(known)
    other: list[object] = []
    with memo.refusing_parse():
        assert memo.read_cert(known) is want  # known: answered from the memo
        assert memo.read_cert(tmp_path / "absent.pem") is None
        with pytest.raises(ParseRefused):
            memo.read_cert(new)
        t = threading.Thread(target=lambda: other.append(memo.read_cert(new)))  # e.g. the status page
        t.start()
        t.join()
    assert other == [parse_pem(new.read_bytes())]
    assert memo.read_cert(new) == other[0]


def test_loaded_again_replaces_what_another_process_parsed(tmp_path: Path) -> None:
    path, file = tmp_path / "cert.pem", tmp_path / "memo.json"
    write(path, cert_files(("a.example",)).cert)
    parent = CertMemo()
    parent.load(file)
    old = parent.read_cert(path)
    write(path, cert_files(("b.example",)).cert)  # e.g. a child process issued and published
    child = CertMemo()
    new = child.read_cert(path)
    child.save(file)
    parent.load(file)  # once per process: nothing changes
    assert parent._memo[str(path)][1] == old
    parent.load(file, again=True)
    with parent.refusing_parse():
        assert parent.read_cert(path) == new and new != old


def test_a_certificate_in_two_files_is_one_object_after_loading(tmp_path: Path) -> None:
    pem = cert_files(("a.example",)).cert
    live, published, file = tmp_path / "live.pem", tmp_path / "pub.pem", tmp_path / "memo.json"
    write(live, pem)
    write(published, pem)
    first = CertMemo()
    first.read_cert(live)
    first.read_cert(published)
    first.save(file)
    again = CertMemo()
    again.load(file)
    with again.refusing_parse():
        assert again.read_cert(live) is again.read_cert(published)
        assert again.read_cert(live) == parse_pem(pem)
