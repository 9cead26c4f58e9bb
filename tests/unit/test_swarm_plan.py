"""The pure Swarm delivery decisions (tlsbridge.delivery.swarm_plan): secret names, each service's new
secret list, what may be pruned, when the stable pair is re-created, reading a rolling update
and where to probe. The real engine runs the same code in tests/integration/test_swarm*.py."""

from __future__ import annotations

import pytest

from tlsbridge.delivery.swarm_plan import (
    NAME_MAX,
    PortInfo,
    SecretInfo,
    SecretRef,
    ServiceInfo,
    TaskInfo,
    UpdateStatus,
    converge_timeout,
    default_target,
    failed_tasks,
    of_instance,
    pick_version,
    plan_refs,
    probe_endpoints,
    prunable,
    secret_labels,
    secret_name,
    serves_site,
    stable_todo,
    stalled,
    time_key,
    update_done,
    update_hazard,
    uses_site,
)

FP1, FP2, FP3 = "1" * 64, "2" * 64, "3" * 64
FC, PK = "fullchain.pem", "privkey.pem"


def sec(sid: str, site: str, file: str, fp: str, *, stable: bool = False, created: str = "") -> SecretInfo:
    return SecretInfo(sid, secret_name(site, file, None if stable else fp), site, file, fp, stable, created)


def ref(s: SecretInfo, target: str | None = None, mode: int | None = None) -> SecretRef:
    return SecretRef(s.id, s.name, target or default_target(s.site, s.file),
                     mode=mode if mode is not None else (0o400 if s.file == PK else 0o444))


def svc(*refs: SecretRef, previous: tuple[SecretRef, ...] = (), label: str = "shop", **kw: object) -> ServiceInfo:
    return ServiceInfo("svc1", "web_nginx", 7, {"tlsbridge.site": label}, tuple(refs), previous, **kw)  # type: ignore[arg-type]


V1 = {FC: sec("a1", "shop", FC, FP1), PK: sec("b1", "shop", PK, FP1)}
V2 = {FC: sec("a2", "shop", FC, FP2), PK: sec("b2", "shop", PK, FP2)}
S1 = {FC: sec("s1", "shop", FC, FP1, stable=True), PK: sec("t1", "shop", PK, FP1, stable=True)}
OTHER = sec("o1", "blog", FC, FP3)
FOREIGN = SecretRef("x1", "db-password", "/run/secrets/db")
KNOWN = {s.id: s for s in [*V1.values(), *V2.values(), *S1.values(), OTHER]}


# -- names -------------------------------------------------------------------------------------------
def test_names_are_readable_and_versioned() -> None:
    assert secret_name("shop", FC) == "tlsbridge-shop-fullchain.pem"
    assert secret_name("shop", PK, FP2) == "tlsbridge-shop-222222222222-privkey.pem"


@pytest.mark.parametrize("site", ["a" * 64, "long.site-name_" * 4, "x" * 27, "x" * 28])
def test_long_site_names_stay_within_swarms_limit_and_distinct(site: str) -> None:
    names = {secret_name(site, f, fp) for f in (FC, PK) for fp in (None, FP1, FP2)}
    assert len(names) == 6 and all(len(n) <= NAME_MAX for n in names)
    assert secret_name(site, FC, FP1) != secret_name(site + "b", FC, FP1)
    stacked = {secret_name(site, f, fp, stack) for f in (FC, PK) for fp in (None, FP1, FP2)
               for stack in ("web", "w" * 30)}
    assert len(stacked) == 12 and all(len(n) <= NAME_MAX for n in stacked) and not names & stacked


