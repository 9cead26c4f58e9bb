"""tlsbridge.render.daemon_json: daemon.json merge, the systemd drop-in, client instructions."""

from __future__ import annotations

import csv
import inspect
import json
import shlex

import pytest

from tlsbridge.render import daemon_json as r

TLS = {"ca": "/etc/docker/tls/ca.pem", "cert": "/etc/docker/tls/server-cert.pem",
       "key": "/etc/docker/tls/server-key.pem"}
HOSTS = r.hosts("/var/run/docker.sock", "0.0.0.0", 2376)


def test_hosts_are_the_socket_and_the_tcp_listener() -> None:
    assert HOSTS == ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"]
    assert r.hosts("/run/d.sock", "::", 2376) == ["unix:///run/d.sock", "tcp://[::]:2376"]


def test_fresh_daemon_json_verifies_clients() -> None:
    data = r.render_daemon_json(None, hosts=HOSTS, **TLS)
    assert data == {"hosts": HOSTS, "tls": True, "tlsverify": True,
                    "tlscacert": TLS["ca"], "tlscert": TLS["cert"], "tlskey": TLS["key"]}


def test_merge_keeps_foreign_keys_and_replaces_the_owned_ones() -> None:
    existing = {"log-level": "warn", "hosts": ["fd://", "tcp://0.0.0.0:2375"], "tls": True,
                "tlsverify": False, "tlscacert": "/le/chain.pem", "registry-mirrors": ["https://m"],
                "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}
    data = r.render_daemon_json(existing, hosts=HOSTS, **TLS)
    for key in ("log-level", "registry-mirrors", "default-address-pools"):
        assert data[key] == existing[key]
    assert list(data)[:3] == ["log-level", "registry-mirrors", "default-address-pools"]
    assert data["hosts"] == HOSTS and data["tlsverify"] is True and data["tls"] is True
    assert data["tlscacert"] == TLS["ca"]
    assert existing["tlsverify"] is False  # the input is not modified


def test_rendering_is_deterministic_and_a_fixed_point() -> None:
    once = r.render_daemon_json({"debug": True}, hosts=HOSTS, **TLS)
    twice = r.render_daemon_json(once, hosts=HOSTS, **TLS)
    assert r.daemon_json_text(once) == r.daemon_json_text(twice)
    assert json.loads(r.daemon_json_text(once)) == once
    assert r.daemon_json_text(once).endswith("}\n")


def test_relative_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        r.render_daemon_json(None, hosts=HOSTS, ca="ca.pem", cert=TLS["cert"], key=TLS["key"])


def test_no_parameter_can_turn_client_verification_off() -> None:
    params = set(inspect.signature(r.render_daemon_json).parameters)
    assert params == {"existing", "hosts", "ca", "cert", "key"}
    data = r.render_daemon_json({"tlsverify": False, "tls": False}, hosts=HOSTS, **TLS)
    assert data["tlsverify"] is True


def test_dropin_clears_exec_start_and_has_no_h() -> None:
    text = r.render_dropin("/usr/sbin/dockerd")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ["[Service]", "ExecStart=", "ExecStart=/usr/sbin/dockerd"]
    assert "systemctl daemon-reload && systemctl restart docker" in text


@pytest.mark.parametrize(("host", "name"), [("docker.example.com", "docker.example.com"),
                                            ("2001:db8::1", "2001-db8-1"), ("::", "tlsbridge")])
def test_context_name(host: str, name: str) -> None:
    assert r.context_name(host) == name


def test_context_command_quotes_csv_and_shell() -> None:
    cmd = r.context_command("h", "tcp://h:2376", ca="/a,b/ca.pem", cert="/it's/cert.pem",
                            key="/k.pem")
    argv = shlex.split(cmd)
    assert argv[:4] == ["docker", "context", "create", "h"]
    assert argv[4] == "--docker"
    assert next(csv.reader([argv[5]])) == ["host=tcp://h:2376", "ca=/a,b/ca.pem",
                                           "cert=/it's/cert.pem", "key=/k.pem"]


def test_client_instructions() -> None:
    text = r.client_instructions(r.ClientInfo("alice", "/etc/docker/tls/clients/alice"),
                                 host="2001:db8::1", port=2376)
    assert "export DOCKER_HOST=tcp://[2001:db8::1]:2376" in text
    assert "export DOCKER_TLS_VERIFY=1" in text
    assert "export DOCKER_CERT_PATH=/etc/docker/tls/clients/alice" in text
    assert ("docker context create 2001-db8-1 --docker 'host=tcp://[2001:db8::1]:2376,"
            "ca=/etc/docker/tls/clients/alice/ca.pem,cert=/etc/docker/tls/clients/alice/cert.pem,"
            "key=/etc/docker/tls/clients/alice/key.pem'") in text


def test_apply_instructions() -> None:
    text = r.apply_instructions(daemon_json="/srv/t/daemon.json",
                                dropin="/srv/t/docker.service.d/tlsbridge.conf")
    assert "install -m 0644 /srv/t/daemon.json /etc/docker/daemon.json" in text
    assert ("install -D -m 0644 /srv/t/docker.service.d/tlsbridge.conf "
            "/etc/systemd/system/docker.service.d/tlsbridge.conf") in text
    assert text.rstrip().endswith("systemctl daemon-reload && systemctl restart docker")
    assert "--merge" not in text
    unmerged = r.apply_instructions(daemon_json="/srv/t/daemon.json", dropin="/d", merged=False)
    assert "re-run with --merge /etc/docker/daemon.json" in unmerged
    same = r.apply_instructions(daemon_json="/etc/docker/daemon.json", dropin="/x.conf")
    assert "/etc/docker/daemon.json" not in same
