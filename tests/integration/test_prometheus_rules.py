"""deploy/prometheus/tlsbridge-rules.yaml: valid for Prometheus (`promtool check rules`), each
alert fires when it should and stays quiet on a healthy sidecar (`promtool test rules` with
tlsbridge-rules.test.yaml), and every tlsbridge_* name it uses is one the sidecar exports.

promtool comes from Debian 12's `prometheus` package, unpacked into tools/prometheus by
scripts/setup.sh (no service installed or started).
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime

from servers import PROJECT_ROOT

from tlsbridge.sidecar.metrics import Metrics

RULES_DIR = PROJECT_ROOT / "deploy" / "prometheus"
PROMTOOL = PROJECT_ROOT / "tools" / "prometheus" / "usr" / "bin" / "promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=60)


def test_promtool_checks_the_rules() -> None:
    proc = promtool("check", "rules", "tlsbridge-rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = promtool("test", "rules", "tlsbridge-rules.test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_metric_the_rules_use_is_exported() -> None:
    m = Metrics()
    now = datetime.now(UTC)
    m.set_sites({"s": {"not_before": now, "not_after": now, "renewal": now, "last_success": now,
                       "next_wakeup": now, "failures": 0}})
    m.verify_failures.labels("s").inc()
    m.last_pass.set(1)
    exported = set(re.findall(r"^# TYPE (\w+) ", m.render().decode(), re.MULTILINE))
    exported |= {f"{name}_total" for name in exported}  # counters are exposed with _total
    used = set(re.findall(r"\btlsbridge_\w+", (RULES_DIR / "tlsbridge-rules.yaml").read_text()))
    assert used and used <= exported, used - exported
