"""`tlsbridge systemd -o DIR`: units for the running installation, accepted by
`systemd-analyze verify`, in step with deploy/tlsbridge-renew.{service,timer}; exit 2 with one
line and nothing written on bad input."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tlsbridge.cli import main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXE = str(Path(sys.executable).parent / "tlsbridge")
CONFIG = "publish: {dir: ./certs}\nstate: {dir: ./state}\nsites: {}\n"


def sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_units_for_this_install_that_systemd_accepts(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "tlsbridge.yaml").write_text(CONFIG)
    out = tmp_path / "units"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative -c becomes absolute in the unit
    code = main(["-c", "etc/tlsbridge.yaml", "systemd", "-o", "units"])
    assert code == 0
    assert listing(out) == ["tlsbridge-renew.service", "tlsbridge-renew.timer"]
    svc = sections((out / "tlsbridge-renew.service").read_text())["Service"]
    assert svc["ExecStart"].split() == [EXE, "-c", str(tmp_path / "etc" / "tlsbridge.yaml"), "renew"]
    rw = svc["ReadWritePaths"].split()
    assert "-/etc/letsencrypt" in rw and f"-{tmp_path}/etc/certs" in rw and f"-{tmp_path}/etc/state" in rw
    assert oct((out / "tlsbridge-renew.service").stat().st_mode & 0o777) == "0o644"

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup.sh installs the systemd package"
    proc = subprocess.run([analyze, "verify", str(out / "tlsbridge-renew.service"),
                           str(out / "tlsbridge-renew.timer")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tlsbridge-renew" not in proc.stderr, proc.stderr


def test_same_units_as_the_deploy_templates(tmp_path: Path) -> None:
    """Apart from ExecStart and ReadWritePaths, the generated units say what deploy/ says."""
    (tmp_path / "tlsbridge.yaml").write_text(CONFIG)
    assert main(["-c", str(tmp_path / "tlsbridge.yaml"), "systemd", "-o", str(tmp_path)]) == 0
    for name in ("tlsbridge-renew.service", "tlsbridge-renew.timer"):
        got, want = sections((tmp_path / name).read_text()), sections((DEPLOY / name).read_text())
        assert got.sections() == want.sections()
        for section in want.sections():
            g, w = dict(got[section]), dict(want[section])
            for key in ("ExecStart", "ReadWritePaths"):
                g.pop(key, None), w.pop(key, None)
            assert g == w, section


@pytest.mark.parametrize(("args", "config", "message"), [
    (["-o", "{tmp}/nope"], CONFIG, "folder does not exist"),
    (["-o", "{tmp}/tlsbridge.yaml"], CONFIG, "not a folder"),
    (["-o", "{tmp}"], CONFIG.replace("./state", "'./my state'"), "state.dir"),
    (["-o", "{tmp}"], "sites: {bad name: {domains: [a.example.com]}}\n", "sites"),
    (["-o", "{tmp}"], None, "tlsbridge.yaml"),
    ([], CONFIG, "-o"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], config: str | None,
        message: str) -> None:
    if config is not None:
        (tmp_path / "tlsbridge.yaml").write_text(config)
    before = listing(tmp_path)
    argv = ["-c", str(tmp_path / "tlsbridge.yaml"), "systemd", *(a.format(tmp=tmp_path) for a in args)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a missing required option
        code = int(str(exc.code))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert len(err) == 1 or err[0].startswith("usage:")
    assert listing(tmp_path) == before


def test_a_config_path_systemd_would_misread_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "100%"
    folder.mkdir()
    (folder / "tlsbridge.yaml").write_text(CONFIG.replace("./", "/var/lib/x/"))
    assert main(["-c", str(folder / "tlsbridge.yaml"), "systemd", "-o", str(tmp_path)]) == 2
    assert "not a plain absolute path" in capsys.readouterr().err
    assert listing(tmp_path) == ["100%"]
