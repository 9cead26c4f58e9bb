"""deploy/tlsbridge-renew.{service,timer}: the one-shot deployment's systemd units.

Checked for content here, and by `systemd-analyze verify` (with ExecStart pointed at this
environment's tlsbridge, since /usr/local/bin/tlsbridge is not installed here); setup installs
systemd for it (the package, not a running systemd).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


def test_service_is_a_oneshot_renew() -> None:
    svc = unit("tlsbridge-renew.service")["Service"]
    assert svc["Type"] == "oneshot"
    argv = svc["ExecStart"].split()
    assert argv[0].endswith("/tlsbridge")
    assert argv[1:] == ["-c", "/etc/tlsbridge/tlsbridge.yaml", "renew"]


def test_timer_twice_daily_randomized_persistent() -> None:
    t = unit("tlsbridge-renew.timer")
    assert t["Timer"]["OnCalendar"] == "*-*-* 00,12:00:00"
    assert t["Timer"]["RandomizedDelaySec"] == "1h"
    assert t["Timer"]["Persistent"] == "true"
    assert t["Install"]["WantedBy"] == "timers.target"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup.sh installs the systemd package"
    exe = str(Path(sys.executable).with_name("tlsbridge"))
    text = (DEPLOY / "tlsbridge-renew.service").read_text()
    (tmp_path / "tlsbridge-renew.service").write_text(text.replace("/usr/local/bin/tlsbridge", exe))
    shutil.copy(DEPLOY / "tlsbridge-renew.timer", tmp_path)
    proc = subprocess.run([analyze, "verify", str(tmp_path / "tlsbridge-renew.service"),
                           str(tmp_path / "tlsbridge-renew.timer")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tlsbridge-renew" not in proc.stderr, proc.stderr
    calendar = subprocess.run([analyze, "calendar", "*-*-* 00,12:00:00"], capture_output=True,
                              text=True, timeout=60)
    assert calendar.returncode == 0, calendar.stderr
