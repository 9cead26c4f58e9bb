"""doctor's pure checks: stale single-file mounts, certbot's live/, missing published folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsbridge import config
from tlsbridge.doctor import ERROR, WARNING, Finding, check_sites, covers, host_path
from tlsbridge.targets import ContainerInfo, Mount

CFG = config.parse("""
certbot: {config_dir: /etc/letsencrypt}
challenge: {method: webroot, webroot: /srv/acme}
publish: {dir: /srv/certs}
sites:
  shop:
    domains: [shop.example.com]
    reload: [{container: web}]
  blog:
    domains: [blog.example.com]
    reload: [{container: gone}, {label: role=none}]
  lonely:
    domains: [lonely.example.com]
""", base=Path("/"))


def bind(source: str, dest: str) -> Mount:
    return Mount(type="bind", source=source, destination=dest, rw=False)


def web(*mounts: Mount, state: str = "running", labels: dict[str, str] | None = None) -> ContainerInfo:
    return ContainerInfo(id="w", name="web", state=state, status="Exited (1)" if state == "exited" else "Up",
                         labels=labels or {}, mounts=mounts)


def by(findings: list[Finding], site: str) -> list[str]:
    return [f.line() for f in findings if f.site == site]


GOOD = (bind("/srv/certs", "/etc/tlsbridge/certs"), bind("/srv/acme", "/var/www/acme"))


def test_a_well_mounted_target_has_no_findings() -> None:
    assert by(check_sites(CFG, [web(*GOOD)], None), "shop") == []


def test_a_single_file_mount_goes_stale() -> None:
    found = by(check_sites(CFG, [web(bind("/srv/certs/shop/fullchain.pem", "/c.pem"), GOOD[1])], None), "shop")
    assert any(line.startswith("ERROR site=shop: container web bind-mounts the single file "
                               "/srv/certs/shop/fullchain.pem at /c.pem: it goes stale after renewal")
               and ". Fix: mount the folder /srv/certs read-only instead" in line for line in found)
    assert any("does not mount the published folder /srv/certs/shop" in line for line in found)


def test_certbot_live_dangles_and_its_whole_tree_is_a_warning() -> None:
    live = by(check_sites(CFG, [web(bind("/etc/letsencrypt/live/shop", "/certs"), *GOOD)], None), "shop")
    assert len(live) == 1 and live[0].startswith("ERROR site=shop: container web mounts certbot's "
                                                 "/etc/letsencrypt/live/shop: its files are symlinks")
    elsewhere = by(check_sites(CFG, [web(bind("/opt/stack/letsencrypt/live", "/certs"), *GOOD)], None), "shop")
    assert len(elsewhere) == 1 and "symlinks into ../archive/" in elsewhere[0]
    tree = by(check_sites(CFG, [web(bind("/etc/letsencrypt", "/le"), *GOOD)], None), "shop")
    assert len(tree) == 1 and tree[0].startswith("WARNING site=shop: container web reads certbot's tree")


def test_missing_targets_labels_and_sites_without_targets() -> None:
    found = check_sites(CFG, [web(*GOOD)], None)
    blog = by(found, "blog")
    assert blog[0].startswith("ERROR site=blog: container gone (reload[0]) does not exist")
    assert blog[1].startswith("WARNING site=blog: no container has the label role=none")
    lonely = by(found, "lonely")
    assert lonely == ["WARNING site=lonely: no containers to reload: a new certificate is served only when "
                      "something else reloads nginx. Fix: add reload: [{container: NAME}] to the site or "
                      "label the nginx container tlsbridge.site=lonely"]
    assert found[0].level == ERROR  # errors first


def test_webroot_not_mounted_and_not_running_are_warnings() -> None:
    found = by(check_sites(CFG, [web(GOOD[0], state="exited")], None), "shop")
    assert [line.split(":")[0] for line in found] == ["WARNING site=shop", "WARNING site=shop"]
    assert any("does not mount the challenge webroot /srv/acme" in line for line in found)
    assert any("container web is not running (Exited (1))" in line for line in found)


def test_in_a_sidecar_paths_are_translated_through_our_own_volume() -> None:
    own = [Mount("volume", "/var/lib/docker/volumes/certs/_data", "/srv/certs", name="certs"),
           Mount("bind", "/home/ops/acme", "/srv/acme")]
    assert host_path("/srv/certs/shop", own) == "/var/lib/docker/volumes/certs/_data/shop"
    assert host_path("/srv/certs", own) == "/var/lib/docker/volumes/certs/_data"
    assert host_path("/tmp/x", own) is None
    nginx = web(Mount("volume", "/var/lib/docker/volumes/certs/_data", "/etc/tlsbridge/certs", name="certs"),
                bind("/home/ops/acme", "/var/www/acme"))
    assert by(check_sites(CFG, [nginx], own), "shop") == []
    other = web(Mount("volume", "/var/lib/docker/volumes/other/_data", "/etc/tlsbridge/certs", name="other"),
                bind("/home/ops/acme", "/var/www/acme"))
    assert any("does not mount the published folder" in line for line in by(check_sites(CFG, [other], own), "shop"))


def test_publish_dir_only_inside_our_container_is_an_error() -> None:
    found = check_sites(CFG, [web(*GOOD)], [Mount("bind", "/home/ops/acme", "/srv/acme")])
    assert found[0].site is None and found[0].level == ERROR and "inside tlsbridge's own container" in found[0].problem


def test_covers() -> None:
    assert covers(bind("/srv", "/x"), "/srv/certs/shop")
    assert covers(bind("/srv/certs/shop", "/x"), "/srv/certs/shop")
    assert not covers(bind("/srv/certs/shopping", "/x"), "/srv/certs/shop")
    assert not covers(Mount("tmpfs", "", "/x"), "/srv/certs/shop")
    assert WARNING != ERROR


# -- the published folder, read through one generation (delivery.served_check) ------------------

def test_read_published_finds_an_emptied_incomplete_or_absent_folder(tmp_path: Path) -> None:
    from helpers import T0

    from tlsbridge.adapters.publish import Publisher
    from tlsbridge.delivery.served_check import read_published
    from tlsbridge.placeholder import make_placeholder

    pub = Publisher(tmp_path)
    assert read_published(tmp_path, "shop").never
    pub.publish("shop", make_placeholder("shop", ("shop.example.com",), T0))
    ok = read_published(tmp_path, "shop")
    assert ok.problem is None and ok.fingerprint is not None and len(ok.fingerprint) == 64
    (tmp_path / "shop" / "chain.pem").unlink()
    assert read_published(tmp_path, "shop").problem == f"the published folder {tmp_path / 'shop'} lacks chain.pem"
    for entry in (tmp_path / "shop").iterdir():
        if entry.is_dir() and not entry.is_symlink():
            for f in entry.iterdir():
                f.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    assert read_published(tmp_path, "shop").problem == f"the published folder {tmp_path / 'shop'} is empty"


def test_doctor_reports_a_dns_plugin_that_is_not_installed(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tlsbridge.cli import main

    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text(f"""
publish: {{dir: {tmp_path}/certs}}
state: {{dir: {tmp_path}/state}}
challenge: {{method: dns, dns_plugin: cloudflare, dns_credentials: {tmp_path}/missing.ini}}
sites:
  shop: {{domains: [shop.example.com]}}
""")
    assert main(["-c", str(cfg), "doctor", "--no-docker"]) == 1
    out = capsys.readouterr().out
    assert f"ERROR site=-: {cfg}: challenge.dns_credentials: {tmp_path}/missing.ini does not exist" in out, out
    (tmp_path / "missing.ini").write_text("")
    (tmp_path / "missing.ini").chmod(0o600)
    assert main(["-c", str(cfg), "doctor", "--no-docker"]) == 1
    out = capsys.readouterr().out
    assert f"ERROR site=-: {cfg}: challenge.dns_plugin: the certbot DNS plugin dns-cloudflare is not " \
        "installed" in out, out
