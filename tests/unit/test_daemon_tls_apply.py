"""tlsbridge.daemon_tls.apply (plan + apply into a temp folder, fixed clock) and the CLI's resolution.

Real files in tmp_path, nothing mocked; fast (no dockerd: see tests/integration/test_daemon_tls.py).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsbridge import cli
from tlsbridge.daemon_tls import pki
from tlsbridge.daemon_tls.apply import (
    DaemonTlsError,
    DaemonTlsSettings,
    ensure_daemon_tls,
    server_cert_expiry,
)
from tlsbridge.daemon_tls.checks import check_host
from tlsbridge.errors import UsageError

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NAMES = pki.Names.of(["docker.example.com"], ["192.0.2.5"])


def settings(out: Path, **kw: object) -> DaemonTlsSettings:
    base = DaemonTlsSettings(out=out, names=NAMES, connect_host="docker.example.com",
                             clients=("alice",), dockerd="/usr/bin/dockerd")
    return replace(base, **kw)  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_ino,
                                             stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_first_run_writes_everything_with_safe_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = ensure_daemon_tls(settings(out), NOW)
    files = snapshot(out)
    assert sorted(files) == sorted([
        "ca.pem", "ca-key.pem", "server-cert.pem", "server-key.pem", "daemon.json",
        "docker.service.d/tlsbridge.conf", "clients/alice/ca.pem", "clients/alice/cert.pem",
        "clients/alice/key.pem"])
    for name, (_, _, mode, _) in files.items():
        assert mode == (0o600 if name.endswith("key.pem") else 0o644), name
    assert not [p for p in out.rglob(".*tmp*")]
    assert files["clients/alice/ca.pem"][3] == files["ca.pem"][3]
    data = json.loads((out / "daemon.json").read_text())
    assert data == {"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"],
                    "tls": True, "tlsverify": True, "tlscacert": str(out / "ca.pem"),
                    "tlscert": str(out / "server-cert.pem"),
                    "tlskey": str(out / "server-key.pem")}
    assert res.restart_needed and res.changed and len(res.written) == 9
    assert res.server_not_after == cert(out / "server-cert.pem").not_valid_after_utc
    assert server_cert_expiry(out) == res.server_not_after
    assert server_cert_expiry(tmp_path / "nothing") is None
    ca = cert(out / "ca.pem")
    assert pki.signed_by(cert(out / "clients/alice/cert.pem"), ca)
    # what doctor would say about the generated files: nothing
    assert check_host(out / "daemon.json", now=NOW, dropin_dir=out / "docker.service.d",
                      ufw_conf=tmp_path / "no-ufw") == []


def test_second_run_changes_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    before = snapshot(out)
    res = ensure_daemon_tls(settings(out), NOW + timedelta(days=1))
    assert snapshot(out) == before
    assert not res.changed and not res.restart_needed and res.events == []


def test_new_client_writes_only_its_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    before = snapshot(out)
    res = ensure_daemon_tls(settings(out, clients=("alice", "bob")), NOW)
    after = snapshot(out)
    assert sorted(set(after) - set(before)) == ["clients/bob/ca.pem", "clients/bob/cert.pem",
                                                "clients/bob/key.pem"]
    assert all(after[k] == v for k, v in before.items())
    assert not res.restart_needed


def test_changed_names_reissue_the_server_cert_only(tmp_path: Path) -> None:
    """Names within the CA's nameConstraints (a subdomain, one name fewer): the server only."""
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    before = snapshot(out)
    names = pki.Names.of(["docker.example.com", "d2.docker.example.com"], [])
    res = ensure_daemon_tls(settings(out, names=names), NOW)
    after = snapshot(out)
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == ["server-cert.pem", "server-key.pem"]
    assert pki.cert_names(cert(out / "server-cert.pem")) == names
    assert res.restart_needed and "names changed" in res.events[0]


def test_a_name_outside_the_constraints_remakes_the_ca_cert_with_the_same_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    before = snapshot(out)
    names = pki.Names.of(["docker.example.com", "d2.example.com"], ["192.0.2.5"])
    res = ensure_daemon_tls(settings(out, names=names), NOW)
    after = snapshot(out)
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == ["ca.pem", "clients/alice/ca.pem", "server-cert.pem", "server-key.pem"]
    assert "name constraints do not cover" in res.events[0]
    assert pki.signed_by(cert(out / "clients/alice/cert.pem"), cert(out / "ca.pem"))  # same key
    assert pki.ca_permits(cert(out / "ca.pem"), names)


