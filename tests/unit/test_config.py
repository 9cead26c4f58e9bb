from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from tlsbridge import config
from tlsbridge.errors import ConfigError

BASE = "sites:\n  ex:\n    domains: [example.com]\n"


def test_defaults_follow_the_spec() -> None:
    cfg = config.parse(BASE)
    assert cfg.acme.directory == config.DIRECTORY_ALIASES["letsencrypt"]
    assert cfg.acme.key_type == "ecdsa"
    assert cfg.certbot.config_dir == Path("/etc/letsencrypt")
    assert cfg.challenge.method == "webroot"
    assert cfg.publish.dir == Path("/var/lib/tlsbridge/certs")
    assert cfg.publish.key_mode == 0o600
    assert cfg.renewal.before_expiry is None
    assert cfg.renewal.check_interval == timedelta(hours=12)
    assert cfg.docker.host is None
    assert cfg.sites["ex"].domains == ("example.com",)


def test_example_config_is_valid() -> None:
    cfg = config.load(Path(__file__).parents[2] / "config.example.yaml")
    assert cfg.sites


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("publish: {dir: certs}\n" + BASE)
    assert config.load(f).publish.dir == tmp_path / "certs"


def test_domains_are_normalised_to_a_labels() -> None:
    cfg = config.parse("sites:\n  ex:\n    domains: [Example.COM., bücher.example]\n")
    assert cfg.sites["ex"].domains == ("example.com", "xn--bcher-kva.example")


def test_environment_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_HMAC", "s3cret")
    cfg = config.parse("acme:\n  eab: {kid: k1, hmac_key: '${TB_HMAC}'}\n" + BASE)
    assert cfg.acme.eab is not None and cfg.acme.eab.hmac_key == "s3cret"
    assert "s3cret" not in repr(cfg.acme)