def test_each_stack_names_and_labels_its_own_secrets() -> None:
    """Two stacks with the same site name never share a secret (docs/swarm.md "The secrets")."""
    assert secret_name("shop", FC, instance="a") == "a_tlsbridge-shop-fullchain.pem"
    assert secret_name("shop", PK, FP2, "b") == "b_tlsbridge-shop-222222222222-privkey.pem"
    assert secret_labels("shop", FC, FP1, stable=True, instance="a")["tlsbridge.stack"] == "a"
    assert "tlsbridge.stack" not in secret_labels("shop", FC, FP1, stable=True)
    a = SecretInfo("a", "a_...", "shop", FC, FP1, True, instance="a")
    b = SecretInfo("b", "b_...", "shop", FC, FP2, True, instance="b")
    old = SecretInfo("o", "tlsbridge-shop-fullchain.pem", "shop", FC, FP3, True)
    assert of_instance([a, b, old], "a") == [a]
    assert of_instance([a, b, old], None) == [old]  # unnamed (old stack files, the host)
    assert stable_todo("shop", of_instance([a, b, old], "b"), [], FP2) == {PK: None}


# -- planning a service's secret list ----------------------------------------------------------------
def test_a_new_version_replaces_the_sites_secrets_in_place_keeping_targets_modes_and_others() -> None:
    service = svc(FOREIGN, ref(V1[FC], "/run/secrets/shop.crt", 0o440), ref(V1[PK]),
                  SecretRef(OTHER.id, OTHER.name, "/etc/x/blog.pem"))
    refs = plan_refs(service, "shop", KNOWN, V2)
    assert refs == (FOREIGN, SecretRef("a2", V2[FC].name, "/run/secrets/shop.crt", mode=0o440),
                    SecretRef("b2", V2[PK].name, default_target("shop", PK), mode=0o400),
                    SecretRef(OTHER.id, OTHER.name, "/etc/x/blog.pem"))


def test_a_service_without_the_site_gets_both_files_at_the_default_targets() -> None:
    refs = plan_refs(svc(FOREIGN), "shop", KNOWN, S1)
    assert refs == (FOREIGN, SecretRef("s1", S1[FC].name, "/etc/tlsbridge/certs/shop/fullchain.pem", mode=0o444),
                    SecretRef("t1", S1[PK].name, "/etc/tlsbridge/certs/shop/privkey.pem", mode=0o400))
    assert not uses_site(svc(FOREIGN), "shop", KNOWN) and uses_site(svc(ref(S1[FC])), "shop", KNOWN)


@pytest.mark.parametrize("current", [V2, {FC: sec("s2", "shop", FC, FP2, stable=True),
                                          PK: sec("t2", "shop", PK, FP2, stable=True)}])
def test_a_service_on_the_wanted_certificate_is_not_updated_whichever_pair_holds_it(
        current: dict[str, SecretInfo]) -> None:
    known = {**KNOWN, **{s.id: s for s in current.values()}}
    assert plan_refs(svc(ref(current[FC]), ref(current[PK])), "shop", known, V2) is None


def test_half_a_pair_or_a_mixed_pair_is_updated() -> None:
    assert plan_refs(svc(ref(V2[FC])), "shop", KNOWN, V2) is not None
    assert plan_refs(svc(ref(V2[FC]), ref(V1[PK])), "shop", KNOWN, V2) is not None


def test_changes_of_two_sites_combine_into_one_list() -> None:
    blog = {FC: sec("c3", "blog", FC, FP3), PK: sec("d3", "blog", PK, FP3)}
    known = {**KNOWN, **{s.id: s for s in blog.values()}}
    service = svc(ref(V1[FC]), ref(V1[PK]), label="shop,blog")
    first = plan_refs(service, "shop", known, V2)
    both = plan_refs(service, "blog", known, blog, refs=first)
    assert both is not None and {r.secret_id for r in both} == {"a2", "b2", "c3", "d3"}


def test_site_labels_are_service_labels_listing_the_site() -> None:
    assert serves_site(svc(label="blog, shop"), "shop")
    assert not serves_site(svc(label="shopping"), "shop")
    assert not serves_site(ServiceInfo("x", "x", 1), "shop")