def test_near_expiry_reissues_under_a_fixed_clock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    old_server, old_client = cert(out / "server-cert.pem"), cert(out / "clients/alice/cert.pem")
    ca_before = (out / "ca.pem").read_bytes()
    # 31 days before the end: nothing due yet
    res = ensure_daemon_tls(settings(out), old_server.not_valid_after_utc - timedelta(days=31))
    assert not res.changed
    later = old_server.not_valid_after_utc - timedelta(days=10)
    res = ensure_daemon_tls(settings(out), later)
    new_server, new_client = cert(out / "server-cert.pem"), cert(out / "clients/alice/cert.pem")
    assert new_server.serial_number != old_server.serial_number
    assert new_client.serial_number != old_client.serial_number
    assert new_server.not_valid_after_utc > later + timedelta(days=800)
    assert (out / "ca.pem").read_bytes() == ca_before
    assert any("server certificate re-issued (expires" in e for e in res.events)
    assert res.restart_needed


def test_ca_near_its_end_is_renewed_with_the_same_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    key_before = (out / "ca-key.pem").read_bytes()
    ca_end = cert(out / "ca.pem").not_valid_after_utc
    ensure_daemon_tls(settings(out), ca_end - pki.LEAF_LIFETIME)
    assert (out / "ca-key.pem").read_bytes() == key_before
    assert cert(out / "ca.pem").not_valid_after_utc > ca_end
    assert (out / "clients/alice/ca.pem").read_bytes() == (out / "ca.pem").read_bytes()


def test_missing_ca_key_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    (out / "ca-key.pem").unlink()
    before = snapshot(out)
    with pytest.raises(DaemonTlsError, match="ca-key.pem is missing"):
        ensure_daemon_tls(settings(out, clients=("alice", "bob")), NOW)
    assert snapshot(out) == before


def test_lost_ca_cert_is_remade_from_its_key_and_leaves_stay(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    (out / "ca.pem").unlink()
    before = snapshot(out)
    res = ensure_daemon_tls(settings(out), NOW)
    after = snapshot(out)
    assert after["server-cert.pem"] == before["server-cert.pem"]
    assert after["clients/alice/cert.pem"] == before["clients/alice/cert.pem"]
    assert "re-created the CA certificate" in res.events[0]


def test_mismatched_key_reissues_and_wrong_mode_is_fixed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out), NOW)
    os.chmod(out / "ca-key.pem", 0o644)
    (out / "server-key.pem").write_bytes(pki.make_ca(NOW).key_pem)
    res = ensure_daemon_tls(settings(out), NOW)
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600
    assert out / "ca-key.pem" in res.unchanged
    assert "key does not match" in " ".join(res.events)
    key = pki.load_key((out / "server-key.pem").read_bytes())
    assert pki.key_matches(key, cert(out / "server-cert.pem"))


def test_merge_keeps_foreign_keys(tmp_path: Path) -> None:
    src = tmp_path / "daemon.json"
    src.write_text('{"log-level": "warn", "hosts": ["fd://"], "tls": true, "tlsverify": false,'
                   ' "labels": ["a=b"]}')
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out, merge=src), NOW)
    data = json.loads((out / "daemon.json").read_text())
    assert data["log-level"] == "warn" and data["labels"] == ["a=b"]
    assert data["tlsverify"] is True and data["hosts"][1] == "tcp://0.0.0.0:2376"
    # the usual flow: merge from the file the output is installed as, again and again
    src.write_bytes((out / "daemon.json").read_bytes())
    before = snapshot(out)
    ensure_daemon_tls(settings(out, merge=src), NOW)
    assert snapshot(out) == before


def test_merge_from_a_missing_file_is_an_empty_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_daemon_tls(settings(out, merge=tmp_path / "nope.json"), NOW)
    assert json.loads((out / "daemon.json").read_text())["tlsverify"] is True


@pytest.mark.parametrize("text", ["{broken", "[1, 2]"])
def test_bad_merge_file_is_a_usage_error_and_writes_nothing(tmp_path: Path, text: str) -> None:
    src = tmp_path / "daemon.json"
    src.write_text(text)
    with pytest.raises(UsageError, match="--merge"):
        ensure_daemon_tls(settings(tmp_path / "out", merge=src), NOW)
    assert not (tmp_path / "out").exists()


