"""What keeps the sidecar's pages cheap at thousands of sites: one page of the status page
under a summary, attention first; per-site metrics rendered once per snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tlsbridge.render.status_page import PER_PAGE, PageMeta, PageRow, attention, page_count, render
from tlsbridge.sidecar.metrics import Metrics

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
META = PageMeta(version="0.1.0", ready=True)


def test_attention_first_then_the_rest() -> None:
    states = [("a", "valid", 0), ("b", "due", 0), ("c", "failing", 2), ("d", "unpublished", 0),
              ("e", "placeholder", 1), ("f", "valid", 0)]
    ordered = sorted(states, key=lambda s: attention(s[1], s[2]))
    assert [s[0] for s in ordered] == ["c", "e", "d", "b", "a", "f"]


def test_one_page_of_many_with_a_summary_and_links() -> None:
    rows = [PageRow(name=f"s{i}", domains=(f"s{i}.example",), state="valid") for i in range(PER_PAGE)]
    counts = {"valid": 1995, "failing": 3, "unpublished": 2}
    assert page_count(2000, 100) == 20 and page_count(1) == 1 and page_count(0) == 1
    page = render(rows, NOW, META, counts=counts, page=2, pages=20)
    assert "<title>tlsbridge: 2000 sites, 3 failing</title>" in page
    assert page.count('<tr id="site-') == PER_PAGE
    summary = page.split('<p class="meta">')[2]
    assert summary.index("failing</span> 3") < summary.index("unpublished</span> 2") < summary.index(
        "valid</span> 1995")
    assert "page 2 of 20" in page
    for n in (1, 3, 5, 20):
        assert f'<a href="?page={n}">{n}</a>' in page
    assert "<b>2</b>" in page and '?page=10"' not in page


def test_a_small_page_has_no_summary_or_links() -> None:
    page = render([PageRow(name="one", domains=("one.example",), state="valid")], NOW, META)
    assert "?page=" not in page and "page 1 of" not in page


def test_site_series_are_rendered_once_per_snapshot() -> None:
    m = Metrics()
    at = datetime(2026, 6, 1, tzinfo=UTC)
    m.set_sites({f"s{i}": {"not_after": at + timedelta(days=i), "failures": 0} for i in range(3)})
    first = m.sites.text()
    assert m.sites.text() is first  # a scrape between passes reuses the text
    assert f'tlsbridge_certificate_not_after_seconds{{site="s2"}} {(at + timedelta(days=2)).timestamp():.10e}'\
        .split(" ")[0] in first.decode()
    m.set_sites({"s0": {"not_after": at, "failures": 1}})
    text = m.render().decode()
    assert 'tlsbridge_site_consecutive_failures{site="s0"} 1.0' in text and 's1"' not in text


def test_decoded_states_are_reused_but_handed_out_as_copies(tmp_path: Path) -> None:
    from tlsbridge.adapters.statestore import StateStore
    from tlsbridge.model import SiteState

    store = StateStore(tmp_path)
    store.save("a", SiteState(failures=1, delivered="x"))
    first = store.load_all()["a"]
    first.failures, first.delivered = 5, "y"  # SiteState is mutable: nobody may see this
    again = StateStore(tmp_path).load_all()["a"]
    assert again == SiteState(failures=1, delivered="x") and again is not first
    store.save("a", first)
    assert StateStore(tmp_path).load_some(["a", "b"]) == {"a": first}