def test_wildcard_with_dns_method() -> None:
    cfg = config.parse("challenge: {method: dns, dns_plugin: rfc2136}\n"
                       "sites:\n  w:\n    domains: ['*.example.com', example.com]\n")
    assert cfg.sites["w"].domains == ("*.example.com", "example.com")


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [
        ("foo: 1\n", "foo", "unknown key"),
        ("acme: {emial: a@b.c}\n", "acme.emial", "unknown key"),
        ("acme: [1, 2]\n", "acme", "expected a mapping"),
        ("acme: {key_type: dsa}\n", "acme.key_type", "not one of"),
        ("acme: {directory: ftp://x}\n", "acme.directory", "URL"),
        ("acme: {email: nope}\n", "acme.email", "not an e-mail"),
        ("acme: {ca_bundle: /nonexistent.pem}\n", "acme.ca_bundle", "not a readable file"),
        ("acme: {eab: {kid: k}}\n", "acme.eab.hmac_key", "required"),
        ("acme: {eab: {kid: k, hmac_key: '${TB_UNSET_VAR}'}}\n", "acme.eab.hmac_key", "TB_UNSET_VAR is not set"),
        ("challenge: {method: carrier-pigeon}\n", "challenge.method", "not one of"),
        ("challenge: {http_port: 70000}\n", "challenge.http_port", "out of range"),
        ("challenge: {http_port: '80'}\n", "challenge.http_port", "expected an integer"),
        ("challenge: {method: dns}\n", "challenge.dns_plugin", "required"),
        ("publish: {key_mode: '0644'}\n", "publish.key_mode", "world-readable"),
        ("publish: {cert_mode: 'rw'}\n", "publish.cert_mode", "octal"),
        ("renewal: {before_expiry: 3x}\n", "renewal.before_expiry", "not a duration"),
        ("renewal: {check_interval: 10s}\n", "renewal.check_interval", "at least 1m"),
        ("docker: {host: 'localhost:2375'}\n", "docker.host", "tcp://"),
        ("sites: [a, b]\n", "sites", "mapping"),
        ("sites:\n  '../etc':\n    domains: [a.com]\n", "sites['../etc']", "never a path"),
        ("sites:\n  Ex:\n    domains: [a.com]\n", "sites['Ex']", "lowercase"),
        ("sites:\n  a: {}\n", "sites.a.domains", "required"),
        ("sites:\n  a: {domains: []}\n", "sites.a.domains", "at least one"),
        ("sites:\n  a: {domains: a.com}\n", "sites.a.domains", "expected a list"),
        ("sites:\n  a: {domains: [localhost]}\n", "sites.a.domains[0]", "two labels"),
        ("sites:\n  a: {domains: ['-bad-.com']}\n", "sites.a.domains[0]", "not a valid domain"),
        ("sites:\n  a: {domains: ['x' ]}\n", "sites.a.domains[0]", "two labels"),
        ("sites:\n  a: {domains: ['" + "a" * 64 + ".com']}\n", "sites.a.domains[0]", "not a valid domain"),
        ("sites:\n  a: {domains: ['10.0.0.1']}\n", "sites.a.domains[0]", "IP addresses"),
        ("sites:\n  a: {domains: ['*.a.com']}\n", "sites.a.domains[0]", "wildcard needs challenge.method dns"),
        ("sites:\n  a: {domains: ['a.*.com']}\n", "sites.a.domains[0]", "leftmost"),
        ("sites:\n  a: {domains: [a.com, A.com]}\n", "sites.a.domains[1]", "listed twice"),
        ("sites:\n  a: {domains: [a.com]}\n  b: {domains: [a.com]}\n", "sites.b.domains[0]", "already a domain of site a"),
        ("sites:\n  a: {domains: [a.com], reload: [{container: x, label: y=z}]}\n", "sites.a.reload[0]", "exactly one"),
        ("sites:\n  a: {domains: [a.com], reload: [{label: novalue}]}\n", "sites.a.reload[0].label", "KEY=VALUE"),
        ("sites:\n  a: {domains: [a.com], verify: 'host'}\n", "sites.a.verify", "HOST:PORT"),
        ("sites:\n  a: {domains: [a.com], upstream: 'app:8080'}\n", "sites.a.upstream", "http(s)://"),
        ("sites:\n  a: {domains: [a.com], hsts: 'yes'}\n", "sites.a.hsts", "true or false"),
        ("daemon_tls: {ips: [1.2.3.4]}\n", "daemon_tls.out", "required"),
        ("daemon_tls: {out: /x, ips: [nope]}\n", "daemon_tls.ips[0]", "not an IP"),
        ("sites:\n  a: {domains: [a.com]}\ndaemon_tls: {out: /x, server_cert_site: b}\n",
         "daemon_tls.server_cert_site", "no site named"),
        ("acme: {directory: [1\n", "line 2, column 1", "broken YAML"),
        # strict: values that parse but are wrong
        ("renewal: {jitter: -3600}\n", "renewal.jitter", "negative"),
        ("renewal: {check_interval: 99999999999999w}\n", "renewal.check_interval", "too long"),
        ("renewal: {jitter: 100000000000000000000}\n", "renewal.jitter", "too long"),
        ("certbot: {timeout: 9999999999999999999999d}\n", "certbot.timeout", "too long"),
        ("publish: {cert_mode: 0644}\n", "publish.cert_mode", "quoted strings, like '0640'"),
        ("publish: {key_mode: 600}\n", "publish.key_mode", "quoted strings"),
        ("publish: {owner: no-such-user-tb}\n", "publish.owner", "no user named 'no-such-user-tb'"),
        ("publish: {group: no-such-group-tb}\n", "publish.group", "no group named"),
        ("docker: {timeout: 0s}\n", "docker.timeout", "at least 1s"),
        ("sites:\n  a: {domains: [1.5]}\n", "sites.a.domains[0]", "expected a string, got a number"),
        ("sites:\n  a: {domains: [a.com, 7]}\n", "sites.a.domains[1]", "expected a string, got an integer"),
        ("sites:\n  a:\n    domains: [" + ", ".join(f"n{i}.example.com" for i in range(101)) + "]\n",
         "sites.a.domains", "101 names: a certificate holds at most 100"),
        ("sites:\n  a: {domains: [a.com]}\nsites:\n  b: {domains: [b.com]}\n", "line 3",
         "duplicate key 'sites' (first at line 1"),
        ("publish:\n  keep: 2\n  dir: /x\n  keep: 3\n", "line 4", "duplicate key 'keep' (first at line 2"),
        ("sites:\n  \"evil\\n\": {domains: [a.com]}\n", "sites['evil\\n']", "lowercase"),
        ("sites:\n  a: {domains: [\"a.com\\n\"]}\n", "sites.a.domains[0]", "control character"),
        ("acme: {directory: \"https://ca.test/dir\\n\"}\n", "acme.directory", "control character"),
        ("docker: {host: \"tcp://h:2376\\t\"}\n", "docker.host", "control character"),
        ("sites:\n  a: {domains: [a.com], upstream: \"http://app\\r\"}\n", "sites.a.upstream", "control character"),
        ("daemon_tls: {out: /x, clients: [\"lap\\n\"]}\n", "daemon_tls.clients[0]", "control character"),
        ("daemon_tls: {out: /x, clients: [\"lap/x\"]}\n", "daemon_tls.clients[0]", "client name"),
        ("daemon_tls: {out: /x, hostnames: [1.5]}\n", "daemon_tls.hostnames[0]", "expected a string"),
        ("daemon_tls: {out: /x, hostnames: ['10.0.0.1']}\n", "daemon_tls.hostnames[0]", "--ip"),
        ("daemon_tls: {out: /x, listen: '0.0.0.0:0'}\n", "daemon_tls.listen", "out of range"),
    ],
)
def test_errors_name_the_file_the_key_and_the_problem(text: str, path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(text, source="conf.yaml")
    message = str(info.value)
    assert message.startswith(f"conf.yaml: {path}: "), message
    assert problem in message
    assert "\n" not in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path)  # a directory


def test_secrets_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_SECRET", "hunter2hunter2")
    with pytest.raises(ConfigError) as info:
        config.parse("acme: {email: '${TB_SECRET}'}\n")
    assert "hunter2" not in str(info.value)


def test_a_known_owner_and_group_by_name_or_number() -> None:
    cfg = config.parse("publish: {owner: root, group: '0', cert_mode: '0640'}\n" + BASE)
    assert (cfg.publish.owner, cfg.publish.group, cfg.publish.cert_mode) == ("root", "0", 0o640)


def test_yaml_merge_keys_are_not_duplicates() -> None:
    cfg = config.parse("sites:\n  a: &s {domains: [a.com], hsts: true}\n  b:\n    <<: *s\n    domains: [b.com]\n")
    assert cfg.sites["b"].domains == ("b.com",) and cfg.sites["b"].hsts


def test_a_publish_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "certs").write_text("")
    with pytest.raises(ConfigError, match=r"publish.dir: .*exists and is not a folder"):
        config.parse("publish: {dir: certs}\n" + BASE, base=tmp_path)


def test_special_files_are_refused_without_being_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "conf.yaml"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    with pytest.raises(ConfigError, match=r"cannot read: a FIFO, not a regular file") as info:
        config.load(fifo)
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match=r"cannot read: a character device"):
        config.load(Path("/dev/zero"))


def test_a_config_through_a_symlink_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(BASE)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert config.load(tmp_path / "link.yaml").sites
