"""Parsed certificates remembered by file identity: a pass that finds nothing changed parses
nothing.

A certificate file is known by its path and the identity of the file it resolves to (device,
inode, size, mtime in ns). certbot and the publisher never rewrite a certificate in place: they
write new files and swap links, so the same identity means the same bytes; a different one is
read and parsed again. One memo per process, made by the caller and handed to whatever reads
certificates (wiring.build_ports); it is also kept in `<state.dir>/certs-memo.json`, so a new
process with nothing changed does not even load the X.509 parser (`cryptography`, ~8 MiB of
resident memory, and ~40 us per certificate).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from tlsbridge.adapters.files import write_atomic
from tlsbridge.certinfo import parse_pem
from tlsbridge.model import ObservedCert

_Key = tuple[int, int, int, int]
VERSION = 1


class ParseRefused(Exception):  # noqa: N818 - not an error: a signal to the caller
    """read_cert() met a certificate it has not parsed while parsing is refused
    (`refusing_parse`): the sidecar then has the pass done by a short-lived child
    (sidecar/worker.py)."""


def memo_file(state_dir: Path) -> Path:
    """Where a config's memo is kept between processes."""
    return state_dir / "certs-memo.json"


class CertMemo:
    def __init__(self, parse: Callable[[bytes], ObservedCert] = parse_pem) -> None:
        """`parse`: PEM bytes -> ObservedCert, raising ValueError (certinfo.parse_pem, which
        imports `cryptography` only when first called)."""
        self._parse = parse
        self._memo: dict[str, tuple[_Key, ObservedCert]] = {}
        self._lock = threading.Lock()
        self._loaded: set[Path] = set()
        self._refusing: int | None = None  # the thread in which a miss raises ParseRefused
        self.dirty = False

    def read_cert(self, path: Path | str) -> ObservedCert | None:
        """The certificate in `path` (PEM; the first one), or None if there is no such file.
        Parsed only when the file is new or was replaced since it was last parsed.

        Raises ValueError for a file that holds no certificate (from the parser), OSError when
        the file cannot be read.
        """
        try:
            st = os.stat(path)  # follows the links to the file itself
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            hit = self._memo.get(str(path))
            if hit is not None and hit[0] == key:
                return hit[1]
            with open(path, "rb") as fh:
                pem = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if self._refusing == threading.get_ident():
            raise ParseRefused(str(path))
        # If the file was swapped between stat() and the read, the key stored is the old one:
        # the next call sees a different identity and parses again. Never a stale answer.
        cert = self._parse(pem)
        with self._lock:
            self._memo[str(path)] = (key, cert)
            self.dirty = True
        return cert

    @contextlib.contextmanager
    def refusing_parse(self) -> Iterator[None]:
        """In this thread, a certificate not yet parsed raises ParseRefused instead of loading the
        X.509 parser (the long-lived sidecar keeps `cryptography` out of its memory)."""
        self._refusing = threading.get_ident()
        try:
            yield
        finally:
            self._refusing = None

    # -- persistence (the sidecar) ----------------------------------------------------------------
    def load(self, file: Path, *, again: bool = False) -> None:
        """Add what `file` remembers (once per process, unless `again`: then its entries replace
        the ones held, as after another process parsed and saved); a missing or unreadable file
        is ignored."""
        if file in self._loaded and not again:
            return
        self._loaded.add(file)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                return
            # A lineage's cert.pem and its published copy hold the same certificate: one object
            # (half the memory of a 2,000-site memo).
            same: dict[str, ObservedCert] = {}
            entries = {p: (tuple(e["key"]), _decode(e["cert"], same)) for p, e in data["certs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        with self._lock:
            for p, (key, cert) in entries.items():
                if again:
                    self._memo[p] = (key, cert)
                else:
                    self._memo.setdefault(p, (key, cert))

    def save(self, file: Path) -> None:
        """Write the memo atomically if it changed (entries of files that vanished are dropped)."""
        with self._lock:
            if not self.dirty:
                return
            live = {p: v for p, v in self._memo.items() if os.path.exists(p)}
            self._memo, self.dirty = live, False
        doc = {"version": VERSION,
               "certs": {p: {"key": list(key), "cert": _encode(cert)} for p, (key, cert) in live.items()}}
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(file, json.dumps(doc, separators=(",", ":")).encode("utf-8"), 0o600)
        except OSError:
            self.dirty = True  # try again after the next pass


def _encode(c: ObservedCert) -> dict[str, Any]:
    return {"serial": str(c.serial), "not_before": c.not_before.isoformat(),
            "not_after": c.not_after.isoformat(), "domains": list(c.domains), "key_type": c.key_type,
            "issuer": c.issuer, "fingerprint": c.fingerprint, "placeholder": c.placeholder,
            "ari_cert_id": c.ari_cert_id}


def _decode(d: dict[str, Any], same: dict[str, ObservedCert]) -> ObservedCert:
    known = same.get(d["fingerprint"])
    if known is not None and _encode(known) == d:
        return known
    cert = ObservedCert(serial=int(d["serial"]), not_before=datetime.fromisoformat(d["not_before"]),
                        not_after=datetime.fromisoformat(d["not_after"]),
                        domains=tuple(d["domains"]), key_type=str(d["key_type"]),
                        issuer=str(d["issuer"]), fingerprint=sys.intern(str(d["fingerprint"])),
                        placeholder=bool(d["placeholder"]), ari_cert_id=d.get("ari_cert_id"))
    same[cert.fingerprint] = cert
    return cert