def test_pick_version_prefers_a_versioned_pair_to_the_stable_one() -> None:
    s2 = {FC: sec("s2", "shop", FC, FP2, stable=True), PK: sec("t2", "shop", PK, FP2, stable=True)}
    assert pick_version([*s2.values(), *V2.values()], "shop", FP2) == V2
    assert pick_version(list(s2.values()), "shop", FP2) == s2
    assert pick_version(list(V2.values()), "blog", FP2) == {}


# -- pruning and the stable pair ----------------------------------------------------------------------
def test_prune_keeps_current_used_rollback_targets_and_the_stable_pair() -> None:
    v3 = {FC: sec("a3", "shop", FC, FP3), PK: sec("b3", "shop", PK, FP3)}
    secrets = [*V1.values(), *V2.values(), *v3.values(), *S1.values(), OTHER]
    # Runs on v3, would roll back to v2: v1 goes, the stable pair and the other site stay.
    service = svc(ref(v3[FC]), ref(v3[PK]), previous=(ref(V2[FC]), ref(V2[PK])))
    assert [s.id for s in prunable("shop", secrets, [service], FP3)] == ["a1", "b1"]
    # Used by some other service: kept.
    other = ServiceInfo("svc2", "legacy", 1, {}, (ref(V1[FC]),))
    assert [s.id for s in prunable("shop", secrets, [service, other], FP3)] == ["b1"]


def test_stable_pair_is_recreated_only_when_no_service_runs_on_it() -> None:
    secrets = [*S1.values(), *V2.values()]
    assert stable_todo("shop", secrets, [svc(ref(V2[FC]), ref(V2[PK]))], FP2) == {FC: S1[FC], PK: S1[PK]}
    on_stable = svc(ref(S1[FC]), ref(S1[PK]))
    assert stable_todo("shop", secrets, [on_stable], FP2) == {}
    # ... a rollback target does not hold it back (Swarm only protects secrets in use)
    rolled = svc(ref(V2[FC]), ref(V2[PK]), previous=(ref(S1[FC]), ref(S1[PK])))
    assert stable_todo("shop", secrets, [rolled], FP2) == {FC: S1[FC], PK: S1[PK]}
    assert stable_todo("shop", secrets, [], FP1) == {}
    assert stable_todo("shop", list(V2.values()), [], FP2) == {FC: None, PK: None}


# -- rolling updates ------------------------------------------------------------------------------------
OLD = UpdateStatus("completed", "2026-05-01T10:00:00.5Z", "update completed")


@pytest.mark.parametrize(("now", "expected"), [
    (OLD, None),  # our update has not started: the old status must not count
    (UpdateStatus(), None),
    (UpdateStatus("updating", "2026-05-01T11:00:00Z", ""), None),
    (UpdateStatus("rollback_started", "2026-05-01T11:00:00Z", ""), None),
    (UpdateStatus("completed", "2026-05-01T11:00:00Z", ""), "completed"),
    (UpdateStatus("rollback_completed", "2026-05-01T11:00:00Z", ""), "rolled back"),
    (UpdateStatus("rollback_paused", "2026-05-01T11:00:00Z", ""), "rolled back"),
    (UpdateStatus("paused", "2026-05-01T11:00:00Z", ""), "paused"),
])
def test_update_done(now: UpdateStatus, expected: str | None) -> None:
    assert update_done(now, OLD) == expected


def test_first_update_of_a_service_counts_from_no_status() -> None:
    assert update_done(UpdateStatus("completed", "2026-05-01T11:00:00Z", ""), UpdateStatus()) == "completed"


def test_engine_times_sort_in_time_order_whatever_go_trimmed() -> None:
    assert time_key("2026-05-01T10:00:00.6096328Z") < time_key("2026-05-01T10:00:00.60963281Z")
    assert time_key("2026-05-01T10:00:00Z") < time_key("2026-05-01T10:00:00.000000001Z")
    assert time_key("") < time_key("2026-05-01T10:00:00Z")


