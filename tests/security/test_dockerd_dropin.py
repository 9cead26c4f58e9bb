"""12.4: `daemon-tls --dockerd` goes into the systemd drop-in's ExecStart line.

The attack: a value with a newline adds directives of the attacker's choosing to a file that is
installed under /etc/systemd/system (ExecStartPre= runs as root before dockerd; a second
`--config-file` swaps daemon.json for one without tlsverify). Characters systemd interprets
(`%` specifiers, `$` variables, quotes, whitespace, `;`) change the command line the same way.
Every such value is a command-line error: exit 2, one line, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsbridge import cli
from tlsbridge.render.daemon_json import render_dropin

ATTACKS = [
    "/usr/bin/dockerd\nExecStartPre=/bin/sh -c 'id > /tmp/pwned'",
    "/usr/bin/dockerd\nExecStart=/usr/bin/dockerd --config-file /tmp/open.json",
    "/usr/bin/dockerd --config-file=/tmp/open.json",
    "/usr/bin/dockerd\r\nExecStartPre=/bin/true",
    "/usr/bin/dockerd;/bin/sh",
    "/usr/bin/%h/dockerd",
    "/usr/bin/$HOME/dockerd",
    '/usr/bin/"dockerd"',
    "/usr/bin/dockerd\\",
    "/usr/bin/dockerd\tx",
    "/usr/bin/../../tmp/dockerd",
    "usr/bin/dockerd",
]


@pytest.mark.parametrize("value", ATTACKS)
def test_an_unsafe_dockerd_path_is_refused_and_nothing_is_written(
        value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLSBRIDGE_CONFIG", raising=False)
    out = tmp_path / "o"
    code = cli.main(["-q", "daemon-tls", "--out", str(out), "--ip", "10.0.0.9",
                     "--dockerd", value])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--dockerd" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ATTACKS)
def test_the_renderer_itself_refuses_it(value: str) -> None:
    with pytest.raises(ValueError):
        render_dropin(value)


@pytest.mark.parametrize("value", ["/usr/bin/dockerd", "/usr/local/bin/dockerd-rootless.sh",
                                   "/opt/docker_20.10+ds1/bin/dockerd"])
def test_plain_absolute_paths_still_work(value: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = cli.main(["-q", "daemon-tls", "--out", str(out), "--ip", "10.0.0.9", "--dockerd", value])
    assert code == 0, capsys.readouterr().err
    lines = (out / "docker.service.d/tlsbridge.conf").read_text().splitlines()
    assert [ln for ln in lines if not ln.startswith("#")] == ["[Service]", "ExecStart=", f"ExecStart={value}"]
