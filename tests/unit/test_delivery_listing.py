"""delivery.listing: one container listing per issuing pass, each warning logged once."""

from __future__ import annotations

from tlsbridge.delivery.listing import MAX_AGE, Listing


def test_a_listing_serves_only_its_own_sites_and_only_while_young() -> None:
    got = Listing([], frozenset({"a", "b"}), at=100.0)
    assert got.covers(["a"], now=101.0) and got.covers(["a", "b"], now=101.0)
    assert not got.covers(["a", "c"], now=101.0)  # a site the pre-check did not list for
    assert not got.covers(["a"], now=100.0 + MAX_AGE)  # from an earlier pass
    assert not got.covers(["a"], now=99.0)
    assert got.young(now=101.0) and not got.young(now=100.0 + MAX_AGE)


def test_each_message_once_per_site() -> None:
    got = Listing([], frozenset({"a"}))
    assert got.first_time("a", "no container has the label x=y (reload[0])")
    assert not got.first_time("a", "no container has the label x=y (reload[0])")
    assert got.first_time("b", "no container has the label x=y (reload[0])")
