"""Merging the sidecar's queued requests into one step (pure, table-driven)."""

from __future__ import annotations

import pytest

from tlsbridge.sidecar.requests import STOP, Batch, Kind, Request, Work, merge, work


def pass_(*sites: str, why: str = "") -> Request:
    return Request(Kind.PASS, frozenset(sites) if sites else None, why)


def verify(*sites: str, why: str = "") -> Request:
    return Request(Kind.VERIFY, frozenset(sites), why)


RELOAD = Request(Kind.RELOAD, None, "SIGHUP")
f = frozenset

MERGES = [
    ("one full pass", [pass_(why="start")], Batch(full_pass=True, why="start")),
    ("site passes add up", [pass_("a", why="due: a"), pass_("b", why="due: b")],
     Batch(pass_sites=f({"a", "b"}), why="due: a, due: b")),
    ("a full pass covers site passes", [pass_("a"), pass_(why="check_interval")],
     Batch(full_pass=True, pass_sites=f({"a"}), why="check_interval")),
    ("verifies add up, apart from passes", [verify("a", why="container x started"), verify("b"),
                                             pass_("a")],
     Batch(pass_sites=f({"a"}), verify_sites=f({"a", "b"}), why="container x started")),
    ("a verify without sites asks nothing", [Request(Kind.VERIFY, None)], Batch()),
    ("a reload", [RELOAD], Batch(reload_config=True, why="SIGHUP")),
    ("the same reason once, sorted", [pass_("b", why="z"), pass_("a", why="z"), RELOAD],
     Batch(reload_config=True, pass_sites=f({"a", "b"}), why="SIGHUP, z")),
    ("stop wins over everything", [pass_(), RELOAD, STOP, verify("a")], Batch(stop=True)),
    ("nothing", [], Batch()),
]


@pytest.mark.parametrize(("requests", "expected"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES])
def test_merge(requests: list[Request], expected: Batch) -> None:
    assert merge(requests) == expected


WORK = [
    ("a full pass", Batch(full_pass=True, why="start"), False,
     Work(pass_sites=None, run_pass=True, verify_sites=(), why="start")),
    ("site passes, sorted, unknown ones dropped", Batch(pass_sites=f({"c", "a", "gone"})), False,
     Work(pass_sites=("a", "c"), run_pass=True, verify_sites=(), why="")),
    ("only unknown sites: no pass", Batch(pass_sites=f({"gone"}), verify_sites=f({"gone"})), False,
     Work(pass_sites=(), run_pass=False, verify_sites=(), why="")),
    ("a changed config gets a full pass", Batch(reload_config=True, why="SIGHUP"), True,
     Work(pass_sites=None, run_pass=True, verify_sites=(), why="SIGHUP")),
    ("an unchanged config alone: nothing", Batch(reload_config=True, why="SIGHUP"), False,
     Work(pass_sites=(), run_pass=False, verify_sites=(), why="SIGHUP")),
    ("verify after the pass", Batch(full_pass=True, verify_sites=f({"b", "a"})), False,
     Work(pass_sites=None, run_pass=True, verify_sites=("a", "b"), why="")),
]


@pytest.mark.parametrize(("batch", "changed", "expected"), [w[1:] for w in WORK], ids=[w[0] for w in WORK])
def test_work(batch: Batch, changed: bool, expected: Work) -> None:
    assert work(batch, {"a", "b", "c"}, changed) == expected


def test_kinds_are_an_enum_and_stop_is_a_request() -> None:
    assert STOP.kind is Kind.STOP and STOP.sites is None
    assert {k.value for k in Kind} == {"pass", "verify", "reload", "stop", "discover"}


def test_discover_requests_merge_into_one_relist() -> None:
    batch = merge([Request(Kind.DISCOVER, None, "container a start"),
                   Request(Kind.DISCOVER, None, "container b die"), Request(Kind.PASS, frozenset({"x"}))])
    assert batch.discover and batch.pass_sites == {"x"} and not batch.full_pass
    assert batch.why == "container a start, container b die"
    assert not merge([Request(Kind.PASS)]).discover
