"""names.py: the one set of validators (site and client names, DNS names, HOST:PORT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsbridge import cli, names
from tlsbridge.errors import UsageError
from tlsbridge.sidecar.endpoint import parse_listen


@pytest.mark.parametrize("name", ["a", "shop", "a.b_c-d", "0" * 64])
def test_site_names(name: str) -> None:
    assert names.is_site_name(name) and names.is_client_name(name)


@pytest.mark.parametrize("name", ["", "Shop", "-a", ".a", "a/b", "../etc", "a b", "0" * 65, "lap\n", "a\x00",
                                  "a\t", "a\r", 3, None])
def test_site_names_refused(name: object) -> None:
    assert not names.is_site_name(name) and not names.is_client_name(name)


@pytest.mark.parametrize(("text", "want"), [
    ("Example.COM.", "example.com"), ("bücher.example", "xn--bcher-kva.example"),
    ("*.Example.com", "*.example.com"), ("localhost", "localhost"),
])
def test_dns_names(text: str, want: str) -> None:
    assert names.dns_name(text, wildcard=True) == want


@pytest.mark.parametrize(("text", "kw", "problem"), [
    ("*.example.com", {}, "'*'"),
    ("a.*.com", {"wildcard": True}, "leftmost"),
    ("10.0.0.1", {}, "IP address"),
    ("-bad-.com", {}, "not a valid domain"),
    ("a" * 64 + ".com", {}, "not a valid domain"),
    ("localhost", {"dotted": True}, "two labels"),
    ("a.com\n", {}, "control character"),
])
def test_dns_names_refused(text: str, kw: dict[str, bool], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        names.dns_name(text, **kw)


@pytest.mark.parametrize(("text", "want"), [
    ("0.0.0.0:2376", ("0.0.0.0", 2376)), ("[::]:1", ("::", 1)), ("host.example:65535", ("host.example", 65535)),
])
def test_host_port(text: str, want: tuple[str, int]) -> None:
    assert names.host_port(text) == want


@pytest.mark.parametrize("text", ["8400", ":8400", "h:", "h:0", "h:65536", "h:http", "::1:80", "h:80\n", "[x]:80"])
def test_host_port_refused(text: str) -> None:
    with pytest.raises(ValueError):
        names.host_port(text)


def test_host_names_send_ips_to_the_ip_list() -> None:
    assert names.host_name("Docker") == "docker"
    with pytest.raises(ValueError, match="give it with --ip"):
        names.host_name("10.0.0.1")
    assert names.ip_address("::0001") == "::1"
    with pytest.raises(ValueError, match="not an IP address"):
        names.ip_address("nope")


@pytest.mark.parametrize(("argv", "words"), [
    (["--client", "lap\n"], "--client: 'lap\\n': a client name"),
    (["--client", "lap\x00"], "a client name"),
    (["--hostname", "h.example\n"], "control character"),
    (["--listen", "0.0.0.0:0"], "port 0 is out of range"),
])
def test_daemon_tls_flags_with_control_characters_exit_2_and_write_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], words: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLSBRIDGE_CONFIG", raising=False)
    code = cli.main(["daemon-tls", "--out", "o", "--ip", "10.0.0.1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_run_listen_refuses_port_0() -> None:
    with pytest.raises(UsageError, match="port 0 is out of range"):
        parse_listen("127.0.0.1:0")
