"""The sidecar's config watch: a changed config file asks for a reload, changed nginx snippets
(written by `tlsbridge compose` next to it) for a pass; nothing changed, nothing asked."""

from __future__ import annotations

import queue
from pathlib import Path

from tlsbridge.sidecar.configwatch import ConfigWatch, change, signature
from tlsbridge.sidecar.requests import Kind, Request


def test_change_is_pure_and_names_what_changed(tmp_path: Path) -> None:
    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text("sites: {}\n")
    base = signature(cfg)
    assert change(base, signature(cfg)) == []
    cfg.write_text("sites: {a: {domains: [a.example]}}\n")
    assert [r.kind for r in change(base, signature(cfg))] == [Kind.RELOAD]
    edited = signature(cfg)
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "tlsbridge-site-a.conf").write_text("server {}\n")
    assert [r.kind for r in change(edited, signature(cfg))] == [Kind.PASS]
    cfg.unlink()  # mid-rename: nothing to reload
    assert [r.kind for r in change(edited, signature(cfg))] == [Kind.PASS]


def test_the_watch_thread_enqueues_a_reload_after_an_edit(tmp_path: Path) -> None:
    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text("sites: {}\n")
    got: queue.SimpleQueue[Request] = queue.SimpleQueue()
    watch = ConfigWatch(lambda: cfg, got.put, interval=0.05)
    watch.start()
    try:
        cfg.write_text("sites: {a: {domains: [a.example]}}\n")
        first = got.get(timeout=10)
        assert first.kind is Kind.RELOAD and first.why == "config file changed"
    finally:
        watch.stop()
    assert got.empty()  # one edit, one request