def task(tid: str, state: str, *, desired: str = "running", err: str = "", at: str = "",
         node: str = "n1", addrs: dict[str, str] | None = None) -> TaskInfo:
    return TaskInfo(tid, node, desired, state, err=err, timestamp=at, addresses=addrs or {})


def test_failed_tasks_since_the_update_started() -> None:
    tasks = [task("old", "failed", at="2026-05-01T09:00:00Z", desired="shutdown"),
             task("new", "failed", at="2026-05-01T11:00:01.5Z", err="task: non-zero exit (1)"),
             task("ok", "running", at="2026-05-01T11:00:02Z")]
    assert [t.id for t in failed_tasks(tasks, "2026-05-01T11:00:00Z")] == ["new"]


def test_a_task_no_node_can_take_stalls_the_update_after_a_while() -> None:
    stuck = [task("p", "pending", err="no suitable node (host-mode port already in use on 1 node)")]
    assert stalled(stuck, 3.0) is None
    assert "host-mode port already in use" in (stalled(stuck, 11.0) or "")
    assert stalled([task("p", "pending", desired="shutdown", err="no suitable node")], 60) is None


def test_global_host_ports_start_first_can_never_finish() -> None:
    host = (PortInfo(443, 443, "host"),)
    assert update_hazard(svc(mode="global", order="start-first", ports=host)) is not None
    assert update_hazard(svc(mode="global", order="stop-first", ports=host)) is None
    assert update_hazard(svc(mode="global", order="start-first", ports=(PortInfo(443, 443, "ingress"),))) is None


def test_converge_timeout_grows_with_tasks_and_monitor() -> None:
    assert converge_timeout(svc(monitor=5.0), 1) == 60.0
    assert converge_timeout(svc(monitor=10.0), 10) == 270.0
    assert converge_timeout(svc(monitor=60.0), 100) == 900.0


# -- verification ---------------------------------------------------------------------------------
TASKS = [task("t1aaaaaaaaaaaa", "running", node="n1", addrs={"web_default": "10.0.1.5"}),
         task("t2bbbbbbbbbbbb", "running", node="n2", addrs={"web_default": "10.0.1.6"}),
         task("t3cccccccccccc", "shutdown", desired="shutdown", node="n1", addrs={"web_default": "10.0.1.4"})]
NODES = {"n1": "192.0.2.1", "n2": "192.0.2.2"}


def test_in_the_stack_each_running_task_is_probed_directly() -> None:
    where = probe_endpoints(svc(ports=(PortInfo(443, 443, "ingress"),)), TASKS, NODES, "192.0.2.1",
                            frozenset({"web_default"}))
    assert [(e.host, e.port) for e in where] == [("10.0.1.5", 443), ("10.0.1.6", 443)]  # type: ignore[union-attr]


def test_on_the_host_published_ports_are_probed() -> None:
    ingress = probe_endpoints(svc(ports=(PortInfo(80, 80, "ingress"), PortInfo(443, 8443, "ingress"))),
                              TASKS, NODES, "192.0.2.1", None)
    assert [(e.host, e.port) for e in ingress] == [("192.0.2.1", 8443)]  # type: ignore[union-attr]
    host = probe_endpoints(svc(ports=(PortInfo(443, 443, "host"),)), TASKS, NODES, "192.0.2.1", None)
    assert [(e.host, e.port) for e in host] == [("192.0.2.1", 443), ("192.0.2.2", 443)]  # type: ignore[union-attr]
    http = probe_endpoints(svc(ports=(PortInfo(80, 8080, "host"),)), TASKS, NODES, "192.0.2.1", None, port=80)
    assert [(e.host, e.port) for e in http] == [("192.0.2.1", 8080), ("192.0.2.2", 8080)]  # type: ignore[union-attr]


def test_unreachable_services_say_so() -> None:
    where = probe_endpoints(svc(), TASKS, NODES, "192.0.2.1", frozenset({"other"}))
    assert isinstance(where, str) and "publishes no port for 443" in where
