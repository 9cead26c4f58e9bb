"""The sidecar notices a changed config file by itself (SIGHUP still works).

A thread polls, every CONFIG_POLL seconds, the config file's content (its SHA-256; an mtime
alone misses an edit within the same second, and editors that replace the file change the
inode, which a hash does not care about) and the nginx snippets `tlsbridge compose` writes next
to it (`<config folder>/nginx/tlsbridge-*`: names, sizes, mtimes). It never touches the config:

- the config changed: a RELOAD request (the main loop loads and validates it, keeps the running
  one if it is invalid, and runs a full pass when it changed: new sites get their placeholder,
  their nginx is config-tested and reloaded, then they are issued);
- only the snippets changed (compose was run after the sidecar had already picked up the
  config): a full PASS, which delivers again what is published but not verified as served
  (a new site whose server block had not been written yet).

Reading a file that is being written may see half of it: it then fails validation and is read
again at the next poll, when the content (and so the hash) changed once more.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from tlsbridge.sidecar.requests import Kind, Request

logger = logging.getLogger(__name__)

CONFIG_POLL = 2.0  # seconds between two looks at the config file
SNIPPETS = "nginx"  # the folder `tlsbridge compose` writes snippets into, next to the config
SNIPPET_GLOB = "tlsbridge-*"

Signature = tuple[bytes | None, tuple[tuple[str, int, int], ...]]


def config_digest(path: Path) -> bytes | None:
    """SHA-256 of the file's bytes; None when it cannot be read (gone, mid-rename)."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def snippets_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of the snippets compose wrote; () without the folder."""
    try:
        files = sorted(folder.glob(SNIPPET_GLOB))
        return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files)
    except OSError:
        return ()


def signature(config: Path) -> Signature:
    return config_digest(config), snippets_state(config.parent / SNIPPETS)


def change(before: Signature, after: Signature) -> list[Request]:
    """Pure: the requests a change calls for (none when nothing changed)."""
    out = []
    if after[0] is not None and after[0] != before[0]:
        out.append(Request(Kind.RELOAD, None, "config file changed"))
    if after[1] != before[1]:
        out.append(Request(Kind.PASS, None, "nginx snippets changed"))
    return out


class ConfigWatch:
    """Polls `path()` (the config file of the running config) and enqueues what a change needs."""

    def __init__(self, path: Callable[[], Path], enqueue: Callable[[Request], None],
                 interval: float = CONFIG_POLL) -> None:
        self._path = path
        self._enqueue = enqueue
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlsbridge-config-watch", daemon=True)
        self._baseline: tuple[Path, Signature] = (Path(), (None, ()))

    def start(self) -> None:
        """Take the baseline now (an edit right after start is a change), then poll."""
        self._baseline = (path := self._path()), signature(path)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)

    def _run(self) -> None:
        path, last = self._baseline
        while not self._stop.wait(self.interval):
            try:
                now_path = self._path()
                if now_path != path:  # another file: compare it from now on
                    path, last = now_path, signature(now_path)
                    continue
                current = signature(path)
                requests = change(last, current)
                if current[0] is not None:
                    last = current
                for request in requests:
                    logger.info("run: %s (%s); %s", request.why, path,
                                "reloading it" if request.kind is Kind.RELOAD else "running a pass")
                    self._enqueue(request)
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any one look
                logger.warning("run: config watch: %s: %s", exc.__class__.__name__, exc)
