"""`tlsbridge compose --swarm`: the stack renderer, the nginx snippets' Swarm options and the
command's checks. Docker's own loaders and a real `docker stack deploy` check the same output in
tests/integration/test_swarm_stack.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tlsbridge.cli import main
from tlsbridge.config import Site
from tlsbridge.delivery.swarm_plan import secret_name
from tlsbridge.render import nginx, stack

CONFIG = """
acme: {ca_bundle: ca.pem}
challenge: {method: standalone, http_port: 8402}
sites:
  shop:
    domains: [shop.example.com, www.shop.example.com]
  blog:
    domains: [blog.example.org]
    upstream: http://app:8080
"""


def run_swarm(tmp_path: Path, *args: str, config: str = CONFIG) -> tuple[int, dict[str, Any]]:
    (tmp_path / "ca.pem").write_text("not checked here\n")
    (tmp_path / "tlsbridge.yaml").write_text(config)
    out = tmp_path / "stack.yml"
    code = main(["-c", str(tmp_path / "tlsbridge.yaml"), "compose", "--swarm", "-o", str(out), *args])
    return code, (yaml.safe_load(out.read_text()) if out.exists() else {})


def test_the_stack_wires_secrets_configs_labels_and_the_service(tmp_path: Path) -> None:
    code, doc = run_swarm(tmp_path)
    assert code == 0
    assert doc["version"] == "3.8"
    ng, tb = doc["services"]["nginx"], doc["services"]["tlsbridge"]
    assert ng["deploy"]["labels"] == {"tlsbridge.site": "shop,blog"}
    assert "labels" not in ng  # a service label
    assert {v["type"] for v in ng["volumes"]} == {"tmpfs"}  # no host folders
    assert ng["read_only"] is True and ng["cap_drop"] == ["ALL"] and "DAC_OVERRIDE" in ng["cap_add"]
    assert ng["deploy"]["replicas"] == 2
    assert ng["deploy"]["update_config"]["order"] == "start-first"
    assert ng["deploy"]["update_config"]["failure_action"] == "rollback"
    assert [p["mode"] for p in ng["ports"]] == ["ingress", "ingress"]
    assert {s["source"]: (s["target"], s["mode"]) for s in ng["secrets"]} == {
        "shop-fullchain": ("/etc/tlsbridge/certs/shop/fullchain.pem", 0o444),
        "shop-privkey": ("/etc/tlsbridge/certs/shop/privkey.pem", 0o400),
        "blog-fullchain": ("/etc/tlsbridge/certs/blog/fullchain.pem", 0o444),
        "blog-privkey": ("/etc/tlsbridge/certs/blog/privkey.pem", 0o400)}
    # named for the stack (default: the folder's name), and the tlsbridge service knows it
    name = stack.default_stack(tmp_path.name)
    assert doc["secrets"]["shop-privkey"] == {"external": True,
                                              "name": secret_name("shop", "privkey.pem", instance=name)}
    assert doc["secrets"]["shop-privkey"]["name"] == f"{name}_tlsbridge-shop-privkey.pem"
    assert tb["labels"] == {"tlsbridge.stack": name}
    assert all(c["name"].startswith(f"{name}_tlsbridge-") for c in doc["configs"].values())
    assert {c["target"] for c in ng["configs"]} == {
        "/etc/nginx/conf.d/tlsbridge-tls.inc", "/etc/nginx/conf.d/tlsbridge-proxy.conf",
        "/etc/nginx/conf.d/tlsbridge-site-shop.conf", "/etc/nginx/conf.d/tlsbridge-site-blog.conf"}
    assert doc["configs"]["nginx-site-shop"]["file"] == "./nginx/tlsbridge-site-shop.conf"
    assert tb["deploy"]["replicas"] == 1 and tb["deploy"]["endpoint_mode"] == "dnsrr"
    assert "node.role == manager" in tb["deploy"]["placement"]["constraints"]
    assert {c["target"] for c in tb["configs"]} == {"/etc/tlsbridge/tlsbridge.yaml", "/etc/tlsbridge/ca.pem"}
    assert {v["target"] for v in tb["volumes"] if v["type"] != "tmpfs"} == {
        "/etc/letsencrypt", "/var/lib/tlsbridge/state", "/var/lib/tlsbridge/certs", "/var/run/docker.sock"}
    assert tb["read_only"] is True and tb["cap_drop"] == ["ALL"]
    assert "/tmp" in {v["target"] for v in tb["volumes"] if v["type"] == "tmpfs"}
    site = (tmp_path / "nginx" / "tlsbridge-site-shop.conf").read_text()
    assert "set $tlsbridge_acme http://tlsbridge:8402;" in site and "resolver 127.0.0.11" in site
    assert "/var/www/tlsbridge-acme" not in site


def test_the_stack_name_names_secrets_and_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_swarm(tmp_path, "--stack", "web")
    assert code == 0
    assert doc["secrets"]["blog-fullchain"]["name"] == "web_tlsbridge-blog-fullchain.pem"
    assert doc["services"]["tlsbridge"]["labels"] == {"tlsbridge.stack": "web"}
    assert "docker stack deploy -c <this file> web" in (tmp_path / "stack.yml").read_text()
    code, _ = run_swarm(tmp_path, "--stack", "Web!")
    assert code == 2 and "--stack 'Web!'" in capsys.readouterr().err


@pytest.mark.parametrize(("folder", "name"), [
    ("shop", "shop"), ("My Shop.d", "myshopd"), ("__x", "x"), ("...", "tlsbridge"), ("a" * 40, "a" * 30)])
def test_default_stack_name_from_the_folder(folder: str, name: str) -> None:
    assert stack.default_stack(folder) == name and stack.STACK_NAME.fullmatch(name)


def test_host_mode_is_global_and_stop_first(tmp_path: Path) -> None:
    code, doc = run_swarm(tmp_path, "--publish-mode", "host")
    ng = doc["services"]["nginx"]
    assert code == 0 and ng["deploy"]["mode"] == "global" and "replicas" not in ng["deploy"]
    assert ng["deploy"]["update_config"]["order"] == ng["deploy"]["rollback_config"]["order"] == "stop-first"
    assert [p["mode"] for p in ng["ports"]] == ["host", "host"]


def test_config_names_follow_the_content_and_the_output_is_stable(tmp_path: Path) -> None:
    _, first = run_swarm(tmp_path)
    text = (tmp_path / "stack.yml").read_text()
    assert run_swarm(tmp_path)[0] == 0 and (tmp_path / "stack.yml").read_text() == text
    _, changed = run_swarm(tmp_path, config=CONFIG.replace("blog.example.org", "blog.example.net"))
    assert changed["configs"]["nginx-site-blog"]["name"] != first["configs"]["nginx-site-blog"]["name"]
    assert changed["configs"]["nginx-site-shop"]["name"] == first["configs"]["nginx-site-shop"]["name"]
    assert all(len(c["name"]) <= 64 for c in changed["configs"].values())


@pytest.mark.parametrize(("config", "args", "needle"), [
    (CONFIG.replace("method: standalone", "method: webroot"), (), "challenge.method: webroot cannot work on Swarm"),
    (CONFIG, ("--socket-proxy",), "--socket-proxy is not available with --swarm"),
    (CONFIG, ("--build-context", "."), "does not build images"),
])
def test_what_cannot_work_on_swarm_exits_2_writing_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, args: tuple[str, ...], needle: str) -> None:
    code, doc = run_swarm(tmp_path, *args, config=config)
    assert code == 2 and doc == {} and not (tmp_path / "nginx").exists()
    assert needle in capsys.readouterr().err


def test_swarm_options_need_swarm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.pem").write_text("x\n")
    (tmp_path / "tlsbridge.yaml").write_text(CONFIG.replace("standalone", "webroot"))
    assert main(["-c", str(tmp_path / "tlsbridge.yaml"), "compose", "--create-secrets"]) == 2
    assert "go with --swarm" in capsys.readouterr().err


def test_dns_method_has_no_challenge_location() -> None:
    text = nginx.render_site(Site("shop", ("shop.example.com",)), nginx.NginxOptions(secrets=True, acme_proxy=""))
    assert "acme-challenge" not in text and "Swarm secrets" in text


@pytest.mark.parametrize("bad", ["ftp://x:1", "http://host:1/path", "http://", "http://a b:1"])
def test_acme_proxy_must_be_an_origin(bad: str) -> None:
    with pytest.raises(ValueError, match="acme_proxy"):
        nginx.render_site(Site("shop", ("shop.example.com",)), nginx.NginxOptions(acme_proxy=bad))


def test_acme_proxy_to_an_address_needs_no_resolver() -> None:
    text = nginx.render_site(Site("s", ("s.example.com",)), nginx.NginxOptions(acme_proxy="http://10.0.0.2:8402"))
    assert "set $tlsbridge_acme http://10.0.0.2:8402;" in text and "resolver" not in text


def test_object_names_fit_swarms_limit() -> None:
    name = stack.object_name("nginx-site-" + "x" * 64, b"body")
    assert len(name) <= 64 and name.startswith("tlsbridge-nginx-site-x")