def _site_files(root: Path, names: list[str]) -> tuple[Path, Path]:
    """A 'public' CA root (the trust bundle) and a published site signed by it."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    rname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Public Root X")])
    root_cert = (x509.CertificateBuilder().subject_name(rname).issuer_name(rname)
                 .public_key(root_key.public_key()).serial_number(1)
                 .not_valid_before(NOW - timedelta(days=1))
                 .not_valid_after(NOW + timedelta(days=999))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(rname).public_key(key.public_key()).serial_number(2)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    site = root / "certs" / "web"
    site.mkdir(parents=True)
    (site / "fullchain.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (site / "privkey.pem").write_bytes(pki.key_pem(key))
    bundle = root / "bundle.pem"
    bundle.write_bytes(root_cert.public_bytes(serialization.Encoding.PEM))
    return site, bundle


def test_server_cert_site_uses_the_published_certificate(tmp_path: Path) -> None:
    site, bundle = _site_files(tmp_path, ["docker.example.com"])
    out = tmp_path / "out"
    s = settings(out, names=pki.Names(), server_cert_site="web",
                 site_fullchain=site / "fullchain.pem", site_privkey=site / "privkey.pem",
                 trust_bundle=bundle)
    res = ensure_daemon_tls(s, NOW)
    data = json.loads((out / "daemon.json").read_text())
    assert data["tlscert"] == str(site / "fullchain.pem")
    assert data["tlskey"] == str(site / "privkey.pem")
    assert data["tlscacert"] == str(out / "ca.pem") and data["tlsverify"] is True
    assert not (out / "server-cert.pem").exists()
    assert (out / "clients/alice/ca.pem").read_bytes() == bundle.read_bytes()
    assert res.events == ["created a new private CA", "client alice certificate issued"]
    assert server_cert_expiry(out) == NOW + timedelta(days=90)
    res = ensure_daemon_tls(replace(s, connect_host="other.example.com"), NOW)
    assert any("other.example.com is not a name" in e for e in res.events)


def test_server_cert_site_without_a_published_certificate(tmp_path: Path) -> None:
    s = settings(tmp_path / "out", server_cert_site="web",
                 site_fullchain=tmp_path / "nope/fullchain.pem",
                 site_privkey=tmp_path / "nope/privkey.pem", trust_bundle=tmp_path / "b.pem")
    with pytest.raises(DaemonTlsError, match="renew --site web"):
        ensure_daemon_tls(s, NOW)
    assert not (tmp_path / "out").exists()


# -- the command line ------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLSBRIDGE_CONFIG", raising=False)
    return tmp_path


def test_cli_from_flags_alone(in_empty_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["-q", "daemon-tls", "--out", "o", "--hostname", "h.example",
                            "--ip", "10.0.0.9", "--client", "alice", "--listen", "[::]:2400",
                            "--dockerd", "/opt/dockerd"], capsys)
    assert code == 0
    o = in_empty_dir / "o"
    assert "export DOCKER_HOST=tcp://h.example:2400" in out
    assert f"export DOCKER_CERT_PATH={o}/clients/alice" in out
    assert "docker context create h.example --docker" in out
    assert json.loads((o / "daemon.json").read_text())["hosts"][1] == "tcp://[::]:2400"
    assert "ExecStart=/opt/dockerd\n" in (o / "docker.service.d/tlsbridge.conf").read_text()
    assert pki.cert_names(cert(o / "server-cert.pem")) == pki.Names.of(["h.example"],
                                                                        ["10.0.0.9"])
    code, out, _ = run_cli(["-q", "daemon-tls", "--out", "o", "--hostname", "h.example",
                            "--ip", "10.0.0.9", "--client", "alice", "--listen", "[::]:2400",
                            "--dockerd", "/opt/dockerd"], capsys)
    assert code == 0 and "0 file(s) written" in out


def test_dockerd_path_of_an_earlier_dropin_is_kept_without_dockerd_on_path(
        in_empty_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["-q", "daemon-tls", "--out", "o", "--ip", "10.0.0.9"]
    assert run_cli([*argv, "--dockerd", "/opt/bin/dockerd"], capsys)[0] == 0
    monkeypatch.setenv("PATH", str(in_empty_dir))  # no dockerd here, as in a container
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "0 file(s) written" in out
    dropin = (in_empty_dir / "o/docker.service.d/tlsbridge.conf").read_text()
    assert "ExecStart=/opt/bin/dockerd\n" in dropin


def test_cli_listen_ip_is_the_default_name(in_empty_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["-q", "daemon-tls", "--out", "o", "--listen", "127.0.0.1:2376"],
                           capsys)
    assert code == 0
    assert pki.cert_names(cert(in_empty_dir / "o/server-cert.pem")).ips == ("127.0.0.1",)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["daemon-tls", "--hostname", "h.example"], "no output folder"),
        (["daemon-tls", "--out", "o"], "give --hostname NAME or --ip ADDR"),
        (["daemon-tls", "--out", "o", "--ip", "1.2.3"], "--ip: '1.2.3' is not an IP address"),
        (["daemon-tls", "--out", "o", "--hostname", "a..b"], "not a valid DNS name"),
        (["daemon-tls", "--out", "o", "--hostname", "10.0.0.1"], "give it with --ip"),
        (["daemon-tls", "--out", "o", "--ip", "10.0.0.1", "--listen", "2376"], "not HOST:PORT"),
        (["daemon-tls", "--out", "o", "--ip", "10.0.0.1", "--listen", "h:99999"], "out of range"),
        (["daemon-tls", "--out", "o", "--ip", "10.0.0.1", "--client", "Bob"], "client name"),
        (["daemon-tls", "--out", "o", "--ip", "10.0.0.1", "--server-cert-site", "x"],
         "needs a config file"),
        (["-c", "missing.yaml", "daemon-tls", "--out", "o", "--ip", "10.0.0.1"],
         "file not found"),
    ],
)
def test_cli_usage_errors_exit_2_and_write_nothing(
        in_empty_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        words: str) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (in_empty_dir / "o").exists()


def test_cli_config_supplies_defaults_and_flags_override(
        in_empty_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_empty_dir / "tlsbridge.yaml").write_text(
        "sites:\n  web:\n    domains: [docker.example.com]\n"
        "daemon_tls:\n  out: tls\n  hostnames: [docker.example.com]\n  listen: 0.0.0.0:2399\n"
        "  clients: [ci]\n")
    code, out, err = run_cli(["-q", "daemon-tls"], capsys)
    assert code == 0, err
    assert (in_empty_dir / "tls/clients/ci/cert.pem").exists()
    assert "tcp://docker.example.com:2399" in out
    code, out, err = run_cli(["-q", "daemon-tls", "--client", "alice", "--listen", "1.2.3.4:1"],
                             capsys)
    assert code == 0, err
    assert (in_empty_dir / "tls/clients/alice/cert.pem").exists()
    assert "tcp://docker.example.com:1" in out
    (in_empty_dir / "tlsbridge.yaml").write_text(
        "sites:\n  web:\n    domains: [docker.example.com]\n"
        "daemon_tls:\n  out: tls\n  hostnames: ['bad name']\n")
    code, _, err = run_cli(["-q", "daemon-tls"], capsys)
    assert code == 2 and "tlsbridge.yaml: daemon_tls.hostnames[0]:" in err


def test_cli_server_cert_site(in_empty_dir: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    site, bundle = _site_files(in_empty_dir, ["docker.example.com"])
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    (in_empty_dir / "tlsbridge.yaml").write_text(
        f"publish: {{dir: {site.parent}}}\nsites:\n  web:\n    domains: [docker.example.com]\n")
    code, out, err = run_cli(["-q", "daemon-tls", "--out", "t", "--client", "a",
                              "--server-cert-site", "web"], capsys)
    assert code == 0, err
    assert "tcp://docker.example.com:2376" in out
    assert json.loads((in_empty_dir / "t/daemon.json").read_text())["tlscert"] == str(
        site / "fullchain.pem")
    code, _, err = run_cli(["-q", "daemon-tls", "--out", "t", "--server-cert-site", "nope"],
                           capsys)
    assert code == 2 and "no site named 'nope'" in err


def test_resolve_settings_from_the_config_alone(tmp_path: Path) -> None:
    """What `run` does: no flags, the config's daemon_tls section decides."""
    from tlsbridge import config
    from tlsbridge.daemon_tls.settings import resolve_settings

    cfg = config.parse("sites:\n  web:\n    domains: [docker.example.com]\n"
                       "daemon_tls:\n  out: tls\n  ips: ['2001:db8::5']\n  clients: [ci, ci]\n"
                       "  listen: '[::]:2376'\n", source="t.yaml", base=tmp_path)
    s = resolve_settings(cfg)
    assert s.out == tmp_path / "tls" and s.clients == ("ci",)
    assert s.names == pki.Names.of([], ["2001:db8::5"]) and s.connect_host == "2001:db8::5"
    assert (s.listen_host, s.listen_port) == ("::", 2376)
    res = ensure_daemon_tls(s, NOW)
    assert json.loads((s.out / "daemon.json").read_text())["hosts"][1] == "tcp://[::]:2376"
    assert res.clients[0].cert_dir == str(s.out / "clients/ci")
