"""The status page: one row per site, escaped, readable without JavaScript."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from tlsbridge.render.status_page import PageMeta, PageRow, issuer_name, render

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
D = timedelta(days=1)
META = PageMeta(version="0.1.0", ready=True, last_pass=NOW - timedelta(minutes=3),
                next_check=NOW + timedelta(hours=12), docker="connected")


def row(**kw: object) -> PageRow:
    base: dict[str, object] = dict(
        name="shop", domains=("shop.example.com", "www.shop.example.com"), state="valid",
        issuer="CN=Pebble Intermediate CA 1a2b3c,O=Pebble", not_before=NOW - 30 * D,
        not_after=NOW + 60 * D, renew_at=NOW + 30 * D, last_outcome="up to date (NotDue)",
        last_success=NOW - 30 * D)
    base.update(kw)
    return PageRow(**base)  # type: ignore[arg-type]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def test_one_row_per_site_with_domains_issuer_days_next_and_outcome() -> None:
    page = render([row(), row(name="blog", domains=("blog.example.org",), state="due",
                              renew_at=NOW - D)], NOW, META)
    doc = parse(page)
    assert "script" not in doc.tags
    assert doc.tags.count("tr") == 3  # header + two sites
    text = " ".join(doc.text)
    for want in ("shop", "shop.example.com", "www.shop.example.com", "blog.example.org",
                 "Pebble Intermediate CA 1a2b3c", "60.0 of 90.0 days left", "2026-07-01 12:00 UTC",
                 "in 30.0 d", "due since 24.0 h", "up to date (NotDue)", "docker connected"):
        assert want in text, want
    # the bar: 60 of 90 days left, the renewal tick at 30 days left (1/3)
    assert 'style="width:66.7%"' in page
    assert 'class="tick" style="left:33.3%"' in page
    assert '<span class="fill due"' in page  # blog is past its renewal moment


def test_everything_from_outside_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    page = render([row(state="failing", failures=2, last_error=f"certbot said {evil} & more",
                       issuer=f'CN={evil},O="q"', last_outcome=f"failed ({evil})")], NOW, META)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&amp; more" in page
    assert "script" not in parse(page).tags


def test_missing_certificates_placeholders_and_expired() -> None:
    page = render([
        row(name="new", state="missing", issuer=None, not_before=None, not_after=None,
            renew_at=None, last_outcome=None, last_success=None),
        row(name="boot", state="placeholder", issuer="CN=boot,O=tlsbridge placeholder",
            not_before=NOW - D, not_after=NOW + 6 * D, renew_at=None),
        row(name="old", state="expired", not_before=NOW - 100 * D, not_after=NOW - 10 * D,
            renew_at=NOW - 40 * D, failures=4, next_wakeup=NOW + timedelta(minutes=90),
            wakeup_reason="Backoff", last_error="the CA could not be reached"),
    ], NOW, META)
    text = " ".join(parse(page).text)
    assert "expired 10.0 d ago" in text
    assert "retry 2026-06-01 13:30 UTC (after 4 failures)" in text
    assert "the CA could not be reached" in text
    assert 'style="width:0.0%"' in page
    assert re.search(r'id="site-new">.*?&ndash;', page)


def test_empty_config_and_not_ready() -> None:
    page = render([], NOW, PageMeta(version="0.1.0", ready=False))
    assert "No sites in the config." in page
    assert "first pass running" in page
    assert "<title>tlsbridge: 0 sites</title>" in page


def test_issuer_name_takes_the_common_name() -> None:
    assert issuer_name("CN=R11,O=Let's Encrypt,C=US") == "R11"
    assert issuer_name("O=Only Org") == "O=Only Org"


def test_a_failing_site_says_so_whatever_its_state() -> None:
    page = render([row(name="boot", state="placeholder", failures=1, last_error="rate limited")], NOW, META)
    assert '<span class="badge off">placeholder</span> <span class="badge bad">failing</span>' in page
    page = render([row(state="failing", failures=3)], NOW, META)
    assert page.count("badge bad") == 1


def test_an_undelivered_site_has_its_own_badge_and_counts_in_the_title() -> None:
    page = render([row(state="undelivered", failures=1, last_error="nginx's config test failed"),
                   row(name="blog")], NOW, META)
    assert '<span class="badge bad">undelivered</span>' in page
    assert "<title>tlsbridge: 2 sites, 1 not served yet</title>" in page
