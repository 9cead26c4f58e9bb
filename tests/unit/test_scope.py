"""delivery.scope: a labelled container is this instance's only if it mounts its published folder."""

from __future__ import annotations

from pathlib import Path

from tlsbridge import config
from tlsbridge.delivery.scope import Scope, scope_for
from tlsbridge.doctor import ERROR, INFO, check_sites
from tlsbridge.targets import ContainerInfo, Mount, resolve

VOL = "/var/lib/docker/volumes/{}_certs/_data"


def c(cid: str, *mounts: Mount, labels: dict[str, str] | None = None) -> ContainerInfo:
    return ContainerInfo(id=cid, name=cid, state="running", labels=labels or {"tlsbridge.site": "shared"},
                         mounts=mounts)


def bind(src: str, dest: str = "/etc/tlsbridge/certs") -> Mount:
    return Mount("bind", src, dest)


def vol(project: str, dest: str = "/etc/tlsbridge/certs") -> Mount:
    return Mount("volume", VOL.format(project), dest, name=f"{project}_certs")


def test_host_mode_binds_of_the_folder_a_parent_or_a_site_folder_belong() -> None:
    s = Scope("/srv/a/certs")
    assert s.owns(c("x", bind("/srv/a/certs")))
    assert s.owns(c("x", bind("/srv/a")))  # a parent shows it
    assert s.owns(c("x", bind("/srv/a/certs/shared")))  # one site's folder
    assert not s.owns(c("x", bind("/srv/b/certs")))  # the other project's
    assert not s.owns(c("x", bind("/srv/a/certs-old")))  # a name prefix is not a parent
    assert s.owns(c("x", Mount("tmpfs", "", "/etc/tlsbridge/certs")))
    # labelled by hand, mounting nothing of another instance's: kept (doctor says what to mount)
    assert s.owns(c("x"))
    assert s.owns(c("x", bind("/etc/letsencrypt/live/shop", "/etc/ssl/live")))
    assert not s.owns(c("x", bind("/srv/b/certs", "/etc/tlsbridge/certs/shared")))


def test_sidecar_mode_the_volume_backing_our_publish_dir() -> None:
    own = ContainerInfo(id="me", name="a-tlsbridge-1", state="running",
                        labels={"com.docker.stack.namespace": "a"},
                        mounts=(vol("a", "/var/lib/tlsbridge/certs"),))
    s = scope_for(Path("/var/lib/tlsbridge/certs"), own)
    assert s.publish == VOL.format("a") and s.stack == "a"
    assert s.owns(c("x", vol("a")))
    assert not s.owns(c("y", vol("b")))
    assert s.owns_service({"com.docker.stack.namespace": "a"})
    assert not s.owns_service({"com.docker.stack.namespace": "b"})


def test_unknown_scope_filters_nothing() -> None:
    s = scope_for(Path("/nowhere"), ContainerInfo(id="me", name="me", state="running"))
    assert s.publish is None and s.owns(c("x"))


SITE = config.parse("""
publish: {dir: /srv/a/certs}
sites:
  shared: {domains: [a.example.com], reload: [{container: named}, {label: role=web}]}
""", base=Path("/")).sites["shared"]


def test_resolve_keeps_named_containers_and_ignores_other_instances_labelled_ones() -> None:
    ours, theirs = c("ours", bind("/srv/a/certs")), c("theirs", bind("/srv/b/certs"))
    named = c("named", labels={})  # the user's explicit choice: always kept
    web_b = c("web-b", bind("/srv/b/certs"), labels={"role": "web"})
    res = resolve(SITE, [ours, theirs, named, web_b], Scope("/srv/a/certs").owns)
    assert [t.name for t in res.targets] == ["named", "ours"]
    assert [t.name for t in res.ignored] == ["theirs", "web-b"]
    assert Scope("/srv/a/certs").owns(named)
    assert [t.name for t in resolve(SITE, [ours, theirs, named, web_b]).targets] == [
        "named", "ours", "theirs", "web-b"]  # no scope given: as before


def test_doctor_reports_another_instances_container_as_ignored_not_as_a_mount_to_fix() -> None:
    cfg = config.parse("""
publish: {dir: /srv/a/certs}
challenge: {webroot: /srv/a/acme}
sites:
  shared: {domains: [a.example.com]}
""", base=Path("/"))
    ours = c("ours", bind("/srv/a/certs"), bind("/srv/a/acme", "/var/www/acme"))
    theirs = c("theirs", bind("/srv/b/certs"), bind("/srv/b/acme", "/var/www/acme"))
    bare = c("bare", bind("/srv/b/conf", "/etc/nginx/conf.d"), bind("/srv/a/acme", "/var/www/acme"))
    found = check_sites(cfg, [ours, theirs, bare], None)
    lines = [f.line() for f in found]
    assert [f.level for f in found] == [ERROR, INFO], lines
    assert "ignored: it belongs to another tlsbridge (mounts /srv/b/certs at /etc/tlsbridge/certs" in lines[1]
    # a hand-labelled container mounting nothing of another's: still ours, told what to mount
    assert "container bare does not mount the published folder /srv/a/certs/shared" in lines[0]
    assert not any("theirs does not mount" in ln for ln in lines)
